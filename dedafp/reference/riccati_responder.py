"""Exact best response of the LQ game (backward Riccati), as a fast and exact responder."""

from __future__ import annotations

import torch
from torch import Tensor

from dedafp.agents.policy import BestResponder, DeterministicPolicy
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQGame
from dedafp.population.base import PopulationModel
from dedafp.reference import lq


class AffineTorchPolicy(DeterministicPolicy):
    """``a_t = K_t x + k_t`` from an exact :class:`~dedafp.reference.lq.AffinePolicy`, clipped to the bound."""

    def __init__(self, policy: lq.AffinePolicy, action_bound: float, device: torch.device | str = "cpu") -> None:
        self.affine = policy
        self.action_bound = action_bound
        self.gains = torch.as_tensor(policy.gains, dtype=torch.float32, device=device)
        self.offsets = torch.as_tensor(policy.offsets, dtype=torch.float32, device=device)

    def mean_action(self, t: int, x: Tensor) -> Tensor:
        return x @ self.gains[t].T + self.offsets[t]


class RiccatiBestResponder(BestResponder):
    """Best response of an :class:`LQGame` to a population's mean flow, solved exactly."""

    def __init__(self, game: MeanFieldGame, device: torch.device | str = "cpu") -> None:
        if not isinstance(game, LQGame):
            raise ValueError(f"the riccati best response needs an LQ game, got {type(game).__name__}")
        self.game = game
        self.device = device

    def learn(self, population: PopulationModel) -> AffineTorchPolicy:
        mean_flow = self.game.bind(population).double().cpu().numpy()
        br = lq.best_response(self.game.config, mean_flow)
        return AffineTorchPolicy(br.policy, self.game.action_bound, self.device)
