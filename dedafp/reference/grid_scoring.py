"""Scoring learned continuous policies and population models against the grid reference.

* :func:`project_policy` turns a stochastic continuous policy (a callable drawing actions) into a grid
  policy: actions sampled at many points of every cell are projected onto the velocity lattice,
  by multilinear ("linear", keeps the mean velocity) or nearest-point weights. :func:`score_policy`
  returns that grid policy's exact exploitability (its own sampled actions' costs, lattice transitions);
  :func:`score_mixture` that of an episode mixture of policies (fictitious play's exact average).
* :func:`project_population` puts a :class:`PopulationModel` on the grid, from samples (a histogram) or
  from its density (midpoint quadrature of ``exp(log_prob)``), and reports the misplaced mass.
* :func:`compare_population` compares a population model with a reference flow per t: total variation,
  a wall-respecting W1 (:class:`GeodesicW1`) and the mass per region (rooms, doors; sides of the bar).

Usage::

    grid = build_grid(FourRoomsGame(), default_grid_config("four_rooms"))
    score = score_policy(grid, lambda t, x: act(policy, t, x))   # score.exploitability
    comparison = compare_population(grid, reference_mass, flow)  # comparison.summary()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import final

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog
from torch import Tensor

from dedafp.population.base import PopulationModel
from dedafp.reference.grid import Exploitability, GridMFG

PROJECTIONS = ("linear", "nearest")
DENSITY_METHODS = ("samples", "density")
ACTION_REWARDS = ("sampled", "lattice")

SampleAction = Callable[[int, Tensor], Tensor]


# ---- policies ---------------------------------------------------------------------------------------

def lattice_weights(grid: GridMFG, actions: np.ndarray, projection: str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """Weights of actions ``[n, d]`` on the velocity lattice (actions are clipped to its box first).

    Returns:
        Lattice indices ``[n, m]`` and weights ``[n, m]`` (rows sum to 1); ``m = 2^d`` for "linear"
        (multilinear interpolation: the weighted mean of the lattice points is the clipped action),
        ``m = 1`` for "nearest".
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    d, k, bound = grid.dim, grid.config.velocities, grid.game.action_bound
    actions = np.clip(np.asarray(actions, dtype=np.float64), -bound, bound)
    if k == 1:
        return np.zeros((len(actions), 1), dtype=np.int64), np.ones((len(actions), 1))
    u = (actions + bound) / (2 * bound / (k - 1))                          # lattice coordinates in [0, k-1]
    place = k ** np.arange(d - 1, -1, -1)                                   # dim 0 slowest, as the lattice
    if projection == "nearest":
        index = np.clip(np.rint(u).astype(np.int64), 0, k - 1)
        return (index * place).sum(-1, keepdims=True), np.ones((len(actions), 1))
    low = np.clip(np.floor(u).astype(np.int64), 0, k - 2)
    frac = u - low
    indices, weights = [], []
    for corner in np.ndindex(*(2,) * d):
        corner = np.asarray(corner)
        indices.append(((low + corner) * place).sum(-1))
        weights.append(np.prod(np.where(corner == 1, frac, 1.0 - frac), axis=-1))
    return np.stack(indices, -1), np.stack(weights, -1)


def sample_policy_actions(grid: GridMFG, sample_action: SampleAction, samples_per_cell: int = 32,
                          generator: torch.Generator | None = None) -> np.ndarray:
    """Actions of a continuous policy at ``samples_per_cell`` uniform points of every cell, for every t.

    ``sample_action(t, x)`` draws one action per state (``x`` float32 ``[n, d]``; returns a tensor
    ``[n, action_dim]`` in physical units); it is called once per t for all cells. Returns
    ``[T, S, samples_per_cell, action_dim]`` float64.
    """
    if isinstance(samples_per_cell, bool) or not isinstance(samples_per_cell, int) or samples_per_cell < 1:
        raise ValueError(f"samples_per_cell must be an integer >= 1, got {samples_per_cell!r}")
    S, d, action_dim = grid.num_states, grid.dim, grid.game.action_dim
    corners = torch.as_tensor(grid.cell_coords * grid.cell_width).repeat_interleave(samples_per_cell, 0)
    actions = np.empty((grid.horizon, S, samples_per_cell, action_dim))
    for t in range(grid.horizon):
        u = torch.rand(corners.shape, generator=generator, dtype=torch.float64)
        x = (corners + u * grid.cell_width).float()
        with torch.no_grad():
            a = sample_action(t, x)
        if not isinstance(a, Tensor) or tuple(a.shape) != (len(x), action_dim):
            raise ValueError(f"sample_action(t, x) must return a tensor [n, {action_dim}] for x [n, {d}], "
                             f"got {type(a).__name__} {tuple(getattr(a, 'shape', ()))}")
        a = a.detach().double().cpu().numpy()
        if not np.isfinite(a).all():
            raise FloatingPointError(f"sample_action returned non-finite actions at t={t}")
        actions[t] = a.reshape(S, samples_per_cell, action_dim)
    return actions


