"""Game registry: names used by the CLI and configs -> games and their reference evaluators."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from dedafp.agents.best_response import DeterministicPolicy
from dedafp.agents.policy import Policy
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQGame, lq_preset
from dedafp.population.base import PopulationModel

GAMES = ("lq1d", "lq2d")


class Evaluator(Protocol):
    """Judges the loop's outputs against a game's reference solution, once per iteration."""

    def evaluate(self, iteration: int, average_policy: Policy, population: PopulationModel,
                 best_responses: list[DeterministicPolicy], br_field: Any) -> dict[str, float]:
        """Namespaced metrics after ``iteration`` best responses (``br_field``: what the last one answered)."""
        ...


def make_game(name: str, overrides: dict[str, Any] | None = None) -> MeanFieldGame:
    """The game ``name`` (``lq1d``, ``lq2d``) with parameter ``overrides`` (validated)."""
    overrides = dict(overrides or {})
    if name in ("lq1d", "lq2d"):
        config = lq_preset(name)
        unknown = set(overrides) - set(config.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LQ parameter(s) {sorted(unknown)}; allowed: "
                             f"{sorted(config.__dataclass_fields__)}")
        return LQGame(config.replace(**overrides), name=name)
    raise ValueError(f"unknown game {name!r}; allowed: {GAMES}")


def make_evaluator(game: MeanFieldGame, eval_agents: int, iterations: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> Evaluator | None:
    """The reference evaluator of ``game`` (exact for LQ), or None if the game has none."""
    if isinstance(game, LQGame):
        from dedafp.evaluation import LQEvaluator
        return LQEvaluator(game, eval_agents, iterations, device, seed)
    return None
