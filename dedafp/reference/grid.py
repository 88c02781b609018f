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

This module holds the discretised game (:class:`GridConfig`, :class:`GridMFG` and its exact dynamic
programming, :class:`GridPopulation`); :mod:`~dedafp.reference.grid_kernel` builds it (:func:`build_grid`)
and :mod:`~dedafp.reference.grid_solvers` holds fictitious play and mirror descent on it. Their names are
importable from here too.

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
import importlib
import math
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

__all__ = ["GridGame", "GridConfig", "default_grid_config", "Exploitability", "GridMFG", "GridPopulation",
           "flat_cell_index"]

#: Names that live in the kernel and solver modules, importable from here as before the split.
_MOVED = {"build_grid": "dedafp.reference.grid_kernel", "GridIterate": "dedafp.reference.grid_solvers",
          "GridFictitiousPlay": "dedafp.reference.grid_solvers", "GridMirrorDescent": "dedafp.reference.grid_solvers"}


def __getattr__(name: str) -> Any:
    # Resolved on first use: those modules import this one.
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])


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
