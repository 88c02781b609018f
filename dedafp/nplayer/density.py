"""The others' kernel density of the N-player game, O(N + G): linear binning, a separable smoothing, a lookup.

Agent i of a density game feels μ^{-i}(x_i) = (N − 1)⁻¹ Σ_{j≠i} K_h(x_i − x_j), a Gaussian kernel sum with
the diagonal bandwidth of :func:`kernel_bandwidth`. :func:`grid_spec` chooses the grid, :func:`bin_states`
and :func:`histogram` bin the states linearly, :func:`smooth` convolves the counts with the kernel axis by
axis, and :func:`binned_others_log_density` looks every agent up and removes its own binned term;
:func:`exact_others_log_density` is the pairwise O(N²) reference. :class:`AgentSums` are the sums over
agents (count, Σx, Σx²) that shards report and the bandwidth is computed from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dedafp.nplayer.config import SimulationConfig
from dedafp.population.particles import bandwidth_factor

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
