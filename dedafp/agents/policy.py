"""What every policy in dedafp exposes: a diagonal Gaussian over actions given (t, x).

Deterministic policies (best responses) have ``std = 0``. Means are in physical action units and
actions are clipped to ``[-action_bound, action_bound]`` when played. The abstract best-response
types (:class:`DeterministicPolicy`, :class:`BestResponder`) live here too, so that a responder or a
reader of checkpoints needs neither stable-baselines3 nor any learner: this module imports torch only.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from dedafp.population.base import PopulationModel


@runtime_checkable
class Policy(Protocol):
    """A time-dependent Markov policy of a game with ``action_dim`` actions."""

    action_bound: float

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of the action at time ``t`` for states ``x`` ``[n, d]``.

        Returns two tensors ``[n, action_dim]`` in physical units.
        """
        ...


def act(policy: Policy, t: int, x: Tensor, deterministic: bool = False,
        generator: torch.Generator | None = None) -> Tensor:
    """Actions ``[n, action_dim]`` drawn from ``policy`` (its mean if ``deterministic``), clipped.

    A policy with its own ``sample(t, x, generator)`` (e.g. a Gaussian mixture) is sampled with it;
    otherwise actions are drawn from the diagonal Gaussian of :meth:`Policy.distribution`.
    """
    if not deterministic and hasattr(policy, "sample"):
        return policy.sample(t, x, generator).clamp(-policy.action_bound, policy.action_bound)
    mean, std = policy.distribution(t, x)
    if not deterministic:
        mean = mean + std * torch.randn(mean.shape, generator=generator, device=mean.device)
    return mean.clamp(-policy.action_bound, policy.action_bound)


class ZeroPolicy:
    """The policy that always plays ``a = 0`` (a neutral reference population)."""

    def __init__(self, game) -> None:
        self.action_bound = game.action_bound
        self.action_dim = game.action_dim

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        zeros = x.new_zeros(x.shape[0], self.action_dim)
        return zeros, zeros


class DeterministicPolicy(abc.ABC):
    """A best response played deterministically: ``std = 0``."""

    action_bound: float

    @abc.abstractmethod
    def mean_action(self, t: int, x: Tensor) -> Tensor:
        """Action ``[n, action_dim]`` (physical units) at time ``t`` for states ``x`` ``[n, d]``."""

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean action and a zero standard deviation, both ``[n, action_dim]``."""
        mean = self.mean_action(t, x)
        return mean, torch.zeros_like(mean)


class BestResponder(abc.ABC):
    """Computes a best response to a frozen population model."""

    @abc.abstractmethod
    def learn(self, population: PopulationModel) -> DeterministicPolicy:
        """Train (or solve) against ``population``; returns the deterministic best response."""
