"""Grid reference solver for the density-coupled games (``four_rooms``, ``beach_bar``).

The continuous game is discretised on a regular grid of the unit box (``cells`` per dimension, wall
cells dropped) with a finite lattice of velocities (``velocities`` per action dimension, 0 included).
The transition kernel of each velocity integrates the game's own Gaussian step over the target
cells: the source cell is sub-sampled (``source_points`` per dimension), the target window is cut into
sub-cells (``target_points`` per dimension) whose Gaussian mass is exact (products of normal CDF
differences), and the game's own move rule (:meth:`move`: walls for four-rooms, reflection for the
beach bar) decides, from each source point to each sub-cell centre, where that mass lands. Everything
after the kernel is exact on the grid: forward propagation of a policy's mass, backward induction
(policy evaluation and best response), exploitability, fictitious play and online mirror descent.
The density of a cell is its mass divided by its area (walls have no cells, hence no mass).

Usage::

    from dedafp.envs.four_rooms import FourRoomsGame
    from dedafp.reference.grid import GridConfig, GridMirrorDescent, build_grid
    grid = build_grid(FourRoomsGame(), GridConfig(cells=44))
    grid.exploitability(grid.uniform_policy()).exploitability    # the random policy
    solver = GridMirrorDescent(grid)
    records = [solver.iteration() for _ in range(300)]            # records[-1].exploitability ~ 0
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Protocol, final

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import ndtr
from torch import Tensor

from dedafp.envs.base import check_overrides
from dedafp.population.base import PopulationModel

logger = logging.getLogger(__name__)


class GridGame(Protocol):
    """What the grid solver needs from a game (``FourRoomsGame`` and ``BeachBarGame`` provide it).

    The state space is the unit box [0, 1]^state_dim; ``config`` has ``dt``, ``noise_scale``,
    ``init_low`` and ``init_high`` (the box of the uniform initial law).
    """

    name: str
    state_dim: int
    action_dim: int
    horizon: int
    action_bound: float
    config: Any
    region_names: tuple[str, ...]

    def move(self, x: Tensor, proposal: Tensor) -> Tensor:
        """Where each proposal ``x + a dt + noise`` lands, ``[n, d]``."""
        ...

    def reward_given_log_density(self, x: Tensor, a: Tensor, log_density: Tensor) -> Tensor:
        """Running reward ``[n]``."""
        ...

    def terminal_reward_given_log_density(self, x: Tensor, log_density: Tensor) -> Tensor:
        """Terminal reward ``[n]``."""
        ...

    def in_free_space(self, x: Tensor) -> Tensor:
        """Bool ``[n]``: inside the domain and not in a wall."""
        ...

    def region_index(self, x: Tensor) -> Tensor:
        """Index into ``region_names`` per point, -1 outside the free space."""
        ...


@dataclass(frozen=True)
class GridConfig:
    """Discretisation of a game on a grid; :func:`default_grid_config` gives each game's default.

    Attributes:
        cells: cells per dimension (integer >= 2); four-rooms needs a multiple of 11 so walls are whole cells.
        velocities: lattice points per action dimension, evenly spaced on [-action_bound, action_bound]
            (odd integer >= 1, so that 0 is one of them).
        source_points: sub-points per dimension at which a source cell is sampled (integer >= 1).
        target_points: sub-cells per dimension of a target cell, where the move rule is evaluated (integer >= 1).
        tail: the target window reaches ``tail`` noise standard deviations past the largest drift (> 0).
        prune: kernel entries below this probability are dropped and rows renormalised (in [0, 1e-3]).
    """

    cells: int
    velocities: int = 5
    source_points: int = 2
    target_points: int = 2
    tail: float = 5.0
    prune: float = 1e-9

    def __post_init__(self) -> None:
        for name, low in (("cells", 2), ("source_points", 1), ("target_points", 1), ("velocities", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.velocities % 2 == 0:
            raise ValueError(f"velocities must be odd (so that 0 is on the lattice), got {self.velocities}")
        if isinstance(self.tail, bool) or not isinstance(self.tail, (int, float)) or not self.tail > 0:
            raise ValueError(f"tail must be a number > 0, got {self.tail!r}")
        if self.tail < 4:
            warnings.warn(f"tail={self.tail} cuts the Gaussian step at {self.tail} standard deviations; the "
                          f"renormalised kernel then misplaces up to {2 * ndtr(-self.tail):.1e} of the mass per "
                          f"step. Use tail >= 4.", stacklevel=2)
        if isinstance(self.prune, bool) or not isinstance(self.prune, (int, float)) or not 0 <= self.prune <= 1e-3:
            raise ValueError(f"prune must be a number in [0, 1e-3], got {self.prune!r}")

    def replace(self, **changes: Any) -> GridConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def default_grid_config(game_name: str, **overrides: Any) -> GridConfig:
    """The reference grid the game's spec declares (``GameSpec.grid``), with some fields overridden."""
    from dedafp.envs.registry import game_spec

    grid = game_spec(game_name).grid
    if grid is None:
        raise ValueError(f"game {game_name!r} declares no reference grid (GameSpec.grid)")
    check_overrides(GridConfig, "grid", overrides)
    return GridConfig(**grid).replace(**overrides)


