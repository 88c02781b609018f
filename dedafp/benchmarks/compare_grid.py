"""Exact references of ``dedafp bench compare`` on a density game's grid: episode mixtures and fictitious play.

:func:`episode_mixture_exploitability` scores the exact episode mixture of a run's own best responses;
:func:`grid_fictitious_play` runs exact fictitious play the way the loop does (from the zero-velocity
policy, averaging only best responses).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from dedafp.agents.best_response import DeterministicPolicy
    from dedafp.reference.grid import GridMFG

__all__ = ["episode_mixture_exploitability", "grid_fictitious_play"]


def episode_mixture_exploitability(grid: GridMFG, policies: Sequence[DeterministicPolicy], ks: Sequence[int],
                                   samples_per_cell: int = 4, seed: int = 0) -> list[float]:
    """Exact grid exploitability of the episode mixture of the first k ``policies``, for every k in ``ks``.

    Members are put on the lattice as :func:`~dedafp.reference.grid_scoring.project_policy` does and
    charged the lattice's action costs (exact for grid best responses, whose actions are lattice points).
    k = 0 gives NaN.
    """
    from dedafp.agents.policy import act
    from dedafp.reference.grid_scoring import mixture_exploitability, project_policy

    generator = torch.Generator().manual_seed(seed)
    needed = max(ks, default=0)
    members = [project_policy(grid, lambda t, x, p=p: act(p, t, x, deterministic=True), samples_per_cell,
                              generator=generator) for p in policies[:needed]]
    flows = [grid.forward(member) for member in members]
    return [mixture_exploitability(grid, members[:k], flows[:k]).exploitability if 1 <= k <= len(members) else math.nan
            for k in ks]


def grid_fictitious_play(grid: GridMFG, iterations: int) -> list[float]:
    """Exact fictitious play on the grid as the loop runs it: exploitability at k = 0..``iterations``.

    Starts from the zero-velocity policy (the loop's initial average policy is a near-zero Gaussian) and
    averages only the best responses, as episode mixtures: the like-for-like reference of the density
    games (``dedafp reference --method fp`` starts from the uniform policy and keeps it in the average).
    """
    from dedafp.reference.grid_scoring import mixture_exploitability

    zero = np.zeros((grid.horizon, grid.num_states, grid.num_actions))
    zero[..., int(np.argmin(np.abs(grid.velocities).sum(-1)))] = 1.0
    score = grid.exploitability(zero)
    values, best_actions = [score.exploitability], score.best_response
    members: list[np.ndarray] = []
    flows: list[np.ndarray] = []
    for _ in range(iterations):
        members.append(grid.one_hot(best_actions))
        flows.append(grid.forward(members[-1]))
        score = mixture_exploitability(grid, members, flows)
        values.append(score.exploitability)
        best_actions = score.best_response
    return values
