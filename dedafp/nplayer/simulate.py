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
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dedafp.agents.average_policy import AveragePolicy
from dedafp.agents.policy import Policy, act
from dedafp.experiments.distributed import check_address, check_backend, check_workers, ray_session
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import spec_of
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


def shard_sizes(agents: int, workers: int) -> list[int]:
    """Agents per shard: ``agents`` in ``workers`` contiguous shards, the first ``agents % workers`` one larger."""
    base, extra = divmod(check_agents(agents), check_workers(workers))
    return [base + (1 if s < extra else 0) for s in range(workers)]


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard ``shard``'s generator: independent streams per (seed, shard) via numpy's SeedSequence."""
    return int(np.random.SeedSequence([seed, shard]).generate_state(1, np.uint64)[0] >> np.uint64(1))


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


def _logistic_network(net: nn.Sequential) -> nn.Sequential | None:
    """The same function as a Linear/Tanh MLP with logistic hidden units, or None for another architecture.

    tanh(z) = 2σ(2z) − 1: each hidden layer's weights are doubled and the next layer absorbs the affine
    map s ↦ 2s − 1 (W (2s − 1) + b = 2W s + (b − W 1)).
    """
    layers = list(net)
    if len(layers) < 3 or len(layers) % 2 == 0:
        return None
    if not all(isinstance(m, nn.Linear) for m in layers[::2]) or not all(isinstance(m, nn.Tanh) for m in layers[1::2]):
        return None
    out: list[nn.Module] = []
    previous_was_hidden = False
    linears = layers[::2]
    for index, layer in enumerate(linears):
        weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
        if previous_was_hidden:
            bias, weight = bias - weight.sum(1), 2.0 * weight
        fresh = nn.Linear(layer.in_features, layer.out_features).to(weight.device)
        hidden = index < len(linears) - 1
        with torch.no_grad():
            fresh.weight.copy_(2.0 * weight if hidden else weight)
            fresh.bias.copy_(2.0 * bias if hidden else bias)
        out += [fresh, nn.Sigmoid()] if hidden else [fresh]
        previous_was_hidden = hidden
    return nn.Sequential(*out)


class FastAveragePolicy:
    """An :class:`AveragePolicy` evaluated for large rollouts: the same distribution up to rounding.

    Two changes, both measured on one CPU thread with torch 2.x: the hidden tanh units become logistic
    units (:func:`_logistic_network`; σ costs 0.8 ns per element against 4.5 ns for tanh), and a
    mixture's component is drawn by inverting its CDF with one uniform instead of ``log_softmax`` and
    ``multinomial`` (together 9 of 81 s of a 10⁶-agent four-rooms rollout, on ``[n, 3]`` weights).
    The output layout and the log-std clamp are :class:`AveragePolicy`'s. Measured on the committed runs'
    policies: mean actions within 3e-6 of the original's (physical units), standard deviations within 2e-5.
    """

    def __init__(self, policy: AveragePolicy, network: nn.Sequential) -> None:
        self.inner = copy.deepcopy(policy)
        self.inner.net = network
        self.game = policy.game
        self.action_bound = policy.action_bound
        self.action_dim = policy.action_dim

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std ``[n, action_dim]`` (physical units), as :meth:`AveragePolicy.distribution`."""
        return self.inner.distribution(t, x)

    @torch.no_grad()
    def sample(self, t: int, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Actions ``[n, action_dim]`` (physical units, unclipped) drawn from the mixture."""
        out = self.inner.net(self.game.observation(t, x.to(self.inner.device)))
        mean, log_std, logits = self.inner.split_output(out)
        if logits is not None:
            weights = (logits - logits.max(1, keepdim=True).values).exp()
            cdf = weights.cumsum(1)
            u = torch.rand(out.shape[0], 1, generator=generator, device=out.device) * cdf[:, -1:]
            component = (u > cdf[:, :-1]).sum(1)
            rows = torch.arange(out.shape[0], device=out.device)
            mean, log_std = mean[rows, component], log_std[rows, component]
        else:
            mean, log_std = mean[:, 0], log_std[:, 0]
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return (mean + log_std.exp() * noise) * self.action_bound


def fast_policy(policy: Policy) -> Policy:
    """:class:`FastAveragePolicy` for an :class:`AveragePolicy` with a Linear/Tanh network; any other policy as is."""
    if not isinstance(policy, AveragePolicy):
        return policy
    network = _logistic_network(policy.net)
    return policy if network is None else FastAveragePolicy(policy, network)


@torch.inference_mode()
def _chunked_actions(policy: Policy, t: int, x: Tensor, deterministic: bool, generator: torch.Generator,
                     chunk: int) -> Tensor:
    """``act`` over ``x`` ``[n, d]`` in chunks of ``chunk`` agents (same draws as one call when n <= chunk)."""
    if x.shape[0] <= chunk:
        return act(policy, t, x, deterministic, generator)
    return torch.cat([act(policy, t, x[i:i + chunk], deterministic, generator) for i in range(0, x.shape[0], chunk)])


# ---- statistics over agents (added across shards) ------------------------------------------------------

@dataclass(frozen=True)
class AgentSums:
    """Sums over a set of agents, per episode: what the shards report and the driver adds up.

    Attributes:
        count: agents summed over (per episode).
        first: Σ x, ``[E, d]`` float64.
        second: Σ x², ``[E, d]`` float64 (per coordinate).
    """

    count: int
    first: Tensor
    second: Tensor

    @staticmethod
    def of(x: Tensor) -> AgentSums:
        """The sums of states ``x`` ``[E, n, d]``."""
        x = x.double()
        return AgentSums(x.shape[1], x.sum(1), (x * x).sum(1))

    def __add__(self, other: AgentSums) -> AgentSums:
        return AgentSums(self.count + other.count, self.first + other.first.to(self.first.device),
                         self.second + other.second.to(self.second.device))

    def to(self, device: torch.device | str) -> AgentSums:
        return AgentSums(self.count, self.first.to(device), self.second.to(device))

    def std(self) -> Tensor:
        """Per-coordinate standard deviation (N − 1 in the denominator), ``[E, d]`` float64."""
        n = self.count
        mean = self.first / n
        return ((self.second - n * mean * mean) / max(n - 1, 1)).clamp_min(0.0).sqrt()


@dataclass(frozen=True)
class GridSpec:
    """The grid of the binned density at one step, shared by all shards.

    Attributes:
        low: lower corner of the grid (the domain's), ``d`` floats.
        spacing: distance between nodes along each axis, ``d`` floats (state units).
        nodes: nodes along each axis (node k of axis a sits at ``low[a] + k spacing[a]``).
        bandwidth: kernel bandwidth per episode and coordinate, ``[E, d]`` float64 (state units).
        kernels: per axis, the 1-D normalised Gaussian at the node offsets −r..r, ``[E, 2r + 1]`` float32
            (density units 1/length); their product is the d-dimensional kernel.
    """

    low: tuple[float, ...]
    spacing: tuple[float, ...]
    nodes: tuple[int, ...]
    bandwidth: Tensor
    kernels: tuple[Tensor, ...]

    @property
    def episodes(self) -> int:
        return self.bandwidth.shape[0]

    def to(self, device: torch.device | str) -> GridSpec:
        return GridSpec(self.low, self.spacing, self.nodes, self.bandwidth.to(device),
                        tuple(k.to(device) for k in self.kernels))

    def kernel_at(self, offset: int) -> Tensor:
        """The 1-D kernel values at ``offset`` nodes (0 or 1), ``[E, d]`` float64 (0 beyond the truncation)."""
        columns = []
        for kernel in self.kernels:
            r = (kernel.shape[1] - 1) // 2
            column = kernel[:, r + offset] if offset <= r else kernel.new_zeros(kernel.shape[0])
            columns.append(column.double())
        return torch.stack(columns, 1)


def kernel_bandwidth(sums: AgentSums, config: SimulationConfig) -> Tensor:
    """Bandwidth per episode and coordinate, ``[E, d]`` float64: ``bandwidth_factor(rule, N − 1, d)`` times
    the standard deviation of the N agents, floored at ``min_bandwidth``."""
    factor = bandwidth_factor(config.bandwidth, max(sums.count - 1, 1), sums.first.shape[1])
    return (factor * sums.std()).clamp_min(config.min_bandwidth)


def grid_spec(sums: AgentSums, low: Sequence[float], high: Sequence[float], config: SimulationConfig,
              device: torch.device | str = "cpu") -> GridSpec:
    """The grid for the states summarised by ``sums``, on the box ``[low, high]``.

    The bandwidth is :func:`kernel_bandwidth`; the spacing is the smallest bandwidth over
    ``nodes_per_bandwidth``, unless that would exceed ``max_grid_nodes`` over all episodes.
    """
    d = len(low)
    episodes = sums.first.shape[0]
    bandwidth = kernel_bandwidth(sums, config).to(device)                                 # [E, d]
    cap = max(3, int((config.max_grid_nodes / episodes) ** (1.0 / d)))
    nodes, spacing, kernels = [], [], []
    for k in range(d):
        width = float(high[k]) - float(low[k])
        wanted = math.ceil(config.nodes_per_bandwidth * width / float(bandwidth[:, k].min())) + 1
        count = min(max(wanted, 3), cap)
        step = width / (count - 1)
        radius = min(math.ceil(config.kernel_radius * float(bandwidth[:, k].max()) / step), count - 1)
        offsets = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64) * step
        h = bandwidth[:, k:k + 1]
        values = torch.exp(-0.5 * (offsets / h) ** 2) / (math.sqrt(2 * math.pi) * h)
        nodes.append(count)
        spacing.append(step)
        kernels.append(values.float())
    return GridSpec(tuple(float(v) for v in low), tuple(spacing), tuple(nodes), bandwidth, tuple(kernels))


@dataclass(frozen=True)
class Binning:
    """Where states ``[E, n, d]`` fall on a grid, for linear binning and the multilinear lookup.

    Attributes:
        base: flat index (C order, within the episode's grid) of each state's lower corner node, ``[E, n]``.
        frac: position between the lower and upper node along each axis, in [0, 1], ``[d, E, n]`` float64.
        strides: flat-index step of each axis.
    """

    base: Tensor
    frac: Tensor
    strides: tuple[int, ...]

    def corners(self) -> Iterator[tuple[Tensor, Tensor]]:
        """For each of the 2^d corners: flat node index ``[E, n]`` and multilinear weight ``[E, n]`` (sum 1)."""
        d = len(self.strides)
        for corner in itertools.product((0, 1), repeat=d):
            offset = sum(c * s for c, s in zip(corner, self.strides, strict=True))
            weight = self.frac[0] if corner[0] else 1.0 - self.frac[0]
            for k in range(1, d):
                weight = weight * (self.frac[k] if corner[k] else 1.0 - self.frac[k])
            yield self.base + offset, weight


def bin_states(x: Tensor, spec: GridSpec) -> Binning:
    """The :class:`Binning` of states ``x`` ``[E, n, d]`` (clamped into the grid's box)."""
    d = x.shape[2]
    strides = tuple(int(np.prod(spec.nodes[k + 1:])) for k in range(d))
    base = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)
    frac = torch.empty(d, *x.shape[:2], dtype=torch.float64, device=x.device)
    for k in range(d):
        u = ((x[..., k].double() - spec.low[k]) / spec.spacing[k]).clamp(0.0, spec.nodes[k] - 1)
        lower = u.floor().clamp(max=spec.nodes[k] - 2)
        frac[k] = u - lower
        base += lower.long() * strides[k]
    return Binning(base, frac, strides)


def histogram(binning: Binning, spec: GridSpec) -> Tensor:
    """Linearly binned counts on the grid: ``[E, *nodes]`` float64, mass n per episode."""
    episodes, size = spec.episodes, int(np.prod(spec.nodes))
    counts = torch.zeros(episodes * size, dtype=torch.float64, device=binning.base.device)
    offset = torch.arange(episodes, device=binning.base.device).unsqueeze(1) * size
    for index, weight in binning.corners():
        counts.index_add_(0, (index + offset).reshape(-1), weight.reshape(-1))
    return counts.reshape(episodes, *spec.nodes)


def smooth(counts: Tensor, spec: GridSpec) -> Tensor:
    """The kernel sum at every node, Σ_c counts[e, c] Π_k kernel_k[e](node_k − c_k): ``[E, *nodes]`` float32.

    One 1-D convolution per axis (the kernel is a product); each episode has its own kernel (grouped
    convolution). float32: float64 convolutions were 6× slower here, and the result is an approximation anyway.
    """
    out = counts.float()
    episodes = spec.episodes
    for axis, kernel in enumerate(spec.kernels, start=1):
        moved = out.movedim(axis, -1).movedim(0, -2)                      # [..., E, G_axis]
        shape = moved.shape
        radius = (kernel.shape[1] - 1) // 2
        conv = F.conv1d(moved.reshape(-1, episodes, shape[-1]), kernel.unsqueeze(1), padding=radius, groups=episodes)
        out = conv.reshape(shape).movedim(-2, 0).movedim(-1, axis)
    return out.contiguous()


def binned_others_log_density(binning: Binning, spec: GridSpec, smoothed: Tensor, agents: int) -> Tensor:
    """log μ^{-i}(x_i) of every binned agent from the smoothed grid of *all* N agents: ``[E, n]`` float64.

    The multilinear lookup of the smoothed grid at x_i is the binned version of Σ_j K_h(x_i − x_j); the
    agent's own term is removed *as binned* (Σ_{c,c'} w_i(c) w_i(c') K(c − c'), a product over axes of
    ((1−f)² + f²) k(0) + 2 f (1−f) k(Δ)), so that it cancels exactly up to rounding. Negative rounding
    residues are clipped to 0 (log-density −inf, which the games' rewards floor with ε).
    """
    flat = smoothed.reshape(spec.episodes, -1)
    total = torch.zeros(binning.base.shape, dtype=torch.float64, device=binning.base.device)
    for index, weight in binning.corners():
        total += weight * torch.gather(flat, 1, index).double()
    centre, neighbour = spec.kernel_at(0), spec.kernel_at(1)               # [E, d]
    own = torch.ones_like(total)
    for k, f in enumerate(binning.frac):
        own *= ((1 - f) ** 2 + f ** 2) * centre[:, k:k + 1] + 2 * f * (1 - f) * neighbour[:, k:k + 1]
    return ((total - own).clamp_min(0.0) / (agents - 1)).log()


def empirical_log_density(x: Tensor, config: SimulationConfig, low: Sequence[float],
                          high: Sequence[float]) -> tuple[Tensor, GridSpec]:
    """The whole binned pipeline on one set of states ``x`` ``[E, N, d]`` (all agents of every game).

    Returns every agent's log μ^{-i}(x_i) ``[E, N]`` float64 and the grid used; what :func:`simulate`
    computes, with the sums and counts of the shards added first.
    """
    spec = grid_spec(AgentSums.of(x), low, high, config, x.device)
    binning = bin_states(x, spec)
    return binned_others_log_density(binning, spec, smooth(histogram(binning, spec), spec), x.shape[1]), spec


def exact_others_log_density(x: Tensor, bandwidth: Tensor, block: int = 2 ** 22) -> Tensor:
    """The exact leave-one-out log kernel density of every agent: O(n²) per game, float64.

    log((n − 1)⁻¹ Σ_{j≠i} Π_k φ((x_ik − x_jk) / h_k) / h_k) for states ``x`` ``[n, d]`` with ``bandwidth``
    h ``[d]`` (returns ``[n]``), or for E games at once, ``x`` ``[E, n, d]`` and h ``[E, d]`` (returns
    ``[E, n]``). The reference for :func:`binned_others_log_density`; pair blocks of at most ``block``
    entries bound the memory.
    """
    if x.ndim == 2:
        return exact_others_log_density(x.unsqueeze(0), bandwidth.reshape(1, -1), block)[0]
    h = bandwidth.double().to(x.device)                                        # [E, d]
    z = x.double() / h.unsqueeze(1)                                            # [E, n, d]
    episodes, n, d = z.shape
    const = -torch.log(h).sum(1, keepdim=True) - 0.5 * d * math.log(2 * math.pi) - math.log(n - 1)
    out = torch.empty(episodes, n, dtype=torch.float64, device=x.device)
    rows = max(1, block // (episodes * n))
    for start in range(0, n, rows):
        pairs = -0.5 * torch.cdist(z[:, start:start + rows], z).square()         # [E, rows, n]
        own = torch.arange(pairs.shape[1], device=x.device)
        pairs[:, own, start + own] = -math.inf
        out[:, start:start + rows] = torch.logsumexp(pairs, 2)
    return out + const


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
def _ray_shards(game: MeanFieldGame, policy: Policy, config: SimulationConfig, deviator: Policy | None,
                field: Any, address: str | None) -> Iterator[_RayShards]:
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
def _local_shards(game: MeanFieldGame, policy: Policy, config: SimulationConfig, deviator: Policy | None,
                  field: Any) -> Iterator[_LocalShards]:
    yield _LocalShards([AgentShard(game, policy, config, s, deviator, field) for s in range(config.workers)])


# ---- the driver -------------------------------------------------------------------------------------

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
    opened = (_local_shards(game, policy, config, deviator, field) if backend == "local"
              else _ray_shards(game, policy, config, deviator, field, address))
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
