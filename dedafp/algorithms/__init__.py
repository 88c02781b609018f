"""Outer loops computing mean-field equilibria, behind one interface (:class:`Algorithm`) and a registry.

``dedafp`` (DEDA-FP, :mod:`~dedafp.algorithms.fictitious_play`) and the paper's baselines ``algo1``
and ``algo2`` (:mod:`~dedafp.algorithms.baselines`) and damped fictitious play ``damped_fp``
(:mod:`~dedafp.algorithms.damped`) are registered on import.
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

__all__ = ["Algorithm", "IterationRecord", "algorithm_class", "make_algorithm", "register_algorithm",
           "registered_algorithms", "FictitiousPlay", "KernelDensityFictitiousPlay", "MixtureFictitiousPlay",
           "DampedFictitiousPlay"]
