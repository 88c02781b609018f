"""The evaluator interface: judges an algorithm's outputs against a game's reference, once per iteration."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from dedafp.agents.policy import Policy
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import spec_of
from dedafp.population.base import PopulationModel

__all__ = ["Evaluator", "make_evaluator"]


class Evaluator(Protocol):
    """Judges the loop's outputs against a game's reference solution, once per iteration."""

    def evaluate(self, iteration: int, average_policy: Policy, population: PopulationModel,
                 best_responses: list, br_field: Any) -> dict[str, float]:
        """Namespaced metrics after ``iteration`` best responses (``br_field``: what the last one answered)."""
        ...


def make_evaluator(game: MeanFieldGame, eval_agents: int, iterations: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> Evaluator | None:
    """The reference evaluator the game's spec declares, or None (no spec, or no reference)."""
    spec = spec_of(game)
    return None if spec is None else spec.make_evaluator(game, eval_agents, iterations, device, seed)
