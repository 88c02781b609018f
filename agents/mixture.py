"""Fictitious play's average as a mixture over episodes: each agent follows one stored policy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from dedafp.agents.policy import Policy
from torch import Tensor


class MixturePolicy:
    """A population in which agent ``i`` plays ``policies[assignment[i]]`` for its whole episode.

    This is the exact fictitious-play average (Algo 1 of the DEDA-FP paper): its occupancy is the
    uniform mixture of the members' occupancies. It is a policy *of a fixed batch of agents*:
    ``distribution(t, x)`` needs ``x`` ordered like ``assignment`` (shape ``[n]``).
    """

    def __init__(self, policies: Sequence[Policy], n: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        if len(policies) == 0:
            raise ValueError("a mixture needs at least one policy")
        self.policies = list(policies)
        self.action_bound = self.policies[0].action_bound
        self.assignment = torch.randint(len(self.policies), (n,), generator=generator, device=device)

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] != self.assignment.shape[0]:
            raise ValueError(f"this mixture was drawn for {self.assignment.shape[0]} agents, got {x.shape[0]}")
        mean = std = None
        for j, policy in enumerate(self.policies):
            members = (self.assignment == j).nonzero(as_tuple=True)[0]
            if members.numel() == 0:
                continue
            m, s = policy.distribution(t, x[members])
            if mean is None:
                mean = x.new_zeros(x.shape[0], m.shape[1])
                std = x.new_zeros(x.shape[0], m.shape[1])
            mean[members], std[members] = m, s
        assert mean is not None and std is not None
        return mean, std
