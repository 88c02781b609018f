"""Batched rollouts of a policy in a game: all agents stepped together as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dedafp.agents.policy import Policy, act
from dedafp.envs.base import MeanFieldGame


@dataclass(frozen=True)
class Rollout:
    """Simulated trajectories of ``n`` agents.

    Attributes:
        states: ``[T+1, n, d]``.
        actions: ``[T, n, action_dim]`` (the actions played, clipped).
        rewards: ``[T, n]``; the terminal reward is added to the last step's (None if not computed).
        field: the field the dynamics and rewards used (for consistent rollouts, the population's own).
    """

    states: Tensor
    actions: Tensor
    rewards: Tensor | None
    field: Any

    def samples(self) -> tuple[Tensor, Tensor, Tensor]:
        """Decision samples flattened: ``times [T n]``, ``states [T n, d]``, ``actions [T n, d_a]``."""
        T, n = self.actions.shape[:2]
        times = torch.arange(T, device=self.states.device).repeat_interleave(n)
        return times, self.states[:-1].reshape(T * n, -1), self.actions.reshape(T * n, -1)

    def population_samples(self) -> tuple[Tensor, Tensor]:
        """All visited states flattened: ``times [(T+1) n]`` and ``states [(T+1) n, d]``."""
        T1, n = self.states.shape[:2]
        return torch.arange(T1, device=self.states.device).repeat_interleave(n), self.states.reshape(T1 * n, -1)

    @property
    def returns(self) -> Tensor:
        """Total reward of each agent, ``[n]``."""
        if self.rewards is None:
            raise ValueError("this rollout was simulated with rewards=False")
        return self.rewards.sum(0)


@torch.no_grad()
def rollout(game: MeanFieldGame, policy: Policy, n: int, field: Any, consistent: bool = False,
            deterministic: bool = False, generator: torch.Generator | None = None,
            device: torch.device | str = "cpu", rewards: bool = True) -> Rollout:
    """Simulate ``n`` agents of ``game`` playing ``policy`` for one episode.

    Args:
        field: the population field (from ``game.bind``) the agents respond to.
        consistent: if True, the dynamics use the simulated population's own statistics
            (``game.consistent_field``) instead of ``field``: the policy's mean-field flow.
        deterministic: play the policy's mean action.
        rewards: compute rewards (skip them when only states matter: a density reward costs a
            population-model query per step).
    """
    x = game.initial_states(n, generator, device)
    states, actions, paid = [x], [], []
    for t in range(game.horizon):
        if consistent:
            field = game.consistent_field(t, x, field)
        a = act(policy, t, x, deterministic, generator)
        if rewards:
            paid.append(game.reward(t, x, a, field))
        x = game.step(t, x, a, field, torch.randn(x.shape, generator=generator, device=device))
        states.append(x)
        actions.append(a)
    if consistent:
        field = game.consistent_field(game.horizon, x, field)
    if rewards:
        paid[-1] = paid[-1] + game.terminal_reward(x, field)
    result = Rollout(torch.stack(states), torch.stack(actions), torch.stack(paid) if rewards else None, field)
    if not torch.isfinite(result.states).all():
        raise FloatingPointError(f"states became non-finite in a rollout of {game.name}")
    return result
