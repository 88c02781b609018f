"""Finite-agent (N-player) rollouts of a learned policy: batched, sharded, in-process or on Ray.

N agents all play one policy in the N-player game, where agent i feels the empirical distribution of
the *other* N − 1 agents wherever the mean-field game has the flow μ_t:

* density games (four-rooms, beach bar): μ_t^{-i}(x_i) = (N − 1)⁻¹ Σ_{j≠i} K_h(x_i − x_j), a Gaussian
  kernel sum with the diagonal bandwidth h_k = bandwidth_factor(rule, N − 1, d) · sd_k(x_t) per coordinate
  (the convention of :class:`~dedafp.population.particles.ParticlePopulation` and scipy; Scott's rule by
  default). It is computed in O(N + G) rather than O(N²): linear binning onto a grid of G nodes, a
  separable convolution with the kernel on the grid, a multilinear lookup, minus each agent's own binned
  kernel contribution (:func:`binned_others_log_density`; its error against the exact pairwise sum
  :func:`exact_others_log_density` is measured in the README and pinned by a test; ``density="exact"``
  uses that pairwise sum instead, for small N in one shard);
* the LQ game: m_t^{-i} = (Σ_j x_j − x_i) / (N − 1), in the dynamics and in the reward.

Agents are split into W contiguous shards (:func:`shard_sizes`); a shard holds its agents' states and a
generator seeded from ``(seed, shard)`` (:func:`shard_seed`). Per step every shard reports *sums over its
agents* (count, Σx, Σx², and for density games its binned counts); the driver adds them in shard order,
smooths the histogram and sends the result back; each shard then pays its agents' rewards and steps them.
The in-process backend loops over the same shards that the Ray backend places on actors, so with the
same seed and shard layout both give the same numbers.

Usage::

    run = load_run("results/lq2d")
    result = simulate(run.game, run.average_policy, SimulationConfig(agents=100_000, seed=0))
    result.returns.mean(), result.agent_steps_per_second
    simulate(run.game, run.average_policy, SimulationConfig(agents=100_000, workers=2), backend="ray")

The parts: :mod:`~dedafp.nplayer.config` (:class:`SimulationConfig`), :mod:`~dedafp.nplayer.density` (the
binned and exact others' density), :mod:`~dedafp.nplayer.shards` (shards, messages, the two backends) and
:mod:`~dedafp.nplayer.fast_policy`; their public names are importable from here too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dedafp.agents.policy import Policy
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import spec_of
from dedafp.experiments.distributed import check_address, check_backend
from dedafp.nplayer.config import (
    COUPLINGS,
    DENSITY_METHODS,
    SimulationConfig,
    check_agents,
    parse_count,
    parse_counts,
)
from dedafp.nplayer.density import (
    AgentSums,
    Binning,
    GridSpec,
    bin_states,
    binned_others_log_density,
    empirical_log_density,
    exact_others_log_density,
    grid_spec,
    histogram,
    kernel_bandwidth,
    smooth,
)
from dedafp.nplayer.fast_policy import FastAveragePolicy, fast_policy
from dedafp.nplayer.shards import (
    AgentShard,
    DensityMessage,
    ExactDensityMessage,
    MeanMessage,
    ShardOutcome,
    local_shards,
    ray_shards,
    shard_seed,
    shard_sizes,
)

#: Importable from here as before the split into config, density, fast_policy and shards.
__all__ = [
    "COUPLINGS", "DENSITY_METHODS", "SimulationConfig", "SimulationResult", "check_agents", "parse_count",
    "parse_counts", "coupling_of", "simulate",
    "AgentSums", "Binning", "GridSpec", "bin_states", "binned_others_log_density", "empirical_log_density",
    "exact_others_log_density", "grid_spec", "histogram", "kernel_bandwidth", "smooth",
    "FastAveragePolicy", "fast_policy",
    "AgentShard", "DensityMessage", "ExactDensityMessage", "MeanMessage", "ShardOutcome", "shard_seed",
    "shard_sizes",
]


def coupling_of(game: MeanFieldGame) -> str:
    """How agents interact in ``game`` (its spec's ``coupling``): ``mean`` (the others' mean) or ``density``
    (a log-density reward, through ``reward_given_log_density``)."""
    spec = spec_of(game)
    coupling = None if spec is None else spec.coupling
    if coupling is None:
        raise ValueError(f"the N-player game of {game.name!r} is not defined: its GameSpec declares no coupling "
                         f"(one of {COUPLINGS})")
    if coupling == "density" and not callable(getattr(game, "reward_given_log_density", None)):
        raise ValueError(f"{game.name!r} declares coupling 'density' but has no reward_given_log_density(x, a, log_mu)")
    return coupling


@dataclass(frozen=True)
class SimulationResult:
    """A finished N-player simulation.

    Attributes:
        config: what was simulated.
        backend: ``local`` or ``ray``.
        returns: total reward of every agent, ``[E, N]`` float64 (None with ``rewards=False``).
        states: ``[steps+1, E, N, d]`` if ``record_states``, else None.
        steps: decision steps simulated.
        seconds: wall-clock of the simulation (shards already created; Ray start-up excluded).
        setup_seconds: wall-clock of creating the shards (initial states; Ray start-up and actors).
    """

    config: SimulationConfig
    backend: str
    returns: Tensor | None
    states: Tensor | None
    steps: int
    seconds: float
    setup_seconds: float

    @property
    def agent_steps_per_second(self) -> float:
        """Throughput: agents × episodes × steps per second of :attr:`seconds`."""
        return self.config.agents * self.config.episodes * self.steps / max(self.seconds, 1e-12)


def _sum_tensors(values: list[Tensor], device: torch.device) -> Tensor:
    total = values[0].to(device, copy=True)
    for value in values[1:]:
        total += value.to(device)
    return total


def _message(coupling: str, shards: Any, sums: AgentSums, game: MeanFieldGame, config: SimulationConfig,
             device: torch.device) -> Any:
    """What every shard needs to know about the others at this step (None: nothing)."""
    if coupling == "mean":
        return MeanMessage(sums.count, sums.first)
    if coupling == "density" and config.rewards and config.density == "exact":
        return ExactDensityMessage(sums.count, kernel_bandwidth(sums, config))
    if coupling == "density" and config.rewards:
        # The others' density is binned on the game's box (checked in simulate: a bounded, non-periodic domain).
        spec = grid_spec(sums, list(game.domain.low), list(game.domain.high), config, device)
        counts = _sum_tensors(shards.call("histogram", spec), device)
        return DensityMessage(sums.count, spec, smooth(counts, spec))
    return None


def simulate(game: MeanFieldGame, policy: Policy, config: SimulationConfig, backend: str = "local",
             address: str | None = None, deviator: Policy | None = None, field: Any = None) -> SimulationResult:
    """Simulate ``config.episodes`` N-player games of ``game`` in which every agent plays ``policy``.

    Args:
        game: the game (its own ``initial_states``, ``step``, ``reward`` and ``terminal_reward`` are used).
        policy: the policy all agents play (``distribution(t, x)``; sampled unless ``config.deterministic``).
        config: sizes, seed, device and the density term's settings.
        backend: ``local`` (in-process, looping over the shards) or ``ray`` (one actor per shard).
        address: Ray cluster to join (None: start a local instance for the call and shut it down).
        deviator: a policy played by agent 0 of every game instead (by its mean action).
        field: an external field from ``game.bind(population)``: agents then face it instead of each
            other (no interaction; every agent is the single-agent environment).

    Returns:
        The returns (and states if recorded), with timings.
    """
    check_backend(backend)
    check_address(address)
    if backend == "local" and address is not None:
        raise ValueError("address is only used by the ray backend (--backend ray)")
    coupling = coupling_of(game) if field is None else "external"
    if coupling == "density" and config.rewards and game.domain.kind != "box":
        raise ValueError(f"the N-player density term of {game.name!r} needs a box domain (it is binned on it); "
                         f"{game.domain.kind} domains are not supported yet: use --no-density")
    if field is None and config.agents < 2:
        raise ValueError("agents must be >= 2 in the N-player game (the others' distribution needs someone); "
                         "with one agent pass an external field")
    steps = game.horizon if config.steps is None else config.steps
    if steps > game.horizon:
        raise ValueError(f"steps must be <= the game's horizon {game.horizon}, got {steps}")
    device = torch.device(config.device)
    started = time.perf_counter()
    opened = (local_shards(game, policy, config, deviator, field) if backend == "local"
              else ray_shards(game, policy, config, deviator, field, address))
    with opened as shards:
        # The first call waits for Ray's actors to start: part of the set-up, not of the simulation.
        sums = _total(shards.call("sums"), device)
        ready = time.perf_counter()
        for t in range(steps):
            sums = _total(shards.call("advance", t, _message(coupling, shards, sums, game, config, device)), device)
        if steps == game.horizon:
            shards.call("finish", _message(coupling, shards, sums, game, config, device))
        outcomes: list[ShardOutcome] = shards.call("outcome")
        finished = time.perf_counter()
    returns = (torch.cat([o.returns.to(device) for o in outcomes], 1) if config.rewards else None)
    states = (torch.cat([o.states.to(device) for o in outcomes], 2) if config.record_states else None)
    return SimulationResult(config, backend, returns, states, steps, finished - ready, ready - started)


def _total(parts: list[AgentSums], device: torch.device) -> AgentSums:
    total = parts[0].to(device)
    for part in parts[1:]:
        total = total + part
    return total
