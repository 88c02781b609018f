"""Shards of the N-player game: a contiguous slice of agents each, in this process or on Ray actors.

A shard (:class:`AgentShard`) holds its agents' states, a generator seeded from ``(seed, shard)``
(:func:`shard_seed`) and their returns. Per step the driver sends every shard one message about the
others (:class:`MeanMessage`, :class:`DensityMessage` or :class:`ExactDensityMessage`); each shard pays
its agents' rewards, steps them and reports the sums over its agents. :func:`local_shards` calls the
shards one after the other, :func:`ray_shards` places them on actors; both give the same numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.agents.policy import Policy, act
from dedafp.envs.base import MeanFieldGame
from dedafp.experiments.distributed import check_workers, ray_session
from dedafp.nplayer.config import SimulationConfig, check_agents
from dedafp.nplayer.density import (
    AgentSums,
    Binning,
    GridSpec,
    bin_states,
    binned_others_log_density,
    exact_others_log_density,
    histogram,
)
from dedafp.nplayer.fast_policy import fast_policy


def shard_sizes(agents: int, workers: int) -> list[int]:
    """Agents per shard: ``agents`` in ``workers`` contiguous shards, the first ``agents % workers`` one larger."""
    base, extra = divmod(check_agents(agents), check_workers(workers))
    return [base + (1 if s < extra else 0) for s in range(workers)]


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard``'s generator: independent streams per (seed, shard) via numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@torch.inference_mode()
def _chunked_actions(policy: Policy, t: int, x: Tensor, deterministic: bool, generator: torch.Generator,
                     chunk: int) -> Tensor:
    """``act`` over ``x`` ``[n, d]`` in chunks of ``chunk`` agents (same draws as one call when n <= chunk)."""
    if x.shape[0] <= chunk:
        return act(policy, t, x, deterministic, generator)
    return torch.cat([act(policy, t, x[i:i + chunk], deterministic, generator) for i in range(0, x.shape[0], chunk)])


# ---- per-agent fields seen by the game's own step and reward functions ----------------------------------

class _OthersMean:
    """LQ field of the N-player game at one time t: ``field[t]`` is every agent's others' mean ``[n, d]``."""

    def __init__(self, t: int, means: Tensor) -> None:
        self.t, self.means = t, means

    def __getitem__(self, t: int) -> Tensor:
        assert t == self.t, f"the N-player field of time {self.t} was read at time {t}"
        return self.means


class _OthersDensity:
    """Density field of the N-player game at one time t: ``log_prob(x, t)`` for exactly those agents' states."""

    def __init__(self, t: int, x: Tensor, log_density: Tensor) -> None:
        self.t, self.x, self.log_density = t, x, log_density

    def log_prob(self, x: Tensor, t: int) -> Tensor:
        assert x is self.x and t == self.t, "the N-player density field was queried for other states or times"
        return self.log_density


@dataclass(frozen=True)
class MeanMessage:
    """What the driver sends the shards of an LQ game: agents per game and Σx per episode ``[E, d]``."""

    agents: int
    first: Tensor


@dataclass(frozen=True)
class ExactDensityMessage:
    """What the driver sends the one shard of a density game with ``density='exact'``: bandwidths ``[E, d]``."""

    agents: int
    bandwidth: Tensor


@dataclass(frozen=True)
class DensityMessage:
    """What the driver sends the shards of a density game: the grid and the smoothed kernel sum ``[E, *nodes]``."""

    agents: int
    spec: GridSpec
    smoothed: Tensor


# ---- one shard of agents ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardOutcome:
    """What a shard hands back at the end: returns ``[E, n]`` float64 (None without rewards), states or None."""

    returns: Tensor | None
    states: Tensor | None


