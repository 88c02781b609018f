"""Building the grid game (:func:`build_grid`): free cells, velocity lattice, transition kernel, initial mass.

The transition kernel of each velocity integrates the game's own Gaussian step over the target cells:
the source cell is sub-sampled (``source_points`` per dimension), the target window is cut into
sub-cells (``target_points`` per dimension) whose Gaussian mass is exact (products of normal CDF
differences), and the game's own move rule (``move``: walls for four-rooms, reflection for the beach
bar) decides, from each source point to each sub-cell centre, where that mass lands.

Usage::

    from dedafp.envs.four_rooms import FourRoomsGame
    grid = build_grid(FourRoomsGame(), default_grid_config("four_rooms"))
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import ndtr

from dedafp.reference.grid import GridConfig, GridGame, GridMFG, flat_cell_index

logger = logging.getLogger(__name__)


def _lattice_line(config: GridConfig, bound: float) -> np.ndarray:
    """The velocities of one action dimension: ``config.velocities`` points evenly on [-bound, bound]."""
    return np.linspace(-bound, bound, config.velocities) if config.velocities > 1 else np.zeros(1)


def _lattice(config: GridConfig, bound: float, dim: int) -> np.ndarray:
    """The velocity lattice ``[A, dim]``, dimension 0 slowest."""
    line = _lattice_line(config, bound)
    return np.stack(np.meshgrid(*[line] * dim, indexing="ij"), -1).reshape(-1, dim)


def _free_cells(game: GridGame, config: GridConfig) -> np.ndarray:
    """Coordinates ``[S, d]`` of the free cells, x fastest; raises if a cell is partly a wall."""
    n, d = config.cells, game.state_dim
    h = 1.0 / n
    coords = np.stack(np.meshgrid(*[np.arange(n)] * d, indexing="ij"), -1).reshape(-1, d)[:, ::-1]
    # Test points: a grid of 4 per dimension, from just inside one face to just inside the other.
    offsets = np.linspace(1e-6, 1 - 1e-6, 4)
    probe = np.stack(np.meshgrid(*[offsets] * d, indexing="ij"), -1).reshape(-1, d)
    points = (coords[:, None, :] + probe[None]) * h
    free = game.in_free_space(torch.as_tensor(points.reshape(-1, d))).numpy().reshape(len(coords), -1)
    mixed = free.any(1) & ~free.all(1)
    if mixed.any():
        raise ValueError(f"cells={n} cuts {int(mixed.sum())} cells across a wall of {game.name}; use a number "
                         "of cells that puts every wall on cell boundaries (for four_rooms: a multiple of 11)")
    return np.ascontiguousarray(coords[free.all(1)])


def _initial_mass(game: GridGame, cell_coords: np.ndarray, h: float) -> np.ndarray:
    """Mass of the uniform initial law in each cell (exact overlap of axis-aligned boxes)."""
    low = np.atleast_1d(np.asarray(game.config.init_low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(game.config.init_high, dtype=np.float64))
    lo_cell = cell_coords * h
    overlap = np.clip(np.minimum(lo_cell + h, high) - np.maximum(lo_cell, low), 0.0, None)
    mass = np.prod(overlap / (high - low), axis=1)
    if not math.isclose(mass.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"the initial box of {game.name} puts mass {mass.sum():.6f} on free cells, not 1")
    return mass


def build_grid(game: GridGame, config: GridConfig, chunk_points: int = 1_000_000) -> GridMFG:
    """Discretise ``game`` on the grid of ``config``: free cells, velocity lattice, kernel, initial mass.

    Args:
        game: a game with the :class:`GridGame` methods (``FourRoomsGame``, ``BeachBarGame``).
        config: the discretisation.
        chunk_points: (source point, sub-cell) pairs whose move is resolved in one batch (memory bound).
            Moves are resolved in float32: every point is at least h / (2 max(source_points,
            target_points)) away from a cell boundary.

    Returns:
        The grid game, with a CSR kernel whose rows sum to 1.
    """
    started = time.perf_counter()
    d, n = game.state_dim, config.cells
    if not 1 <= d <= 3 or game.action_dim != d:
        raise ValueError(f"the grid solver needs state_dim = action_dim in 1..3, got {d} and {game.action_dim}")
    noise = float(game.config.noise_scale)
    if not noise > 0:
        raise ValueError(f"the grid kernel integrates a Gaussian step; {game.name} needs sigma > 0, got noise "
                         f"scale {noise}")
    h, dt = 1.0 / n, float(game.config.dt)
    q, r = config.source_points, config.target_points
    cell_coords = _free_cells(game, config)
    num_states = len(cell_coords)
    velocities = _lattice(config, game.action_bound, d)
    line = _lattice_line(config, game.action_bound)

    # Window of target cells around the source cell: the largest drift plus `tail` noise deviations.
    radius = math.ceil((game.action_bound * dt + config.tail * noise) / h) + 1
    side = 2 * radius + 1
    window_cells = side ** d
    edges = (-radius + np.arange(side * r + 1) / r) * h                   # sub-cell edges, 1-D
    source = (np.arange(q) + 0.5) / q * h                                  # source offsets, 1-D
    # 1-D Gaussian masses of the sub-cells, [q, velocities, side * r], exact and renormalised.
    z = (edges[None, None, :] - source[:, None, None] - line[None, :, None] * dt) / noise
    mass_1d = np.diff(ndtr(z), axis=-1)
    mass_1d /= mass_1d.sum(-1, keepdims=True)
    # Per action, the weight of (source point j, sub-cell k), j and k flattened with dim 0 slowest.
    lattice_index = np.stack(np.meshgrid(*[np.arange(config.velocities)] * d, indexing="ij"), -1).reshape(-1, d)
    weights = []
    for index in lattice_index:
        w = mass_1d[:, index[0], :]
        for k in range(1, d):
            w = np.multiply.outer(w, mass_1d[:, index[k], :])              # [q, K, q, K, ...]
        axes = list(range(0, 2 * d, 2)) + list(range(1, 2 * d, 2))
        weights.append(w.transpose(axes).reshape(q ** d, -1) / q ** d)
    weights = np.stack(weights)                                            # [A, q^d, (side r)^d]

    def grid_of(values: np.ndarray) -> np.ndarray:
        return np.stack(np.meshgrid(*[values] * d, indexing="ij"), -1).reshape(-1, d)

    source_points = grid_of(source)                                        # [q^d, d], offsets in the cell
    sub_centres = grid_of((edges[:-1] + edges[1:]) / 2)                    # [(side r)^d, d], from the cell corner
    lookup = np.full(n ** d, -1, dtype=np.int64)                           # flat cell -> state
    lookup[flat_cell_index(cell_coords, n)] = np.arange(num_states)
    pairs_per_cell = len(source_points) * len(sub_centres)
    cells_per_chunk = max(1, chunk_points // pairs_per_cell)
    weights_t = weights.reshape(len(velocities), pairs_per_cell).T.copy()  # [q^d K, A]
    source_t = torch.as_tensor(source_points, dtype=torch.float32)
    sub_t = torch.as_tensor(sub_centres, dtype=torch.float32)
    place = torch.as_tensor(side ** np.arange(d - 1, -1, -1))             # window offset -> flat, dim 0 slowest
    rows, cols, vals = [], [], []
    for lo in range(0, num_states, cells_per_chunk):
        coords = cell_coords[lo:lo + cells_per_chunk]                      # [c, d]
        c = len(coords)
        coords_t = torch.as_tensor(coords)
        corner = coords_t.float() * h
        start = (corner[:, None, None, :] + source_t[None, :, None, :]).expand(c, len(source_t), len(sub_t), d)
        target = (corner[:, None, None, :] + sub_t[None, None, :, :]).expand(c, len(source_t), len(sub_t), d)
        landed = game.move(start.reshape(-1, d), target.reshape(-1, d))
        landed_coords = torch.floor(landed.double() / h).long().clamp_(0, n - 1)
        offset = landed_coords.reshape(c, pairs_per_cell, d) - coords_t[:, None, :] + radius
        if offset.min() < 0 or offset.max() >= side:
            raise AssertionError("a move landed outside the kernel window")
        key = (torch.arange(c)[:, None] * window_cells + (offset * place).sum(-1)).reshape(-1).numpy()
        # Mass from each source cell to each window cell, for every velocity at once.
        incidence = sp.csr_matrix((np.ones(key.size), (key, np.tile(np.arange(pairs_per_cell), c))),
                                  shape=(c * window_cells, pairs_per_cell))
        totals = np.asarray(incidence @ weights_t)                          # [c * window, A]
        flat, action = np.nonzero(totals > config.prune)
        cell, off = np.divmod(flat, window_cells)
        dest = coords[cell] + np.stack(np.unravel_index(off, (side,) * d), -1) - radius
        inside = np.all((dest >= 0) & (dest < n), axis=1)
        dest_state = np.where(inside, lookup[flat_cell_index(np.clip(dest, 0, n - 1), n)], -1)
        if (dest_state < 0).any():
            raise AssertionError("kernel mass landed in a wall or outside the grid")
        rows.append((lo + cell) * len(velocities) + action)
        cols.append(dest_state)
        vals.append(totals[flat, action])
    kernel = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(num_states * len(velocities), num_states))
    row_sums = np.asarray(kernel.sum(1)).ravel()
    kernel = sp.diags(1.0 / row_sums) @ kernel                             # undo pruning: rows sum to 1
    kernel = kernel.tocsr()
    seconds = time.perf_counter() - started
    logger.info("grid kernel for %s: %d states x %d velocities, %d entries, pruned mass <= %.1e, %.2f s",
                game.name, num_states, len(velocities), kernel.nnz, float(1 - row_sums.min()), seconds)
    return GridMFG(game, config, cell_coords, velocities, kernel, _initial_mass(game, cell_coords, h), seconds)
