"""Damped fictitious play: DEDA-FP's loop with the newest best response weighted α instead of 1/k.

Fictitious play averages best responses uniformly, so the k-th one moves the average by 1/k and the
error decays like 1/k. Damped fictitious play gives the k-th best response the share

    α_k = max(α, 1/k)        of the behaviour-cloned average (older ones keep theirs in proportion),

i.e. fictitious play until 1/k < α, then a constant step (generalised weakened fictitious play,
Leslie & Collins, *Games Econ. Behav.* 2006; the damped fixed-point iteration of mean-field games,
Cui & Koeppl, AISTATS 2021, and Laurière et al., *Scalable Deep Reinforcement Learning Algorithms for
Mean Field Games*, ICML 2022). α = 1 is the fixed-point iteration: the average is the clone of the
latest best response. Everything else is DEDA-FP's (:mod:`~dedafp.algorithms.fictitious_play`): the
same best responders, the same behavioural cloning (the buffer draws iteration j with its weight,
:class:`~dedafp.agents.average_policy.FictitiousPlayBuffer` ``newest_weight``) and the same flow.

Where it converges, a constant step converges geometrically: the LQ games' best-response map is a
contraction, so the fixed point (α = 1) wins there; on the beach bar the best response to a crowd
runs away from it and the fixed point cycles, while α = 0.25 converges (0.008 at k = 20 with exact
parts; fictitious play 0.19). The exact-parts version of this loop is :mod:`dedafp.reference.damped`.
``damped.weight`` is chosen per game by a sweep (``results/omd/``); :data:`MEASURED_WEIGHTS` holds the
choices used when it is left at None.

Usage::

    from dedafp import load_config, make_algorithm
    loop = make_algorithm(load_config("lq2d", overrides=["best_response.algorithm=pathwise",
                                                         "damped.weight=1"], algorithm="damped_fp"))
    for _ in range(10):
        record = loop.iteration()       # record.metrics["fp/exploitability"], ["damped/newest_weight"]
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from dedafp.agents.average_policy import FictitiousPlayBuffer
from dedafp.algorithms.base import register_algorithm
from dedafp.algorithms.fictitious_play import FictitiousPlay
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQGame
from dedafp.evaluation.grid import GridEvaluator
from dedafp.reference.damped import DampedConfig, GridDampedFictitiousPlay, exact_damped_fictitious_play
from dedafp.rollout import Rollout

__all__ = ["DampedConfig", "DampedFictitiousPlay", "MEASURED_WEIGHTS", "FALLBACK_WEIGHT", "damped_weight"]

#: ``damped.weight`` chosen per game by the sweeps of ``results/omd/`` (used when it is None).
MEASURED_WEIGHTS: dict[str, float] = {"lq1d": 1.0, "lq2d": 1.0, "beach_bar": 0.25}
#: ``damped.weight`` for a game without a measured choice (with a warning).
FALLBACK_WEIGHT = 0.2
#: Members of the rounded weighted mixture handed to the evaluator (weights rounded to 1/this).
_MIXTURE_RESOLUTION = 64


def damped_weight(config: RunConfig) -> float:
    """The resolved α of ``config``: ``damped.weight``, else the measured choice of ``config.env``."""
    if config.damped.weight is not None:
        return float(config.damped.weight)
    if config.env in MEASURED_WEIGHTS:
        return MEASURED_WEIGHTS[config.env]
    warnings.warn(f"damped.weight is None and no weight was measured for {config.env!r}: using "
                  f"{FALLBACK_WEIGHT}; sweep it (dedafp sweep {config.env} --seeds 0 --set algorithm=damped_fp "
                  f"--set damped.weight=0.1,0.2,0.5,1) "
                  f"and set it", stacklevel=2)
    return FALLBACK_WEIGHT


@register_algorithm("damped_fp")
class DampedFictitiousPlay(FictitiousPlay):
    """DEDA-FP with the newest best response's share ``max(α, 1/k)`` (α = ``damped.weight``)."""

    def __init__(self, config: RunConfig, game: MeanFieldGame | None = None) -> None:
        super().__init__(config, game)
        self.weight = damped_weight(config)
        self._exact_values: np.ndarray | None = None
        self.buffer = FictitiousPlayBuffer(config.average_policy.buffer_capacity,
                                           torch.Generator().manual_seed(config.seed + 1), newest_weight=self.weight)

    def _update_average(self, played: Rollout) -> dict[str, float]:
        metrics = super()._update_average(played)
        metrics["damped/newest_weight"] = self.buffer.weights[-1]
        metrics["damped/weight"] = self.weight
        return metrics

    def _evaluate(self, k: int, metrics: dict[str, float], best_responses: list, br_field: Any) -> None:
        """The evaluator's metrics, its mixture terms (``theory/bc_error``) against the damped mixture,
        not 1/k, and ``reference/exact_damped_exploitability``: this loop's own curve with exact parts."""
        super()._evaluate(k, metrics, self._weighted_members(best_responses), br_field)
        if self.evaluator is not None:
            curve = self._exact_curve(k)
            if curve is not None:
                metrics["reference/exact_damped_exploitability"] = float(curve[k])

    def _exact_curve(self, k: int) -> np.ndarray | None:
        """Exploitability ``[K+1]`` of the same loop with exact parts (LQ: Riccati and exact moments; a
        grid-evaluated game: the grid's exact best responses), computed once; None for other games."""
        if self._exact_values is None or len(self._exact_values) <= k:
            iterations = max(k, self.config.fp.iterations)
            if isinstance(self.game, LQGame):
                trace = exact_damped_fictitious_play(self.game.config, iterations, self.weight)
                self._exact_values = trace.exploitability
            elif isinstance(self.evaluator, GridEvaluator):
                solver = GridDampedFictitiousPlay(self.evaluator.grid, self.weight)
                self._exact_values = np.array([solver.evaluate().exploitability]
                                              + [solver.iteration().exploitability for _ in range(iterations)])
            else:
                return None
        return self._exact_values

    def _weighted_members(self, best_responses: list) -> list:
        """The best responses repeated in proportion to their weights (rounded to 1/64; the newest stays last).

        An evaluator's uniform episode mixture over this list is the damped average's mixture.
        """
        if not best_responses:
            return best_responses
        counts = [round(w * _MIXTURE_RESOLUTION) for w in self.buffer.weights]
        counts[-1] = max(counts[-1], 1)
        return [policy for policy, count in zip(best_responses, counts, strict=True) for _ in range(count)]
