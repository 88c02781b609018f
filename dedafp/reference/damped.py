"""Damped fictitious play with exact parts: the reference of :mod:`dedafp.algorithms.damped`.

Damped fictitious play mixes the k-th best response into the average with weight

    α_k = max(α, 1/k)        (α in (0, 1]; the first best response replaces the initial policy)

so it is fictitious play (α_k = 1/k) until 1/k falls below α, then a constant step: the newest
best responses keep a fixed share instead of a vanishing one, and older ones fade geometrically.
α = 1 is the fixed-point iteration (the policy is the latest best response); α -> 0 is fictitious
play. Constant-step ("generalised") fictitious play is in Leslie & Collins, "Generalised weakened
fictitious play", Games Econ. Behav. 2006, and the fixed-point / damped iterations of mean-field games
in Cui & Koeppl, AISTATS 2021, and Laurière et al., "Scalable deep RL algorithms for mean field games",
ICML 2022 (and the tabular libraries built on them).

Two exact versions, each the same outer loop with perfect parts:

* :func:`exact_damped_fictitious_play`: the LQ game (Riccati best responses, exact moments of the
  episode mixture with the damped weights);
* :class:`GridDampedFictitiousPlay`: the density games' grid (exact best responses on the grid,
  occupancy-weighted mixing as in :class:`~dedafp.reference.grid.GridFictitiousPlay`).

Usage::

    from dedafp.envs.lq import lq_preset
    from dedafp.reference.damped import exact_damped_fictitious_play
    trace = exact_damped_fictitious_play(lq_preset("lq2d"), iterations=10, weight=1.0)
    trace.exploitability[10]                   # ~ 2e-5 (fictitious play: 0.258)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

# The config module imports this one (for DampedConfig): the solvers' heavy imports wait until used.
if TYPE_CHECKING:
    from dedafp.envs.lq import LQConfig
    from dedafp.reference import lq
    from dedafp.reference.grid import GridMFG
    from dedafp.reference.grid_solvers import GridFictitiousPlay

__all__ = ["DampedConfig", "check_weight", "damped_weights", "newest_weight", "DampedTrace",
           "exact_damped_fictitious_play", "GridDampedFictitiousPlay"]


def check_weight(weight: float, name: str = "weight") -> float:
    """``weight`` as a float, checked to lie in (0, 1] (raises ValueError naming ``name``)."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or not 0 < weight <= 1:
        raise ValueError(f"{name} must be a finite number in (0, 1], got {weight!r}")
    return float(weight)


@dataclass(frozen=True)
class DampedConfig:
    """Averaging weight of damped fictitious play (config section ``damped``,
    :mod:`dedafp.algorithms.damped`).

    Attributes:
        weight: α in (0, 1], the least share of the newest best response in the average: the k-th
            gets ``max(α, 1/k)``. 1: fixed-point iteration (the latest best response only); small:
            fictitious play for the first 1/α iterations. None (default): the game's measured
            choice (:data:`dedafp.algorithms.damped.MEASURED_WEIGHTS`: lq1d, lq2d 1; beach bar 0.25),
            else :data:`~dedafp.algorithms.damped.FALLBACK_WEIGHT` with a warning.
    """

    weight: float | None = None

    def __post_init__(self) -> None:
        if self.weight is not None:
            check_weight(self.weight, "damped.weight")


def newest_weight(k: int, weight: float) -> float:
    """The share ``max(weight, 1/k)`` of the k-th best response (k >= 1) in the new average."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return max(check_weight(weight), 1.0 / k)


def damped_weights(k: int, weight: float) -> np.ndarray:
    """The weights ``[k]`` of best responses 1..k in the damped average after k of them (sum 1)."""
    w = np.zeros(0)
    for i in range(1, k + 1):
        a = newest_weight(i, weight)
        w = np.append((1 - a) * w, a)
    return w


@dataclass(frozen=True)
class DampedTrace:
    """Exact damped fictitious play: best responses, the weights after the last, exploitability per k.

    ``exploitability[k]`` is the average's after k best responses (entry 0: the initial policy's).
    """

    best_responses: list[lq.AffinePolicy]
    weights: np.ndarray
    exploitability: np.ndarray


def exact_damped_fictitious_play(config: LQConfig, iterations: int, weight: float,
                                 initial_policy: lq.AffinePolicy | None = None) -> DampedTrace:
    """Damped fictitious play on the LQ game with exact best responses and exact mixture moments.

    Iteration k answers the mean flow of the current average exactly; the average is the episode
    mixture of best responses 1..k with :func:`damped_weights`. ``weight`` -> 0 reproduces
    :func:`~dedafp.reference.lq.exact_fictitious_play`.
    """
    from dedafp.reference import lq
    check_weight(weight)
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    initial = initial_policy if initial_policy is not None else lq.AffinePolicy.zero(config)
    scores = [lq.exploitability(config, [initial])]
    members: list[lq.AffinePolicy] = []
    weights = np.zeros(0)
    for k in range(1, iterations + 1):
        members.append(lq.best_response(config, scores[-1].mean_flow).policy)
        weights = damped_weights(k, weight)
        scores.append(lq.exploitability(config, members, weights))
    return DampedTrace(members, weights, np.array([s.exploitability for s in scores]))


def GridDampedFictitiousPlay(grid: GridMFG, weight: float) -> GridFictitiousPlay:  # noqa: N802  (a solver's name)
    """Damped fictitious play on the grid, started from the uniform policy.

    Iteration k computes the exact best response to the current average's flow and mixes it in with
    weight ``max(weight, 1/k)``, occupancy-weighted so that the new average's flow is the same mixture
    of flows (the first best response replaces the uniform policy, as in the deep loop, whose buffer
    never holds the initial policy). It is :class:`~dedafp.reference.grid_solvers.GridFictitiousPlay`
    with the newest best response's share ``max(weight, 1/k)`` instead of ``1/(k+1)``.
    """
    from dedafp.reference.grid_solvers import GridFictitiousPlay

    alpha = check_weight(weight)
    return GridFictitiousPlay(grid, newest_weight=lambda k: newest_weight(k, alpha))