@dataclass(frozen=True)
class Exploitability:
    """Exact exploitability of a grid policy against its own flow.

    Attributes:
        exploitability: ``best_response_value - policy_value`` (>= 0 up to rounding).
        policy_value: expected total reward of the policy, J(π; μ^π).
        best_response_value: expected total reward of the best response to μ^π.
        mass: μ^π, the policy's flow of cell masses, ``[T+1, S]``.
        best_response: the best response's action index per (t, state), ``[T, S]``.
    """

    exploitability: float
    policy_value: float
    best_response_value: float
    mass: np.ndarray
    best_response: np.ndarray


@final
class GridMFG:
    """A game discretised on a grid: kernel, initial mass and exact dynamic programming.

    Build it with :func:`build_grid`. States are the free cells (``num_states`` = S), actions the
    velocity lattice (``num_actions`` = A). Policies are arrays ``[T, S, A]`` of probabilities, flows
    arrays ``[T+1, S]`` of cell masses.

    Attributes:
        game: the game it discretises.
        config: the grid configuration.
        cell_width: h = 1 / cells.
        cell_area: h^d (the density of a cell is its mass / cell_area).
        cell_coords: integer coordinates of each state's cell, ``[S, d]``.
        centres: centre of each state's cell, ``[S, d]``.
        state_of_cell: state index of every cell of the full grid (flat index, x fastest), -1 for walls.
        velocities: the velocity lattice, ``[A, d]``.
        kernel: CSR ``[S * A, S]``; row ``s * A + a`` is the law of the next cell from ``s`` under ``a``.
        kernel_t: its transpose as CSR ``[S, S * A]`` (forward propagation).
        initial_mass: μ_0 on the grid, ``[S]``.
        build_seconds: wall time of the kernel build.
    """

    def __init__(self, game: GridGame, config: GridConfig, cell_coords: np.ndarray, velocities: np.ndarray,
                 kernel: sp.csr_matrix, initial_mass: np.ndarray, build_seconds: float) -> None:
        self.game = game
        self.config = config
        self.dim = game.state_dim
        self.horizon = game.horizon
        self.cell_width = 1.0 / config.cells
        self.cell_area = self.cell_width ** self.dim
        self.cell_coords = cell_coords
        self.centres = (cell_coords + 0.5) * self.cell_width
        self.velocities = velocities
        self.num_states = cell_coords.shape[0]
        self.num_actions = velocities.shape[0]
        self.state_of_cell = np.full(config.cells ** self.dim, -1, dtype=np.int64)
        self.state_of_cell[flat_cell_index(cell_coords, config.cells)] = np.arange(self.num_states)
        self.kernel = kernel
        self.kernel_t = kernel.T.tocsr()
        self.initial_mass = initial_mass
        self.build_seconds = build_seconds

    # ---- dynamics and values ----------------------------------------------------------------

    def uniform_policy(self) -> np.ndarray:
        """The uniformly random policy over the velocity lattice, ``[T, S, A]``."""
        return np.full((self.horizon, self.num_states, self.num_actions), 1.0 / self.num_actions)

    def check_policy(self, policy: np.ndarray) -> np.ndarray:
        """``policy`` as float64 after checking its shape ``[T, S, A]`` and that rows are distributions."""
        policy = np.asarray(policy, dtype=np.float64)
        expected = (self.horizon, self.num_states, self.num_actions)
        if policy.shape != expected:
            raise ValueError(f"policy must have shape [T, S, A] = {expected}, got {policy.shape}")
        if policy.min() < -1e-12 or not np.allclose(policy.sum(-1), 1.0, atol=1e-9):
            raise ValueError("policy rows must be probability distributions over the velocity lattice")
        return policy

    def forward(self, policy: np.ndarray) -> np.ndarray:
        """The flow of cell masses μ_0..μ_T of a population playing ``policy``. Returns ``[T+1, S]``."""
        policy = self.check_policy(policy)
        mass = np.empty((self.horizon + 1, self.num_states))
        mass[0] = self.initial_mass
        for t in range(self.horizon):
            mass[t + 1] = self.kernel_t @ (mass[t][:, None] * policy[t]).ravel()
        return mass

    def log_density(self, mass: np.ndarray) -> np.ndarray:
        """log(cell mass / cell area), same shape as ``mass`` (-inf where the mass is 0)."""
        with np.errstate(divide="ignore"):
            return np.log(np.asarray(mass) / self.cell_area)

    def rewards(self, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Running rewards ``[T, S, A]`` and terminal rewards ``[S]`` against the flow ``mass`` ``[T+1, S]``.

        Evaluated with the game's own reward functions at the cell centres and the cells' densities.
        """
        T, S, A, d = self.horizon, self.num_states, self.num_actions, self.dim
        log_density = torch.as_tensor(self.log_density(mass))
        x = torch.as_tensor(self.centres)
        a = torch.as_tensor(self.velocities)
        running = self.game.reward_given_log_density(
            x[None, :, None, :].expand(T, S, A, d).reshape(-1, d),
            a[None, None, :, :].expand(T, S, A, d).reshape(-1, d),
            log_density[:T, :, None].expand(T, S, A).reshape(-1))
        terminal = self.game.terminal_reward_given_log_density(x, log_density[T])
        return running.reshape(T, S, A).numpy(), terminal.numpy()

    def q_values(self, running: np.ndarray, next_value: np.ndarray, t: int) -> np.ndarray:
        """Q_t = r_t + E[V_{t+1}(next cell)], ``[S, A]``."""
        return running[t] + (self.kernel @ next_value).reshape(self.num_states, self.num_actions)

    def evaluate(self, policy: np.ndarray, running: np.ndarray, terminal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Policy evaluation: Q ``[T, S, A]`` and V ``[T+1, S]`` of ``policy`` for the given rewards."""
        T = self.horizon
        q = np.empty((T, self.num_states, self.num_actions))
        v = np.empty((T + 1, self.num_states))
        v[T] = terminal
        for t in reversed(range(T)):
            q[t] = self.q_values(running, v[t + 1], t)
            v[t] = (policy[t] * q[t]).sum(-1)
        return q, v

    def best_response(self, running: np.ndarray, terminal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward induction: greedy action indices ``[T, S]`` and the optimal value ``[T+1, S]``."""
        T = self.horizon
        actions = np.empty((T, self.num_states), dtype=np.int64)
        v = np.empty((T + 1, self.num_states))
        v[T] = terminal
        for t in reversed(range(T)):
            q = self.q_values(running, v[t + 1], t)
            actions[t] = q.argmax(-1)
            v[t] = q[np.arange(self.num_states), actions[t]]
        return actions, v

    def one_hot(self, actions: np.ndarray) -> np.ndarray:
        """A deterministic policy ``[T, S, A]`` from action indices ``[T, S]``."""
        return np.eye(self.num_actions)[actions]

    def exploitability(self, policy: np.ndarray, mass: np.ndarray | None = None) -> Exploitability:
        """Exact exploitability of ``policy`` against its own flow (``mass`` if already known)."""
        policy = self.check_policy(policy)
        mass = self.forward(policy) if mass is None else mass
        running, terminal = self.rewards(mass)
        _, v_policy = self.evaluate(policy, running, terminal)
        actions, v_best = self.best_response(running, terminal)
        policy_value = float(self.initial_mass @ v_policy[0])
        best_value = float(self.initial_mass @ v_best[0])
        return Exploitability(best_value - policy_value, policy_value, best_value, mass, actions)

    # ---- cells ------------------------------------------------------------------------------

    def state_index(self, x: Tensor | np.ndarray) -> np.ndarray:
        """State index of the cell holding each point of ``x`` (``[n, d]``); -1 outside or in walls. Returns ``[n]``."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        n = self.config.cells
        inside = np.all((x >= 0.0) & (x <= 1.0), axis=1)
        coords = np.clip(np.floor(x * n).astype(np.int64), 0, n - 1)
        states = self.state_of_cell[flat_cell_index(coords, n)]
        return np.where(inside, states, -1)

    def population(self, mass: np.ndarray) -> GridPopulation:
        """The piecewise-constant population model of a flow ``[T+1, S]``."""
        return GridPopulation(self, mass)


def flat_cell_index(coords: np.ndarray, cells: int) -> np.ndarray:
    """Flat index of integer cell coordinates ``[n, d]`` on a ``cells^d`` grid, x fastest. Returns ``[n]``."""
    return (coords * cells ** np.arange(coords.shape[1])).sum(-1)


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


# ---- population model of a grid flow ---------------------------------------------------------------

@final
class GridPopulation(PopulationModel):
    """The piecewise-constant population of a grid flow: uniform inside each cell, no mass in walls.

    ``log_prob`` is ``log(mass / cell_area)`` in the cell holding x and ``-inf`` outside the free space.
    """

    def __init__(self, grid: GridMFG, mass: np.ndarray) -> None:
        mass = np.asarray(mass, dtype=np.float64)
        if mass.shape != (grid.horizon + 1, grid.num_states):
            raise ValueError(f"mass must be [T+1, S] = {(grid.horizon + 1, grid.num_states)}, got {mass.shape}")
        if mass.min() < -1e-12 or not np.allclose(mass.sum(1), 1.0, atol=1e-6):
            raise ValueError(f"each mass[t] must be a distribution; sums range {mass.sum(1).min():.6f}.."
                             f"{mass.sum(1).max():.6f}")
        self.grid = grid
        self.dim = grid.dim
        self.horizon = grid.horizon
        self.mass = torch.as_tensor(np.clip(mass, 0.0, None))
        self._log_density = torch.as_tensor(grid.log_density(np.clip(mass, 0.0, None)))
        self._state_of_cell = torch.as_tensor(grid.state_of_cell)
        self._corners = torch.as_tensor(grid.cell_coords * grid.cell_width)
        self._centres = torch.as_tensor(grid.centres)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        t = self._check_t(t)
        states = torch.multinomial(self.mass[t], n, replacement=True, generator=generator)
        u = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        return (self._corners[states] + u * self.grid.cell_width).float()

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be [n, {self.dim}], got {tuple(x.shape)}")
        cells = self.grid.config.cells
        xd = x.detach().double().cpu()
        inside = ((xd >= 0.0) & (xd <= 1.0)).all(-1)
        coords = torch.floor(xd * cells).long().clamp(0, cells - 1)
        flat = (coords * torch.as_tensor(cells ** np.arange(self.dim))).sum(-1)
        states = self._state_of_cell[flat]
        valid = inside & (states >= 0)
        t_index = torch.as_tensor(t).long().expand(x.shape[0]) if torch.as_tensor(t).ndim == 0 \
            else torch.as_tensor(t).long()
        if t_index.min() < 0 or t_index.max() > self.horizon:
            raise ValueError(f"t must be in 0..{self.horizon}")
        values = self._log_density[t_index, states.clamp(min=0)]
        out = torch.where(valid, values, torch.full_like(values, -math.inf))
        return out.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)

    def mean(self, t: int) -> Tensor:
        t = self._check_t(t)
        return (self.mass[t] @ self._centres).float()


# ---- algorithms -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridIterate:
    """Metrics of a grid solver after an iteration.

    Attributes:
        iteration: number of updates done (0: the initial uniform policy).
        exploitability: exact exploitability of the current policy.
        policy_value: J(π; μ^π).
        best_response_value: J(BR; μ^π).
        seconds: wall time of this iteration.
    """

    iteration: int
    exploitability: float
    policy_value: float
    best_response_value: float
    seconds: float


@final
class GridFictitiousPlay:
    """Exact fictitious play on the grid, started from the uniform policy.

    Iteration k computes the best response BR_k to the current average's flow and averages it in with
    weight 1/(k+1), weighting policies by their occupancy so that the average's flow is the average of
    flows (the uniform policy keeps weight 1/(k+1)). Each record reports the new average's exploitability.
    """

    def __init__(self, grid: GridMFG) -> None:
        self.grid = grid
        self._iteration = 0
        self._policy = grid.uniform_policy()
        self._mass: np.ndarray | None = None
        self._score: Exploitability | None = None

    @property
    def policy(self) -> np.ndarray:
        """The current average policy ``[T, S, A]`` (read-only view)."""
        view = self._policy.view()
        view.flags.writeable = False
        return view

    @property
    def mass(self) -> np.ndarray:
        """The current average policy's flow ``[T+1, S]``."""
        return self._current().mass

    def _current(self) -> Exploitability:
        if self._score is None:
            self._score = self.grid.exploitability(self._policy, self._mass)
            self._mass = self._score.mass
        return self._score

    def evaluate(self) -> GridIterate:
        """The current average's record without updating it."""
        started = time.perf_counter()
        score = self._current()
        return GridIterate(self._iteration, score.exploitability, score.policy_value, score.best_response_value,
                           time.perf_counter() - started)

    def iteration(self) -> GridIterate:
        """One fictitious-play update; returns the new average's record."""
        started = time.perf_counter()
        score = self._current()
        best = self.grid.one_hot(score.best_response)
        best_mass = self.grid.forward(best)
        weight = 1.0 / (self._iteration + 2)
        old = (1 - weight) * score.mass[:-1, :, None]
        new = weight * best_mass[:-1, :, None]
        total = old + new
        mixed = (old * self._policy + new * best) / np.where(total > 0, total, 1.0)
        plain = (1 - weight) * self._policy + weight * best
        self._policy = np.where(total > 0, mixed, plain)
        self._mass = (1 - weight) * score.mass + weight * best_mass
        self._score = None
        self._iteration += 1
        score = self._current()
        return GridIterate(self._iteration, score.exploitability, score.policy_value, score.best_response_value,
                           time.perf_counter() - started)


@final
class GridMirrorDescent:
    """Online mirror descent on the grid (Pérolat et al., 2022), started from the uniform policy.

    Each iteration evaluates the current policy against its own flow and accumulates its Q-function,
    ``y += learning_rate * Q^{π_k, μ^{π_k}}``; the next policy is ``softmax(y)`` per (t, state).
    """

    def __init__(self, grid: GridMFG, learning_rate: float = 1.0) -> None:
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        self.grid = grid
        self.learning_rate = float(learning_rate)
        self._iteration = 0
        self._logits = np.zeros((grid.horizon, grid.num_states, grid.num_actions))
        self._policy = grid.uniform_policy()
        self._state: tuple[Exploitability, np.ndarray] | None = None

    @property
    def policy(self) -> np.ndarray:
        """The current policy ``[T, S, A]`` (read-only view)."""
        view = self._policy.view()
        view.flags.writeable = False
        return view

    @property
    def mass(self) -> np.ndarray:
        """The current policy's flow ``[T+1, S]``."""
        return self._current()[0].mass

    def _current(self) -> tuple[Exploitability, np.ndarray]:
        if self._state is None:
            grid = self.grid
            mass = grid.forward(self._policy)
            running, terminal = grid.rewards(mass)
            q, v = grid.evaluate(self._policy, running, terminal)
            actions, v_best = grid.best_response(running, terminal)
            value, best_value = float(grid.initial_mass @ v[0]), float(grid.initial_mass @ v_best[0])
            self._state = (Exploitability(best_value - value, value, best_value, mass, actions), q)
        return self._state

    def evaluate(self) -> GridIterate:
        """The current policy's record without updating it."""
        started = time.perf_counter()
        score = self._current()[0]
        return GridIterate(self._iteration, score.exploitability, score.policy_value, score.best_response_value,
                           time.perf_counter() - started)

    def iteration(self) -> GridIterate:
        """One mirror-descent update; returns the new policy's record."""
        started = time.perf_counter()
        _, q = self._current()
        self._logits += self.learning_rate * q
        z = self._logits - self._logits.max(-1, keepdims=True)
        p = np.exp(z)
        self._policy = p / p.sum(-1, keepdims=True)
        self._state = None
        self._iteration += 1
        score = self._current()[0]
        return GridIterate(self._iteration, score.exploitability, score.policy_value, score.best_response_value,
                           time.perf_counter() - started)
