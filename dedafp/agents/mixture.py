"""Fictitious play's average as a mixture over episodes: each agent follows one stored policy."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from dedafp.agents.policy import Policy


class MixturePolicy:
    """A population in which agent ``i`` plays ``policies[i mod k]`` for its whole episode.

    This is the exact fictitious-play average (Algo 1 of the DEDA-FP paper): its occupancy is the
    uniform mixture of the members' occupancies. The assignment follows the agent's index in the
    batch (exactly uniform, no state), so ``distribution(t, x)`` must be called with agents in
    the same order at every t, as rollouts do.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        if len(policies) == 0:
            raise ValueError("a mixture needs at least one policy")
        self.policies = list(policies)
        self.action_bound = self.policies[0].action_bound

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        k = len(self.policies)
        outputs = [policy.distribution(t, x[j::k]) for j, policy in enumerate(self.policies) if x[j::k].shape[0]]
        mean = x.new_empty(x.shape[0], outputs[0][0].shape[1])
        std = x.new_empty(x.shape[0], outputs[0][0].shape[1])
        for j, (m, s) in enumerate(outputs):
            mean[j::k], std[j::k] = m, s
        return mean, std