class AgentShard:
    """Agents ``offset .. offset + n − 1`` of every one of the E games: their states, generator and returns.

    Used in-process or as a Ray actor (``portable=True``: tensors leave on the CPU and arrive on
    ``config.device``). Agent 0 of every game (in shard 0) plays ``deviator`` if one is given, by its mean
    action, so a run with and without it consumes the same random numbers. With an external ``field`` (the
    output of ``game.bind``) the agents do not interact and each one is the single-agent environment.
    """

    def __init__(self, game: MeanFieldGame, policy: Policy, config: SimulationConfig, shard: int,
                 deviator: Policy | None = None, field: Any = None, portable: bool = False,
                 threads: int | None = None) -> None:
        if threads is not None:      # a Ray actor's own process; never touched in-process
            torch.set_num_threads(threads)
        sizes = shard_sizes(config.agents, config.workers)
        self.game, self.config, self.shard = game, config, shard
        self.size, self.offset = sizes[shard], sum(sizes[:shard])
        self.device = torch.device(config.device)
        self.portable = portable
        self.policy = policy if config.exact_policy else fast_policy(policy)
        self.deviator = deviator if shard == 0 else None
        self.field = field
        self.generator = torch.Generator(device=self.device).manual_seed(shard_seed(config.seed, shard))
        E, n = config.episodes, self.size
        self.x = game.initial_states(E * n, self.generator, self.device).reshape(E, n, game.state_dim)
        self.returns = torch.zeros(E, n, dtype=torch.float64, device=self.device) if config.rewards else None
        self.trajectory = [self.x] if config.record_states else None
        self._binning: tuple[tuple[int, ...], tuple[float, ...], Binning] | None = None

    def _out(self, value: Any) -> Any:
        if not self.portable:
            return value
        if isinstance(value, Tensor):
            return value.cpu()
        return value.to("cpu") if hasattr(value, "to") else value

    def _in(self, message: Any) -> Any:
        if not self.portable or message is None:
            return message
        if isinstance(message, MeanMessage):
            return MeanMessage(message.agents, message.first.to(self.device))
        if isinstance(message, ExactDensityMessage):
            return ExactDensityMessage(message.agents, message.bandwidth.to(self.device))
        return DensityMessage(message.agents, message.spec.to(self.device), message.smoothed.to(self.device))

    def sums(self) -> AgentSums:
        """Σx and Σx² of this shard's current states, per episode."""
        return self._out(AgentSums.of(self.x))

    def histogram(self, spec: GridSpec) -> Tensor:
        """Binned counts of this shard's current states, ``[E, *nodes]`` float64."""
        if self.portable:
            spec = spec.to(self.device)
        # Kept for the lookup that follows at the same step (same states, same grid).
        self._binning = (spec.nodes, spec.spacing, bin_states(self.x, spec))
        return self._out(histogram(self._binning[2], spec))

    def _field(self, t: int, x: Tensor, message: Any) -> Any:
        """The field agent by agent at time t for the flattened states ``x`` ``[E n, d]``."""
        if self.field is not None:
            return self.field
        E, n, d = self.x.shape
        if isinstance(message, MeanMessage):
            others = (message.first.unsqueeze(1) - self.x.double()) / (message.agents - 1)       # [E, n, d]
            return _OthersMean(t, others.to(x.dtype).reshape(E * n, d))
        if isinstance(message, DensityMessage):
            spec = message.spec
            cached = self._binning
            binning = (cached[2] if cached is not None and cached[:2] == (spec.nodes, spec.spacing)
                       else bin_states(self.x, spec))
            self._binning = None
            log_density = binned_others_log_density(binning, spec, message.smoothed, message.agents)
            return _OthersDensity(t, x, log_density.to(x.dtype).reshape(E * n))
        if isinstance(message, ExactDensityMessage):
            log_density = exact_others_log_density(self.x, message.bandwidth.to(self.device))
            return _OthersDensity(t, x, log_density.to(x.dtype).reshape(E * n))
        return None

    def _actions(self, t: int, x: Tensor) -> Tensor:
        actions = _chunked_actions(self.policy, t, x, self.config.deterministic, self.generator, self.config.chunk)
        if self.deviator is not None:
            rows = torch.arange(self.config.episodes, device=x.device) * self.size
            actions[rows] = _chunked_actions(self.deviator, t, x[rows], True, self.generator, self.config.chunk)
        return actions

    @torch.inference_mode()
    def advance(self, t: int, message: Any) -> AgentSums:
        """Pay the rewards of step t, move the agents to t + 1; returns the sums of the new states."""
        message = self._in(message)
        E, n, d = self.x.shape
        x = self.x.reshape(E * n, d)
        field = self._field(t, x, message)
        a = self._actions(t, x)
        if self.returns is not None:
            reward = self.game.reward(t, x, a, field)
            self._check(reward, "rewards", t)
            self.returns += reward.double().reshape(E, n)
        noise = torch.randn(x.shape, generator=self.generator, device=self.device)
        x = self.game.step(t, x, a, field, noise)
        self._check(x, "states", t + 1)
        self.x = x.reshape(E, n, d)
        if self.trajectory is not None:
            self.trajectory.append(self.x)
        return self.sums()

    @torch.inference_mode()
    def finish(self, message: Any) -> None:
        """Pay the terminal reward at the horizon."""
        if self.returns is None:
            return
        message = self._in(message)
        E, n, d = self.x.shape
        x = self.x.reshape(E * n, d)
        reward = self.game.terminal_reward(x, self._field(self.game.horizon, x, message))
        self._check(reward, "terminal rewards", self.game.horizon)
        self.returns += reward.double().reshape(E, n)

    def outcome(self) -> ShardOutcome:
        """Returns ``[E, n]`` and, if recorded, states ``[steps+1, E, n, d]``."""
        states = torch.stack(self.trajectory) if self.trajectory is not None else None
        return ShardOutcome(self._out(self.returns) if self.returns is not None else None,
                            self._out(states) if states is not None else None)

    def _check(self, value: Tensor, what: str, t: int) -> None:
        if not torch.isfinite(value).all():
            raise FloatingPointError(f"{what} became non-finite at t={t} in shard {self.shard} of the "
                                     f"{self.game.name} N-player game")