def lattice_policy(grid: GridMFG, actions: np.ndarray, projection: str = "linear") -> np.ndarray:
    """The grid policy ``[T, S, A]`` of sampled actions ``[T, S, n, action_dim]`` (see :func:`lattice_weights`)."""
    T, S, n, _ = actions.shape
    A = grid.num_actions
    owner = np.repeat(np.arange(S), n)
    policy = np.empty((T, S, A))
    for t in range(T):
        index, weight = lattice_weights(grid, actions[t].reshape(S * n, -1), projection)
        counts = np.bincount((owner[:, None] * A + index).ravel(), weights=weight.ravel(), minlength=S * A)
        policy[t] = counts.reshape(S, A) / n
    return policy


def project_policy(grid: GridMFG, sample_action: SampleAction, samples_per_cell: int = 32,
                   projection: str = "linear", generator: torch.Generator | None = None) -> np.ndarray:
    """The grid policy ``[T, S, A]`` of a stochastic continuous policy.

    Args:
        grid: the grid game.
        sample_action: ``sample_action(t, x)`` draws one action per state (``x`` float32 ``[n, d]``,
            returns ``[n, action_dim]`` in physical units); called once per t for all cells.
        samples_per_cell: states drawn uniformly in each cell, one action each.
        projection: "linear" (multilinear weights, mean-preserving) or "nearest".
        generator: for the states drawn in the cells.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    return lattice_policy(grid, sample_policy_actions(grid, sample_action, samples_per_cell, generator), projection)


def score_policy(grid: GridMFG, sample_action: SampleAction, samples_per_cell: int = 32,
                 projection: str = "linear", action_rewards: str = "sampled",
                 generator: torch.Generator | None = None) -> Exploitability:
    """Exact grid exploitability of a continuous policy's projection (see :func:`project_policy`).

    The projected policy's transitions are those of its lattice mixture. With ``action_rewards="sampled"``
    (default) its running rewards use the policy's own sampled actions: a linear projection spreads an
    off-lattice action over lattice neighbours, which would otherwise charge it a larger quadratic action
    cost (up to c_A Δ²/4 per axis and step for lattice spacing Δ; 0.05 a step on four-rooms' 5 × 5
    lattice). ``"lattice"`` charges the lattice actions instead. The best response always plays the
    lattice, so a policy using off-lattice actions well can score slightly below 0.
    """
    return score_mixture(grid, [sample_action], samples_per_cell, projection, action_rewards, generator)


def score_mixture(grid: GridMFG, sample_actions: Sequence[SampleAction], samples_per_cell: int = 32,
                  projection: str = "linear", action_rewards: str = "sampled",
                  generator: torch.Generator | None = None) -> Exploitability:
    """Exact grid exploitability of the *episode* mixture of continuous policies (uniform weights).

    Each agent follows one member for its whole episode (fictitious play's exact average, Algo 1 of the
    DEDA-FP paper), so the population is the mean of the members' flows and the mixture's value the mean
    of the members' values against it. Scoring the state-wise mixture instead (drawing a member afresh at
    every step) answers a different question and can be far off. Members are projected and charged as in
    :func:`score_policy`; one member is :func:`score_policy`.
    """
    if action_rewards not in ACTION_REWARDS:
        raise ValueError(f"action_rewards must be one of {ACTION_REWARDS}, got {action_rewards!r}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if len(sample_actions) == 0:
        raise ValueError("score_mixture needs at least one policy")
    actions = [sample_policy_actions(grid, sample, samples_per_cell, generator) for sample in sample_actions]
    members = [lattice_policy(grid, a, projection) for a in actions]
    return mixture_exploitability(grid, members, member_actions=actions if action_rewards == "sampled" else None)


def mixture_exploitability(grid: GridMFG, members: Sequence[np.ndarray], flows: Sequence[np.ndarray] | None = None,
                           member_actions: Sequence[np.ndarray] | None = None) -> Exploitability:
    """Exact exploitability of the episode mixture of grid policies ``members`` (each ``[T, S, A]``).

    Args:
        flows: the members' own flows ``[T+1, S]`` if already computed (``grid.forward(member)``).
        member_actions: per member, the sampled continuous actions ``[T, S, n, action_dim]`` it was
            projected from; their own action costs replace the lattice's (see :func:`score_policy`).
    """
    flows = [grid.forward(member) for member in members] if flows is None else flows
    mass = np.mean(flows, axis=0)
    running, terminal = grid.rewards(mass)
    values = []
    for i, member in enumerate(members):
        member_running = running
        if member_actions is not None:
            member_running = _sampled_action_running(grid, member, member_actions[i], mass, running)
        values.append(float(grid.initial_mass @ grid.evaluate(member, member_running, terminal)[1][0]))
    best_actions, v_best = grid.best_response(running, terminal)
    policy_value = float(np.mean(values))
    best_value = float(grid.initial_mass @ v_best[0])
    return Exploitability(best_value - policy_value, policy_value, best_value, mass, best_actions)


def _sampled_action_running(grid: GridMFG, policy: np.ndarray, actions: np.ndarray, mass: np.ndarray,
                            running: np.ndarray) -> np.ndarray:
    """Running rewards ``[T, S, A]`` shifted per (t, cell) so that ``policy``'s expected reward there is that
    of its sampled ``actions`` ``[T, S, n, action_dim]``; what other actions earn relative to it is unchanged."""
    T, S, n, action_dim = actions.shape
    log_density = torch.as_tensor(grid.log_density(mass[:T]))
    x = torch.as_tensor(grid.centres)
    sampled = grid.game.reward_given_log_density(
        x[None, :, None, :].expand(T, S, n, grid.dim).reshape(-1, grid.dim),
        torch.as_tensor(actions).reshape(-1, action_dim),
        log_density[:, :, None].expand(T, S, n).reshape(-1)).reshape(T, S, n).mean(-1).numpy()
    return running + (sampled - (policy * running).sum(-1))[..., None]


# ---- populations --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProjectedMass:
    """A population's marginal put on the grid.

    Attributes:
        mass: mass of each free cell, ``[S]``.
        misplaced: mass not on the free cells (outside the domain or in walls; from the density method,
            ``1 - mass.sum()``, negative if the model puts more than unit mass on the free space).
    """

    mass: np.ndarray
    misplaced: float


def project_population(grid: GridMFG, population: PopulationModel, t: int, method: str = "samples",
                       samples: int = 100_000, points: int = 4,
                       generator: torch.Generator | None = None) -> ProjectedMass:
    """μ_t of ``population`` on the grid.

    Args:
        grid: the grid game.
        population: the model.
        t: time index in 0..T.
        method: "samples" (histogram of ``samples`` draws) or "density" (midpoint rule with ``points``
            per dimension in each cell on ``exp(log_prob)``, one batched call).
        samples: draws for the "samples" method.
        points: quadrature points per dimension for the "density" method.
        generator: for the draws.
    """
    if method not in DENSITY_METHODS:
        raise ValueError(f"method must be one of {DENSITY_METHODS}, got {method!r}")
    if not 0 <= t <= grid.horizon:
        raise ValueError(f"t must be in 0..{grid.horizon}, got {t}")
    if method == "samples":
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        x = population.sample(t, samples, generator=generator)
        states = grid.state_index(x.detach().double().cpu().numpy())
        counts = np.bincount(states[states >= 0], minlength=grid.num_states) / samples
        return ProjectedMass(counts, float((states < 0).mean()))
    if points < 1:
        raise ValueError(f"points must be >= 1, got {points}")
    offsets = (np.arange(points) + 0.5) / points
    probe = np.stack(np.meshgrid(*[offsets] * grid.dim, indexing="ij"), -1).reshape(-1, grid.dim)
    x = ((grid.cell_coords[:, None, :] + probe[None]) * grid.cell_width).reshape(-1, grid.dim)
    with torch.no_grad():
        log_p = population.log_prob(torch.as_tensor(x, dtype=torch.float32, device=population.device), t)
    density = np.exp(log_p.double().cpu().numpy()).reshape(grid.num_states, -1)
    mass = density.mean(1) * grid.cell_area
    return ProjectedMass(mass, float(1.0 - mass.sum()))


@final
class GeodesicW1:
    """W1 between masses on the free cells, with the shortest-path distance through the free space.

    In 1-D it is the exact W1 between the cell-centre masses. In 2-D the grid is coarsened to ``cells``
    per dimension (which must keep walls on cell boundaries; default :meth:`default_cells`) and W1 is the
    min-cost flow on the graph of free coarse cells with 8 neighbours (edges of length h and h√2; a
    diagonal needs both orthogonal neighbours free, so no corner is cut), solved as a linear program
    (HiGHS). That graph distance is the octile distance inside a room: at most 8.3% above the Euclidean.
    """

    def __init__(self, grid: GridMFG, cells: int | None = None) -> None:
        self.grid = grid
        fine = grid.config.cells
        self.cells = self.default_cells(grid) if cells is None else cells
        if isinstance(self.cells, bool) or not isinstance(self.cells, int) or self.cells < 1 or fine % self.cells:
            raise ValueError(f"cells must be a positive divisor of the grid's {fine} cells, got {cells!r}")
        if grid.dim > 2:
            raise ValueError("GeodesicW1 supports 1-D and 2-D grids")
        if not self._aligned(grid, self.cells):
            raise ValueError(f"cells={self.cells} makes coarse cells that are partly walls; use a multiple of the "
                             "layout's width")
        nodes, self._node_of_state = np.unique(self._coarse_index(grid, self.cells), return_inverse=True)
        self.num_nodes = len(nodes)
        self.width = 1.0 / self.cells
        if grid.dim == 1:
            return
        position = {int(v): i for i, v in enumerate(nodes)}
        tails, heads, lengths = [], [], []
        n = self.cells
        for v in nodes:
            x, y = int(v) % n, int(v) // n
            for dx, dy in ((1, 0), (0, 1), (1, 1), (1, -1)):
                u = (x + dx) + n * (y + dy)
                if not (0 <= x + dx < n and 0 <= y + dy < n) or u not in position:
                    continue
                if dx and dy and ((x + dx) + n * y not in position or x + n * (y + dy) not in position):
                    continue
                tails.append(position[int(v)])
                heads.append(position[u])
                lengths.append(self.width * math.hypot(dx, dy))
        edges = len(tails)
        incidence = sp.csr_matrix((np.r_[np.ones(edges), -np.ones(edges)],
                                   (np.r_[tails, heads], np.r_[np.arange(edges), np.arange(edges)])),
                                  shape=(self.num_nodes, edges))
        self._a_eq = sp.hstack([incidence, -incidence]).tocsc()
        self._cost = np.r_[lengths, lengths]

    @staticmethod
    def _coarse_index(grid: GridMFG, cells: int) -> np.ndarray:
        coarse = grid.cell_coords // (grid.config.cells // cells)
        return coarse[:, 0] + (cells * coarse[:, 1] if grid.dim == 2 else 0)

    @staticmethod
    def _aligned(grid: GridMFG, cells: int) -> bool:
        counts = np.bincount(GeodesicW1._coarse_index(grid, cells))
        return bool(np.all((counts == 0) | (counts == (grid.config.cells // cells) ** grid.dim)))

    @staticmethod
    def default_cells(grid: GridMFG) -> int:
        """The full grid in 1-D; in 2-D the coarsest divisor of the grid's cells that is >= 20 and keeps
        walls whole (22 for four-rooms at 44 cells: ~0.03 s per LP, W1 within 1% of the 44-cell value)."""
        fine = grid.config.cells
        if grid.dim == 1:
            return fine
        candidates = [c for c in range(20, fine + 1) if fine % c == 0 and GeodesicW1._aligned(grid, c)]
        return candidates[0] if candidates else fine

    def coarsen(self, mass: np.ndarray) -> np.ndarray:
        """Masses ``[S]`` summed over coarse cells. Returns ``[num_nodes]``."""
        return np.bincount(self._node_of_state, weights=mass, minlength=self.num_nodes)

    def __call__(self, p: np.ndarray, q: np.ndarray) -> float:
        """W1 between masses ``p`` and ``q`` (``[S]``, each normalised to 1 first)."""
        p = self.coarsen(np.asarray(p, dtype=np.float64))
        q = self.coarsen(np.asarray(q, dtype=np.float64))
        if p.sum() <= 0 or q.sum() <= 0:
            raise ValueError("W1 needs two masses with a positive total")
        diff = p / p.sum() - q / q.sum()
        if self.grid.dim == 1:
            return float(self.width * np.abs(np.cumsum(diff)[:-1]).sum())
        result = linprog(self._cost, A_eq=self._a_eq, b_eq=diff, bounds=(0, None), method="highs")
        if result.status != 0:
            raise RuntimeError(f"W1 transport problem failed: {result.message}")
        return float(result.fun)


@dataclass(frozen=True)
class FlowComparison:
    """A population model against a reference flow, per t = 0..T.

    Attributes:
        total_variation: ``[T+1]``, ½ Σ |model - reference| over cells, misplaced mass included.
        wasserstein: ``[T+1]``, geodesic W1 between the normalised masses (:class:`GeodesicW1`).
        misplaced: ``[T+1]``, the model's mass outside the free space.
        region_mass: ``[T+1, R]``, the model's mass per region of ``region_names``.
        reference_region_mass: ``[T+1, R]``, the reference's.
        region_names: names of the regions.
    """

    total_variation: np.ndarray
    wasserstein: np.ndarray
    misplaced: np.ndarray
    region_mass: np.ndarray
    reference_region_mass: np.ndarray
    region_names: tuple[str, ...]

    def summary(self) -> dict[str, float]:
        """Worst and mean figures over t, with namespaced keys (``ref/...``)."""
        region_error = np.abs(self.region_mass - self.reference_region_mass).max(1)
        return {
            "ref/tv_max": float(self.total_variation.max()), "ref/tv_mean": float(self.total_variation.mean()),
            "ref/w1_max": float(self.wasserstein.max()), "ref/w1_mean": float(self.wasserstein.mean()),
            "ref/misplaced_max": float(np.abs(self.misplaced).max()),
            "ref/region_error_max": float(region_error.max()),
        }


def region_masses(grid: GridMFG, mass: np.ndarray) -> np.ndarray:
    """Mass per region (``grid.game.region_names``) of masses ``[..., S]``. Returns ``[..., R]``."""
    region = grid.game.region_index(torch.as_tensor(grid.centres)).numpy()
    one_hot = np.eye(len(grid.game.region_names))[region]                 # [S, R]; centres are never walls
    return np.asarray(mass) @ one_hot


def compare_population(grid: GridMFG, reference_mass: np.ndarray, population: PopulationModel,
                       method: str = "samples", samples: int = 50_000, points: int = 4,
                       w1_cells: int | None = None, generator: torch.Generator | None = None) -> FlowComparison:
    """Compare ``population`` with the reference flow ``reference_mass`` (``[T+1, S]``) at every t.

    ``method``, ``samples``, ``points``: as in :func:`project_population`; ``w1_cells``: coarse grid of
    the W1 (default :meth:`GeodesicW1.default_cells`).
    """
    reference_mass = np.asarray(reference_mass, dtype=np.float64)
    if reference_mass.shape != (grid.horizon + 1, grid.num_states):
        raise ValueError(f"reference_mass must be [T+1, S] = {(grid.horizon + 1, grid.num_states)}, "
                         f"got {reference_mass.shape}")
    w1 = GeodesicW1(grid, w1_cells)
    tv, dist, misplaced, masses = [], [], [], []
    for t in range(grid.horizon + 1):
        projected = project_population(grid, population, t, method, samples, points, generator)
        tv.append(0.5 * (np.abs(projected.mass - reference_mass[t]).sum() + abs(projected.misplaced)))
        dist.append(w1(projected.mass, reference_mass[t]))
        misplaced.append(projected.misplaced)
        masses.append(projected.mass)
    return FlowComparison(np.array(tv), np.array(dist), np.array(misplaced), region_masses(grid, np.stack(masses)),
                          region_masses(grid, reference_mass), tuple(grid.game.region_names))
