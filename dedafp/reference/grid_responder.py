"""Best response on the reference grid (density games): exact backward induction against the flow.

The density games' analogue of the LQ game's Riccati responder: the frozen population's log-density
is read at the grid's cell centres, the game's own rewards are evaluated there, and backward
induction over the grid kernel (:mod:`dedafp.reference.grid`) gives the optimal velocity of every
(t, cell). It isolates deep RL's share of fictitious play's error: the rest of the loop (behavioural
cloning, the population model) is unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dedafp.agents.policy import BestResponder, DeterministicPolicy
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel


class GridPolicy(DeterministicPolicy):
    """Plays the grid best response's velocity of the cell holding ``x`` (0 off the free cells).

    Holds only small tensors (no grid kernel), so checkpoints that pickle it stay small.
    """

    def __init__(self, grid, actions: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.action_bound = float(grid.game.action_bound)
        self.cells = grid.config.cells
        self.state_of_cell = torch.as_tensor(grid.state_of_cell, device=device)
        velocities = torch.as_tensor(grid.velocities, dtype=torch.float32, device=device)
        # [T, S + 1, d_a]: the extra last row (state index -1) is the zero action off the free cells.
        table = velocities[torch.as_tensor(actions, device=device)]
        self.table = torch.cat([table, torch.zeros_like(table[:, :1])], dim=1)

    def mean_action(self, t: int, x: Tensor) -> Tensor:
        x = x.to(self.table.device)
        coords = (x * self.cells).floor().long().clamp(0, self.cells - 1)
        flat = (coords * self.cells ** torch.arange(x.shape[1], device=x.device)).sum(-1)
        states = self.state_of_cell[flat]
        states = torch.where(((x >= 0) & (x <= 1)).all(-1), states, -1)
        return self.table[t, states]


class GridBestResponder(BestResponder):
    """Exact best response of a density game on its default reference grid (built once, on first use)."""

    def __init__(self, game: MeanFieldGame, device: torch.device | str = "cpu") -> None:
        from dedafp.envs.registry import spec_of
        spec = spec_of(game)
        if spec is None or spec.grid is None:
            raise ValueError(f"the grid best response needs a game whose spec declares a reference grid, "
                             f"got {game.name!r}")
        self.game = game
        self.device = device
        self._grid = None

    @property
    def grid(self):
        if self._grid is None:
            from dedafp.reference.grid import build_grid, default_grid_config
            self._grid = build_grid(self.game, default_grid_config(self.game.name))
        return self._grid

    @torch.no_grad()
    def learn(self, population: PopulationModel) -> GridPolicy:
        grid = self.grid
        centres = torch.as_tensor(grid.centres, dtype=torch.float32, device=population.device)
        # The rewards read log μ_t at the cell centres, as the continuous game reads it at x.
        log_density = torch.stack([population.log_prob(centres, t) for t in range(grid.horizon + 1)])
        mass = np.exp(log_density.double().cpu().numpy()) * grid.cell_area
        actions, _ = grid.best_response(*grid.rewards(mass))
        return GridPolicy(grid, actions, self.device)