# ---- backends ---------------------------------------------------------------------------------------

class _LocalShards:
    """The shards in this process, called one after the other."""

    def __init__(self, shards: list[AgentShard]) -> None:
        self.shards = shards

    def call(self, method: str, *args: Any) -> list[Any]:
        return [getattr(shard, method)(*args) for shard in self.shards]


class _RayShards:
    """The shards on Ray actors, called together; arguments are put in the object store once for all."""

    def __init__(self, ray: Any, actors: list[Any]) -> None:
        self.ray, self.actors = ray, actors

    def call(self, method: str, *args: Any) -> list[Any]:
        refs = [self.ray.put(arg) for arg in args]
        return self.ray.get([getattr(actor, method).remote(*refs) for actor in self.actors])


@contextlib.contextmanager
def ray_shards(game: MeanFieldGame, policy: Policy, config: SimulationConfig, deviator: Policy | None,
               field: Any, address: str | None) -> Iterator[_RayShards]:
    """The shards of ``config`` on Ray actors (one CPU each, and one GPU each on ``cuda``), killed on exit."""
    with ray_session(address, num_cpus=config.workers if address is None else None) as ray:
        gpus = 0
        if torch.device(config.device).type == "cuda":
            available = ray.cluster_resources().get("GPU", 0)
            if available < config.workers:
                raise ValueError(f"--device cuda with the ray backend gives each of the {config.workers} workers a "
                                 f"GPU; the cluster has {available:g}")
            gpus = 1
        actor = ray.remote(num_cpus=1, num_gpus=gpus)(AgentShard)
        threads = torch.get_num_threads()
        actors = [actor.remote(game, policy, config, s, deviator, field, True, threads) for s in range(config.workers)]
        try:
            yield _RayShards(ray, actors)
        finally:
            for handle in actors:
                ray.kill(handle)


@contextlib.contextmanager
def local_shards(game: MeanFieldGame, policy: Policy, config: SimulationConfig, deviator: Policy | None,
                 field: Any) -> Iterator[_LocalShards]:
    """The shards of ``config`` in this process."""
    yield _LocalShards([AgentShard(game, policy, config, s, deviator, field) for s in range(config.workers)])
