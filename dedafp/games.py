"""Game registry: names used by the CLI and configs -> games and their reference evaluators."""

from __future__ import annotations

from typing import Any, Protocol

import torch

from dedafp.agents.best_response import DeterministicPolicy
from dedafp.agents.policy import Policy
from dedafp.envs.base import MeanFieldGame, check_overrides
from dedafp.envs.lq import LQConfig, LQGame, lq_preset
from dedafp.population.base import PopulationModel

GAMES = ("lq1d", "lq2d", "four_rooms", "beach_bar")

#: Per-game defaults applied before a config file and ``--set`` overrides (``section.field``: value).
#: Density games live on a box: the flow gets a bounded support, so no mass leaves the domain.
GAME_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "four_rooms": {
        "fp": {"iterations": 20, "br_agents": 2000, "population_agents": 20000, "initial_flow_steps": 1500,
               "evaluate_every": 5},
        # Fresh PPO best responses: one warm-started from a response to a population that has since
        # moved did not unlearn it (return -68 where a fresh one earns 153); keep_best guards the rest.
        "best_response": {"algorithm": "ppo", "num_envs": 64, "total_steps": 300_000, "warm_start": False,
                          "n_steps": 128, "batch_size": 2048, "n_epochs": 10, "log_std_init": -0.5,
                          "hidden": 128, "keep_best": True},
        # The average is cloned as its conditional mean velocity with a fixed spread (see
        # AveragePolicyConfig.fixed_std): a learned spread kept 38-55% of the mass in the start room where
        # the best responses' exact average keeps 20%. 0.15 rather than 0.05: the mean policy herds agents
        # into clumps where best responses disagree; 20 iterations with grid best responses reached flow
        # TV 0.29 / room error 0.077 (0.36 / 0.047 with 0.05). Warm-started: 3,000 steps a refit.
        "average_policy": {"hidden": 128, "steps": 3000, "warm_start": True, "fixed_std": 0.15},
        "flow": {"low": (0.0, 0.0), "high": (1.0, 1.0), "transforms": 5, "hidden": 64, "bins": 8,
                 "tail_bound": 6.0, "steps": 600},
    },
    "beach_bar": {
        "fp": {"iterations": 10, "br_agents": 2000, "population_agents": 20000, "initial_flow_steps": 1500},
        "best_response": {"algorithm": "ppo", "num_envs": 64, "total_steps": 200_000, "warm_steps": 100_000,
                          "n_steps": 128, "batch_size": 2048, "n_epochs": 10, "log_std_init": -0.5},
        "flow": {"low": (0.0,), "high": (1.0,), "transforms": 4, "hidden": 32, "steps": 500},
    },
}


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
        check_overrides(LQConfig, "LQ", overrides)
        return LQGame(config.replace(**overrides), name=name)
    if name == "four_rooms":
        from dedafp.envs.four_rooms import FourRoomsGame, four_rooms
        return FourRoomsGame(four_rooms(**overrides))
    if name == "beach_bar":
        from dedafp.envs.beach_bar import BeachBarGame, beach_bar
        return BeachBarGame(beach_bar(**overrides))
    raise ValueError(f"unknown game {name!r}; allowed: {GAMES}")


def make_evaluator(game: MeanFieldGame, eval_agents: int, iterations: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> Evaluator | None:
    """The reference evaluator of ``game`` (exact for LQ), or None if the game has none."""
    if isinstance(game, LQGame):
        from dedafp.evaluation import LQEvaluator
        return LQEvaluator(game, eval_agents, iterations, device, seed)
    if game.name in ("four_rooms", "beach_bar"):
        from dedafp.evaluation import GridEvaluator
        return GridEvaluator(game, device, seed)
    return None
