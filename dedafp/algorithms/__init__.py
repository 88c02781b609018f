"""Outer loops computing mean-field equilibria, behind one interface (:class:`Algorithm`) and a registry.

``dedafp`` (DEDA-FP, :mod:`~dedafp.algorithms.fictitious_play`) and the paper's baselines ``algo1``
and ``algo2`` (:mod:`~dedafp.algorithms.baselines`), damped fictitious play ``damped_fp``
(:mod:`~dedafp.algorithms.damped`) and online mirror descent ``omd`` (:mod:`~dedafp.algorithms.mirror_descent`)
are registered on import.
"""

from dedafp.algorithms.base import (
    Algorithm,
    IterationRecord,
    algorithm_class,
    make_algorithm,
    register_algorithm,
    registered_algorithms,
)
from dedafp.algorithms.baselines import KernelDensityFictitiousPlay, MixtureFictitiousPlay
from dedafp.algorithms.damped import DampedFictitiousPlay
from dedafp.algorithms.fictitious_play import FictitiousPlay
from dedafp.algorithms.mirror_descent import MirrorDescent

__all__ = ["Algorithm", "IterationRecord", "algorithm_class", "make_algorithm", "register_algorithm",
           "registered_algorithms", "FictitiousPlay", "KernelDensityFictitiousPlay", "MixtureFictitiousPlay",
           "DampedFictitiousPlay", "MirrorDescent"]
