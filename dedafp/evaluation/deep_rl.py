"""Exploitability estimated by a fresh deep-RL best response: a lower bound that needs no reference."""

from __future__ import annotations

import torch

from dedafp.agents.best_response import BestResponseConfig, SB3BestResponder
from dedafp.agents.policy import Policy
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel
from dedafp.rollout import rollout

__all__ = ["deep_rl_exploitability"]


def deep_rl_exploitability(game: MeanFieldGame, population: PopulationModel, policy: Policy,
                           config: BestResponseConfig, agents: int = 20_000, seed: int = 0,
                           device: torch.device | str = "cpu") -> dict[str, float]:
    """Exploitability estimated by deep RL: a *lower bound* for any game.

    A fresh stable-baselines3 best response is trained against the frozen ``population`` and both
    it (deterministically) and ``policy`` are rolled out by ``agents`` agents against that same
    population. The gap of their mean returns under-estimates the exploitability by the fresh best
    response's own shortfall, hence a lower bound (up to the reported Monte Carlo standard error).
    """
    responder = SB3BestResponder(game, config, device, seed)
    best_response = responder.learn(population)
    field = game.bind(population)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    br_returns = rollout(game, best_response, agents, field, deterministic=True, generator=generator,
                         device=device).returns.double()
    policy_returns = rollout(game, policy, agents, field, generator=generator, device=device).returns.double()
    gap = float(br_returns.mean() - policy_returns.mean())
    std_error = float(torch.sqrt(br_returns.var() / agents + policy_returns.var() / agents))
    return {"deep_rl/exploitability_lower_bound": gap, "deep_rl/exploitability_lower_bound_se": std_error,
            "deep_rl/best_response_return": float(br_returns.mean()),
            "deep_rl/policy_return": float(policy_returns.mean())}
