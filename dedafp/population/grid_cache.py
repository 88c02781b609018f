"""A population model whose log-density is tabulated on a grid once, then interpolated.

A density-dependent reward asks the population model for ``log μ_t(x)`` at every vector step of a
best response: hundreds of thousands of small queries against a model that changes only once per
fictitious-play iteration. :class:`GridCachedPopulation` evaluates the wrapped model's ``log_prob``
at the centres of a regular grid over a box for every t (one large batched pass, done when the
wrapper is built, i.e. once per flow refit), and answers later queries by multilinear
interpolation of that table: a gather and a few multiply-adds per point, whatever the wrapped model.

Error: for a log-density with bounded second derivatives, multilinear interpolation between cell
centres is off by at most ``Σ_i h_i² max|∂²_i log μ| / 8`` inside the centres' range (``h_i`` the
cell width along axis i; mixed derivatives cost nothing, multilinear interpolation reproduces
``x_i x_j`` exactly), and by at most three times that in the outer half cell, where it extrapolates
linearly. Where the wrapped density has sharp edges (walls, the box boundary) the error is larger:
measure it (``dedafp bench sampling`` reports it for the four-rooms flow) before relying on it.
Points outside the box are answered by the wrapped model itself, exactly. Tabulated values are
floored at ``LOG_FLOOR`` (-80 nats).

Usage::

    cached = GridCachedPopulation(flow, low=(0.0, 0.0), high=(1.0, 1.0), cells=88)   # one pass over the grid
    cached.log_prob(x, t)          # [n], interpolated; sample() and mean() are the flow's own
    rewards = reward_table(flow, game.domain, nodes=8192)   # the same where the game's domain allows it
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from dedafp.population.base import PopulationModel

__all__ = ["GridCachedPopulation", "TabulatedFunction", "reward_table", "cell_centres", "interpolate", "MAX_NODES",
           "LOG_FLOOR"]

#: Largest number of grid nodes per time (a 3-D grid of 160³ is already 16 MB per t in float32).
MAX_NODES = 4_194_304
#: Tabulated log-densities are floored here (density e^-80 ≈ 2e-35): an infinite entry would turn
#: the interpolation weights' zeros into NaN.
LOG_FLOOR = -80.0


class GridCachedPopulation(PopulationModel):
    """``log μ_t`` of ``population`` at the centres of a regular grid on ``[low, high]``, interpolated.

    Args:
        population: the model to tabulate (any :class:`PopulationModel`); ``sample`` and ``mean``
            are delegated to it unchanged.
        low: lower corner of the box, length ``dim``.
        high: upper corner of the box, length ``dim`` (componentwise above ``low``).
        cells: cells per axis (one int for every axis, or one per axis), each >= 2.
        chunk: grid points per ``log_prob`` call of the wrapped model while building (memory bound).

    Attributes:
        table: ``[horizon + 1, *cells]`` float32, ``log μ_t`` at the cell centres.
        build_seconds: wall-clock of building the table.
    """

    def __init__(self, population: PopulationModel, low: Sequence[float], high: Sequence[float],
                 cells: int | Sequence[int], chunk: int = 65_536) -> None:
        dim = population.dim
        low_t = torch.as_tensor([float(v) for v in low], dtype=torch.float32)
        high_t = torch.as_tensor([float(v) for v in high], dtype=torch.float32)
        if low_t.shape != (dim,) or high_t.shape != (dim,):
            raise ValueError(f"low and high must have length dim={dim}, got {len(low)} and {len(high)}")
        if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all() and (low_t < high_t).all()):
            raise ValueError(f"low must be finite and below high coordinate-wise, got {list(low)} and {list(high)}")
        shape = (cells,) * dim if isinstance(cells, int) else tuple(cells)
        if len(shape) != dim or any(isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in shape):
            raise ValueError(f"cells must be an integer >= 2 or {dim} such integers, got {cells!r}")
        if math.prod(shape) > MAX_NODES:
            raise ValueError(f"a grid of {shape} has {math.prod(shape):,} nodes per t; at most {MAX_NODES:,} "
                             "are allowed (use fewer cells)")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.population = population
        self.dim = dim
        self.horizon = population.horizon
        self.cells = shape
        device = population.device
        self.low = low_t.to(device)
        self.high = high_t.to(device)
        self.spacing = (self.high - self.low) / torch.tensor(shape, dtype=torch.float32, device=device)
        start = time.perf_counter()
        self.table = self._tabulate(chunk)
        self.build_seconds = time.perf_counter() - start

    @property
    def device(self) -> torch.device:
        return self.population.device

    def centres(self) -> Tensor:
        """The grid's cell centres, ``[prod(cells), dim]``, in the table's (row-major) order."""
        return cell_centres(self.low, self.spacing, self.cells)

    @torch.no_grad()
    def _tabulate(self, chunk: int) -> Tensor:
        nodes = self.centres()
        rows = []
        for t in range(self.horizon + 1):
            rows.append(torch.cat([self.population.log_prob(nodes[i:i + chunk], t).float()
                                   for i in range(0, nodes.shape[0], chunk)]))
        table = torch.stack(rows)
        if torch.isnan(table).any():
            raise FloatingPointError("the wrapped population model returned NaN log-densities on the grid")
        return table.clamp_min(LOG_FLOOR).reshape(self.horizon + 1, *self.cells)

    # ---- PopulationModel ----------------------------------------------------------------------

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        """Interpolated ``log μ_t(x)`` for ``x`` ``[n, dim]`` inside the box (exact outside). Returns ``[n]``."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [n, {self.dim}], got {tuple(x.shape)}")
        x = x.to(self.device, torch.float32)
        times = torch.as_tensor(t, device=self.device).long().expand(x.shape[0])
        if x.shape[0] and (times.min() < 0 or times.max() > self.horizon):
            raise ValueError(f"t must be in 0..{self.horizon}")
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        out = self._interpolate(x, times)
        if not bool(inside.all()):
            out[~inside] = self.population.log_prob(x[~inside], times[~inside]).to(out)
        return out

    def _interpolate(self, x: Tensor, times: Tensor) -> Tensor:
        flat_table = self.table.reshape(self.horizon + 1, -1)
        return interpolate(x, self.low, self.spacing, self.cells, lambda index: flat_table[times, index])

    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Samples of the wrapped model (the cache only changes densities). Returns ``[n, dim]``."""
        return self.population.sample(t, n, generator)

    def mean(self, t: int) -> Tensor:
        """Mean of the wrapped model's μ_t. Returns ``[dim]``."""
        return self.population.mean(t)

    def state_dict(self) -> dict:
        """The wrapped model's state: the table is derived data, rebuilt by wrapping the model again."""
        return self.population.state_dict()


