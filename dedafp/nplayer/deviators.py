"""Deviators of the N-player game: agent 0's best response to the policy's own mean-field flow.

:func:`best_response_deviator` gives the exact Riccati response on LQ games and the grid reference's best
response (:class:`GridBestResponse`, played in the continuous game) on density games, with what the
deviation gain tends to as N grows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.agents.policy import Policy, act
from dedafp.envs.lq import LQGame
from dedafp.run import Run

__all__ = ["GridBestResponse", "best_response_deviator"]


class GridBestResponse:
    """A grid policy (one lattice velocity per time and cell) played in the continuous game, deterministically."""

    def __init__(self, grid: Any, actions: np.ndarray) -> None:
        self.grid = grid
        self.actions = np.asarray(actions)                                     # [T, S] lattice indices
        self.velocities = torch.as_tensor(grid.velocities, dtype=torch.float32)
        self.action_bound = grid.game.action_bound

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """The cell's velocity ``[n, action_dim]`` (zero in the rare case x sits in a wall cell), std 0."""
        states = self.grid.state_index(x.detach().cpu().numpy())
        chosen = self.velocities[self.actions[t][np.clip(states, 0, None)]]
        chosen[torch.as_tensor(states < 0)] = 0.0
        mean = chosen.to(x.device)
        return mean, torch.zeros_like(mean)


def best_response_deviator(run: Run, seed: int = 0) -> tuple[Policy, dict[str, Any]]:
    """A best response to the run's policy's own mean-field flow, and what the deviation gain tends to.

    LQ: the exact Riccati response to the policy's mean flow (from a 10⁵-agent simulation); the gain tends
    to the policy's exploitability. Density games: the grid reference's best response to the policy
    projected on the grid; the gain tends to that response's advantage in the continuous game, close to the
    policy's grid exploitability (reported) up to the discretisation.
    """
    game, policy = run.game, run.average_policy
    if isinstance(game, LQGame):
        from dedafp.reference import lq
        from dedafp.reference.riccati_responder import AffineTorchPolicy
        evaluation = lq.monte_carlo_exploitability(game.config, policy.distribution, 100_000, seed=seed)
        exploitability = evaluation.exploitability
        response = lq.best_response(game.config, exploitability.mean_flow)
        limit = {"value": exploitability.exploitability, "se": exploitability.std_error,
                 "label": "exploitability of the policy (exact best response, 10⁵-agent Monte Carlo)"}
        return AffineTorchPolicy(response.policy, game.action_bound), limit
    from dedafp.reference.grid import default_grid_config
    from dedafp.reference.grid_kernel import build_grid
    from dedafp.reference.grid_scoring import score_policy
    grid = build_grid(game, default_grid_config(game.name))
    generator = torch.Generator().manual_seed(seed)
    score = score_policy(grid, lambda t, x: act(policy, t, x, generator=generator), generator=generator)
    limit = {"value": score.exploitability, "se": 0.0,
             "label": f"grid exploitability of the policy ({grid.config.cells} cells, {grid.num_actions} velocities)"}
    return GridBestResponse(grid, score.best_response), limit
