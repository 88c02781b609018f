"""What an N-player simulation runs (:class:`SimulationConfig`), and the agent counts of the command line."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dedafp.experiments.distributed import check_workers
from dedafp.population.particles import BANDWIDTH_RULES, bandwidth_factor

COUPLINGS = ("mean", "density")
DENSITY_METHODS = ("binned", "exact")


def check_agents(agents: object) -> int:
    """``agents`` as an int, or ``ValueError`` unless it is a positive integer."""
    if isinstance(agents, bool) or not isinstance(agents, int) or agents < 1:
        raise ValueError(f"agents must be a positive integer, got {agents!r}")
    return agents


def parse_count(text: str, name: str = "agents") -> int:
    """A positive integer from the command line: ``1000``, ``1_000`` or ``1e6``; ``ValueError`` naming ``name``."""
    example = " (e.g. 1000 or 1e6)" if name == "agents" else ""
    message = f"{name} must be a positive integer{example}, got {text!r}"
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            raise ValueError(message) from None
        if not (math.isfinite(number) and number.is_integer()):
            raise ValueError(message) from None
        value = int(number)
    if value < 1:
        raise ValueError(message)
    return value


def parse_counts(text: str, name: str = "agents") -> tuple[int, ...]:
    """A comma list of positive integers (see :func:`parse_count`)."""
    return tuple(parse_count(part.strip(), name) for part in text.split(","))


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate and how.

    Attributes:
        agents: N, agents per game (positive integer; >= 2 unless an external field replaces the others).
        episodes: E, independent N-player games simulated side by side as one batch (>= 1).
        workers: W, shards the agents are split into (1 <= W <= agents); the Ray backend puts each
            on its own actor, the in-process backend loops over them.
        seed: base seed; shard s draws from a generator seeded by ``shard_seed(seed, s)``.
        device: torch device of the states (``cpu``, ``cuda``, ...).
        rewards: pay rewards. False simulates states only: density games then skip the density term
            entirely (their dynamics do not depend on it); the LQ mean still drives the dynamics.
        steps: decision steps to simulate (None: the game's horizon). The terminal reward is paid
            only when the horizon is reached.
        density: how density games evaluate the others' kernel density: ``binned`` (O(N + G), shardable)
            or ``exact`` (the pairwise sum, O(N²) per game and step; one shard only, for small N).
        bandwidth: kernel bandwidth rule, ``scott`` or ``silverman`` (times the per-coordinate standard
            deviation of the N agents, with n = N − 1 others), or a fixed positive factor.
        min_bandwidth: floor of the bandwidth in state units (> 0), so that a population collapsed onto
            one point still has a finite kernel.
        nodes_per_bandwidth: grid nodes per (smallest) bandwidth along each axis (> 0): the binned
            density's accuracy knob (4: below 1% median relative error, see the README).
        max_grid_nodes: cap on the number of grid nodes over all episodes (>= 4); past it the grid
            is coarser than ``nodes_per_bandwidth`` asks for.
        kernel_radius: the kernel is truncated at this many bandwidths (> 0; 5: relative mass lost
            below 1e-6).
        chunk: agents per policy evaluation (>= 1): bounds the hidden activations' memory and keeps
            them in cache (4096 was fastest for a 2×128 MLP on one thread).
        deterministic: play the policy's mean action.
        exact_policy: evaluate an :class:`AveragePolicy` exactly as trained (tanh units) instead of the
            same network with logistic units (:func:`fast_policy`: equal to ~3e-6, twice as fast).
        record_states: keep every state, ``states [steps+1, E, N, d]`` in the result.
    """

    agents: int
    episodes: int = 1
    workers: int = 1
    seed: int = 0
    device: str = "cpu"
    rewards: bool = True
    steps: int | None = None
    density: str = "binned"
    bandwidth: str | float = "scott"
    min_bandwidth: float = 1e-3
    nodes_per_bandwidth: float = 4.0
    max_grid_nodes: int = 2 ** 22
    kernel_radius: float = 5.0
    chunk: int = 4096
    deterministic: bool = False
    exact_policy: bool = False
    record_states: bool = False

    def __post_init__(self) -> None:
        check_agents(self.agents)
        _check_integer("episodes", self.episodes, 1)
        check_workers(self.workers)
        if self.workers > self.agents:
            raise ValueError(f"workers must be <= agents (every shard needs an agent), got workers={self.workers}, "
                             f"agents={self.agents}")
        _check_integer("seed", self.seed, 0)
        if self.steps is not None:
            _check_integer("steps", self.steps, 1)
        if self.density not in DENSITY_METHODS:
            raise ValueError(f"density must be one of {DENSITY_METHODS}, got {self.density!r}")
        if self.density == "exact" and self.workers != 1:
            raise ValueError("density='exact' needs workers=1: the pairwise sum needs every agent in one shard")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string such as 'cpu' or 'cuda', got {self.device!r}")
        torch.device(self.device)        # raises on a malformed device string
        bandwidth_factor(self.bandwidth, 2, 1)
        if isinstance(self.bandwidth, str) and self.bandwidth not in BANDWIDTH_RULES:
            raise ValueError(f"bandwidth must be a positive number or one of {BANDWIDTH_RULES}, got {self.bandwidth!r}")
        for name in ("min_bandwidth", "nodes_per_bandwidth", "kernel_radius"):
            _check_positive(name, getattr(self, name))
        _check_integer("max_grid_nodes", self.max_grid_nodes, 4)
        _check_integer("chunk", self.chunk, 1)