def cell_centres(low: Tensor, spacing: Tensor, cells: Sequence[int]) -> Tensor:
    """The centres ``[prod(cells), dim]`` of a regular grid from ``low`` with cell widths ``spacing``, row-major."""
    axes = [low[i] + (torch.arange(c, device=low.device, dtype=torch.float32) + 0.5) * spacing[i]
            for i, c in enumerate(cells)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(cells))


def interpolate(x: Tensor, low: Tensor, spacing: Tensor, cells: Sequence[int],
                gather: Callable[[Tensor], Tensor]) -> Tensor:
    """Multilinear interpolation ``[n, ...]`` at ``x`` ``[n, dim]`` between the cell centres of a row-major table,
    read as ``gather(flat_index)`` (``[n, ...]`` for ``[n]`` indices)."""
    shape = torch.tensor(list(cells), device=x.device)
    strides = torch.tensor([math.prod(cells[i + 1:]) for i in range(len(cells))], device=x.device)
    # Continuous index in units of cells, 0 at the first centre; the lower corner is clamped so
    # that the outer half cells extrapolate linearly from the last two centres.
    u = (x - low) / spacing - 0.5
    lower = torch.floor(u).long().clamp(min=torch.zeros_like(shape), max=shape - 2)
    frac = u - lower
    out: Tensor | float = 0.0
    for corner in itertools.product((0, 1), repeat=len(cells)):
        offset = torch.tensor(corner, device=x.device)
        weight = torch.where(offset.bool(), frac, 1.0 - frac).prod(-1)
        value = gather(((lower + offset) * strides).sum(-1))
        out = out + weight.reshape(-1, *(1,) * (value.dim() - 1)) * value
    return torch.as_tensor(out)


class TabulatedFunction:
    """A function of the state ``[n, dim] -> [n]`` (or ``[n, h]``) tabulated at the cell centres of a box once, then
    interpolated like :class:`GridCachedPopulation` (the same error bound; exact outside the box).

    For a network read millions of times between refits, e.g. a value function in a lookahead policy.
    """

    def __init__(self, function: Callable[[Tensor], Tensor], low: Sequence[float], high: Sequence[float],
                 cells: int, device: torch.device | str = "cpu", chunk: int = 65_536) -> None:
        self.function = function
        self.low = torch.as_tensor([float(v) for v in low], dtype=torch.float32, device=device)
        high_t = torch.as_tensor([float(v) for v in high], dtype=torch.float32, device=device)
        self.cells = (cells,) * self.low.numel()
        if cells < 2 or math.prod(self.cells) > MAX_NODES:
            raise ValueError(f"cells must give 2 to {MAX_NODES:,} nodes, got {cells} per axis")
        self.high = high_t
        self.spacing = (high_t - self.low) / cells
        nodes = cell_centres(self.low, self.spacing, self.cells)
        with torch.no_grad():
            self.table = torch.cat([function(nodes[i:i + chunk]).float() for i in range(0, nodes.shape[0], chunk)])

    def __call__(self, x: Tensor) -> Tensor:
        out = interpolate(x, self.low, self.spacing, self.cells, lambda index: self.table[index])
        outside = ~((x >= self.low) & (x <= self.high)).all(-1)
        if bool(outside.any()):
            out[outside] = self.function(x[outside]).to(out)
        return out


def reward_table(population: PopulationModel, domain: Any, nodes: int) -> PopulationModel:
    """``population`` tabulated with about ``nodes`` nodes per t on ``domain``'s box, where that pays.

    ``domain`` is a game's :class:`~dedafp.envs.base.Domain` (``kind``, ``low``, ``high``). The table is
    built on bounded (box or periodic) domains of at most 3 dimensions, ``round(nodes ** (1 / dim))``
    cells per axis; elsewhere, with ``nodes = 0``, or for a model that is already a table, the
    population is returned as is. On a periodic domain the outer half cells extrapolate instead of
    wrapping (an error of the order of the interpolation's own within half a cell of the seam).
    """
    if nodes == 0 or domain.kind == "euclidean" or population.dim > 3 or isinstance(population, GridCachedPopulation):
        return population
    cells = max(2, round(nodes ** (1.0 / population.dim)))
    return GridCachedPopulation(population, domain.low, domain.high, cells)
