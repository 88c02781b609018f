"""Four-rooms crowd modelling: agents in four rooms avoid each other (density-coupled, 2-D).

The 11×11 interior of OpenSpiel's ``crowd_modelling_2d`` FOUR_ROOMS map, scaled to the unit square
(one map cell = 1/11). For t = 0..T-1, with ξ_t ~ N(0, I_2):

    proposal  x' = x + v dt + σ √dt ξ_t,          v ∈ [-v_max, v_max]²
    x_{t+1}   = x'  if the segment [x, x'] stays in [0, 1]² and touches no wall, else x
    r_t       = -c_A |v|² - c_M log(μ_t(x) + ε)
    g(x_T)    = -c_M log(μ_T(x_T) + ε)
    x_0 ~ Uniform([0, 1/11]²)

μ_t is the population's density on [0, 1]² (per unit area). The walls live in one constant,
:data:`FOUR_ROOMS_MAP`, turned into closed rectangles by :func:`wall_rectangles`; the move rule is an
exact, vectorised segment-versus-rectangle test (:func:`segment_hits_rectangles`). The grid reference
solver (:mod:`dedafp.reference.grid`) builds its kernel from the same functions.

Usage::

    game = FourRoomsGame(four_rooms(sigma=0.3))
    x = game.initial_states(1000)
    field = game.bind(population)            # any object with log_prob(x, t)
    r = game.reward(0, x, a, field)          # one density query for the whole batch
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, final

import numpy as np
import torch
from torch import Tensor

from dedafp.common.validation import Rule, validated
from dedafp.envs.base import Domain, MeanFieldGame, check_number, check_overrides
from dedafp.envs.registry import GameSpec, register_game
from dedafp.population.base import PopulationModel

#: The interior of OpenSpiel's FOUR_ROOMS map: ``#`` wall, ``.`` free. The first line is the top row
#: (y ∈ [10/11, 1]), the last the bottom row (y ∈ [0, 1/11]); columns run left to right in x.
FOUR_ROOMS_MAP: tuple[str, ...] = (
    ".....#.....",
    ".....#.....",
    "...........",
    ".....#.....",
    ".....#.....",
    "##.#####.##",
    ".....#.....",
    ".....#.....",
    "...........",
    ".....#.....",
    ".....#.....",
)

#: Names of the regions reported by :func:`region_index` (rooms, then door cells).
REGION_NAMES: tuple[str, ...] = ("bottom-left", "bottom-right", "top-left", "top-right", "doors")



def _check_pair(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (x, y) of numbers in [0, 1], got {value!r}")
    pair = tuple(check_number(f"{name}[{i}]", v) for i, v in enumerate(value))
    if not all(0.0 <= v <= 1.0 for v in pair):
        raise ValueError(f"{name} must lie in [0, 1]², got {value!r}")
    return pair  # type: ignore[return-value]


def _check_layout(layout: object) -> tuple[str, ...]:
    if isinstance(layout, str) or not isinstance(layout, (tuple, list)) or not layout:
        raise ValueError(f"layout must be a non-empty sequence of equal-length strings of '.' and '#', got {layout!r}")
    rows = tuple(layout)
    if not all(isinstance(row, str) and row and len(row) == len(rows[0]) for row in rows):
        raise ValueError(f"layout rows must be non-empty strings of equal length, got {rows!r}")
    bad = sorted({ch for row in rows for ch in row} - {".", "#"})
    if bad:
        raise ValueError(f"layout may only contain '.' (free) and '#' (wall), found {bad}")
    if all(ch == "#" for row in rows for ch in row):
        raise ValueError("layout has no free cell")
    return rows


@dataclass(frozen=True)
@validated("")
class FourRoomsConfig:
    """Parameters of the four-rooms game; :func:`four_rooms` gives the preset.

    Attributes:
        horizon: number of decision steps T (integer >= 1).
        dt: time step (> 0); the drift moves v dt per step.
        sigma: noise intensity σ (>= 0); the proposal's noise is σ √dt ξ.
        action_bound: velocities are clipped to [-action_bound, action_bound]² (> 0).
        action_cost: c_A >= 0, running cost c_A |v|² per step.
        crowd_cost: c_M >= 0, weight of the crowd-aversion term -c_M log(μ + ε).
        density_floor: ε > 0 inside the logarithm (density units: 1 / area).
        init_low: lower-left corner of the box of the uniform initial law (in [0, 1]²).
        init_high: upper-right corner of that box (componentwise > init_low); the box must be free of walls.
        layout: the wall map, rows of '.' (free) and '#' (wall), first row on top, scaled to [0, 1]².
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "horizon": ">= 1", "dt": "> 0", "sigma": ">= 0", "action_bound": "> 0", "action_cost": ">= 0",
        "crowd_cost": ">= 0", "density_floor": "> 0"}

    horizon: int = 40
    dt: float = 0.025
    sigma: float = 0.2
    action_bound: float = 2.0
    action_cost: float = 0.1
    crowd_cost: float = 1.0
    density_floor: float = 0.01
    init_low: tuple[float, float] = (0.0, 0.0)
    init_high: tuple[float, float] = (1.0 / 11.0, 1.0 / 11.0)
    layout: tuple[str, ...] = FOUR_ROOMS_MAP

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        for name in ("dt", "action_bound", "density_floor"):
            check_number(name, getattr(self, name), 0.0)
        for name in ("sigma", "action_cost", "crowd_cost"):
            check_number(name, getattr(self, name), 0.0, strict=False)
        object.__setattr__(self, "layout", _check_layout(self.layout))
        low, high = _check_pair("init_low", self.init_low), _check_pair("init_high", self.init_high)
        object.__setattr__(self, "init_low", low)
        object.__setattr__(self, "init_high", high)
        if not (low[0] < high[0] and low[1] < high[1]):
            raise ValueError(f"init_high must exceed init_low in both coordinates, got {low} and {high}")
        if not _box_is_free(low, high, self.layout):
            raise ValueError(f"the initial box init_low={low}, init_high={high} overlaps a wall of the layout")

    @property
    def noise_scale(self) -> float:
        """Standard deviation σ √dt of one proposal step, per coordinate."""
        return self.sigma * math.sqrt(self.dt)

    def replace(self, **changes: Any) -> FourRoomsConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def four_rooms(**overrides: Any) -> FourRoomsConfig:
    """The four-rooms preset (T = 40, dt = 0.025, σ = 0.2, v ∈ [-2, 2]², c_A = 0.1, c_M = 1, ε = 0.01).

    Keyword arguments override fields of :class:`FourRoomsConfig`; unknown names raise ``ValueError``.
    """
    check_overrides(FourRoomsConfig, "four_rooms", overrides)
    return FourRoomsConfig(**overrides)


# ---- geometry ---------------------------------------------------------------------------------

def wall_cells(layout: tuple[str, ...] = FOUR_ROOMS_MAP) -> np.ndarray:
    """Boolean wall mask of the layout, indexed ``[iy, ix]`` with ``iy = 0`` the bottom row."""
    return np.array([[ch == "#" for ch in row] for row in reversed(layout)], dtype=bool)


def wall_rectangles(layout: tuple[str, ...] = FOUR_ROOMS_MAP) -> Tensor:
    """The walls of ``layout`` as closed rectangles in [0, 1]². Returns float64 ``[R, 4]``: x0, y0, x1, y1.

    Runs of wall cells along a row are merged, then equal runs in consecutive rows.
    """
    walls = wall_cells(layout)
    ny, nx = walls.shape
    runs: dict[tuple[int, int], list[int]] = {}          # (x start, x end) -> rows, in order
    for iy in range(ny):
        ix = 0
        while ix < nx:
            if walls[iy, ix]:
                start = ix
                while ix < nx and walls[iy, ix]:
                    ix += 1
                runs.setdefault((start, ix), []).append(iy)
            else:
                ix += 1
    rects = []
    for (x0, x1), rows in runs.items():
        start = previous = rows[0]
        for iy in [*rows[1:], None]:
            if iy is not None and iy == previous + 1:
                previous = iy
                continue
            rects.append((x0 / nx, start / ny, x1 / nx, (previous + 1) / ny))
            if iy is not None:
                start = previous = iy
    return torch.tensor(sorted(rects), dtype=torch.float64).reshape(-1, 4)


def _box_is_free(low: tuple[float, float], high: tuple[float, float], layout: tuple[str, ...]) -> bool:
    rects = wall_rectangles(layout).numpy()
    overlap_x = (np.minimum(rects[:, 2], high[0]) - np.maximum(rects[:, 0], low[0])) > 0
    overlap_y = (np.minimum(rects[:, 3], high[1]) - np.maximum(rects[:, 1], low[1])) > 0
    return not bool(np.any(overlap_x & overlap_y))


def _slab_test(start: Tensor, end: Tensor, rects: Tensor) -> Tensor:
    """Liang–Barsky: bool ``[n]``, whether segment i touches a closed rectangle (``rects`` ``[R, 4]``)."""
    x0, y0, x1, y1 = rects.unbind(-1)                            # [R] each
    px, py = start[:, :1], start[:, 1:]                          # [n, 1]
    dx, dy = end[:, :1] - px, end[:, 1:] - py
    # A zero (or subnormal) step along an axis becomes the smallest normal number: the slab's
    # crossing parameters are then ±huge with the sign telling inside from outside, never NaN.
    tiny = torch.finfo(start.dtype).tiny
    inv_x = 1.0 / torch.where(dx.abs() < tiny, torch.full_like(dx, tiny), dx)
    inv_y = 1.0 / torch.where(dy.abs() < tiny, torch.full_like(dy, tiny), dy)
    ax, bx = (x0 - px) * inv_x, (x1 - px) * inv_x               # [n, R]
    ay, by = (y0 - py) * inv_y, (y1 - py) * inv_y
    enter = torch.maximum(torch.minimum(ax, bx), torch.minimum(ay, by)).clamp_(min=0.0)
    leave = torch.minimum(torch.maximum(ax, bx), torch.maximum(ay, by)).clamp_(max=1.0)
    return (enter <= leave).any(-1)


def segment_hits_rectangles(start: Tensor, end: Tensor, rects: Tensor) -> Tensor:
    """Whether each segment ``[start, end]`` touches any closed rectangle (exact up to rounding).

    Segments whose bounding box meets a rectangle's go through the Liang–Barsky slab test; the others
    cannot touch it.

    Args:
        start: ``[n, 2]`` first end points.
        end: ``[n, 2]`` second end points.
        rects: ``[R, 4]`` rectangles (x0, y0, x1, y1).

    Returns:
        Bool ``[n]``.
    """
    if start.shape != end.shape or start.ndim != 2 or start.shape[1] != 2:
        raise ValueError(f"start and end must both be [n, 2], got {tuple(start.shape)} and {tuple(end.shape)}")
    hit = torch.zeros(start.shape[0], dtype=torch.bool, device=start.device)
    if rects.shape[0] == 0 or start.shape[0] == 0:
        return hit
    rects = rects.to(start)
    low, high = torch.minimum(start, end), torch.maximum(start, end)
    near = ((low[:, None, 0] <= rects[:, 2]) & (high[:, None, 0] >= rects[:, 0])
            & (low[:, None, 1] <= rects[:, 3]) & (high[:, None, 1] >= rects[:, 1])).any(-1)
    candidates = near.nonzero().squeeze(1)
    hit[candidates] = _slab_test(start[candidates], end[candidates], rects)
    return hit


def in_rectangles(x: Tensor, rects: Tensor) -> Tensor:
    """Whether each point of ``x`` (``[n, 2]``) lies in a closed rectangle of ``rects``. Returns bool ``[n]``."""
    rects = rects.to(x)
    p = x.unsqueeze(1)
    return ((p >= rects[None, :, :2]) & (p <= rects[None, :, 2:])).all(-1).any(-1)


def in_square(x: Tensor) -> Tensor:
    """Whether each point of ``x`` (``[n, 2]``) lies in the closed unit square. Returns bool ``[n]``."""
    return ((x >= 0.0) & (x <= 1.0)).all(-1)


def resolve_moves(x: Tensor, proposal: Tensor, rects: Tensor) -> Tensor:
    """The move rule: ``proposal`` where the segment from ``x`` stays in [0, 1]² and touches no wall, else ``x``.

    The square is convex, so the segment stays in it exactly when ``proposal`` does. Returns ``[n, 2]``.
    """
    allowed = in_square(proposal) & ~segment_hits_rectangles(x, proposal, rects)
    return torch.where(allowed.unsqueeze(-1), proposal, x)


def proposals(x: Tensor, v: Tensor, noise: Tensor, config: FourRoomsConfig) -> Tensor:
    """Proposed next states ``x + clip(v) dt + σ √dt noise`` (``[n, 2]``), before the move rule."""
    v = v.clamp(-config.action_bound, config.action_bound)
    return x + v * config.dt + config.noise_scale * noise


def crowd_term(log_density: Tensor, config: FourRoomsConfig) -> Tensor:
    """``-c_M log(μ + ε)`` from ``log μ`` (``[n]``), stable for ``log μ = -inf``. Returns ``[n]``."""
    floor = torch.full_like(log_density, math.log(config.density_floor))
    return -config.crowd_cost * torch.logaddexp(log_density, floor)


def running_reward(v: Tensor, log_density: Tensor, config: FourRoomsConfig) -> Tensor:
    """``r = -c_A |clip(v)|² - c_M log(μ + ε)`` for velocities ``[n, 2]`` and ``log μ`` ``[n]``. Returns ``[n]``."""
    v = v.clamp(-config.action_bound, config.action_bound)
    return -config.action_cost * (v * v).sum(-1) + crowd_term(log_density, config)


def region_index(x: Tensor, layout: tuple[str, ...] = FOUR_ROOMS_MAP) -> Tensor:
    """Region of each point: 0..3 the rooms of :data:`REGION_NAMES`, 4 a door cell, -1 a wall or outside.

    Rooms are the quadrants around the layout's middle row and column (the wall cross of FOUR_ROOMS); a
    door cell is a free cell of that cross. Returns int64 ``[n]``.
    """
    walls = torch.as_tensor(wall_cells(layout), device=x.device)
    ny, nx = walls.shape
    ix = torch.floor(x[:, 0] * nx).long()
    iy = torch.floor(x[:, 1] * ny).long()
    valid = in_square(x)
    ix, iy = ix.clamp(0, nx - 1), iy.clamp(0, ny - 1)
    free = valid & ~walls[iy, ix]
    mid_x, mid_y = nx // 2, ny // 2
    room = (ix > mid_x).long() + 2 * (iy > mid_y).long()
    room = torch.where((ix == mid_x) | (iy == mid_y), torch.full_like(room, 4), room)
    return torch.where(free, room, torch.full_like(room, -1))


# ---- the game ---------------------------------------------------------------------------------

def bind_density_field(game: MeanFieldGame, population: Any) -> Any:
    """Check that ``population`` can serve as the density field of ``game`` and return it."""
    if not callable(getattr(population, "log_prob", None)):
        raise TypeError(f"the {game.name} field needs a log_prob(x, t) method; got {type(population).__name__}")
    if isinstance(population, PopulationModel) and (population.dim != game.state_dim
                                                    or population.horizon < game.horizon):
        raise ValueError(f"population model has dim={population.dim}, horizon={population.horizon}; "
                         f"{game.name} needs dim={game.state_dim}, horizon>={game.horizon}")
    return population


@dataclass(frozen=True)
class MisplacedMass:
    """Share of a population model's samples that are not in the free space, per time.

    Attributes:
        outside: ``[T+1]`` fraction of samples outside the domain.
        in_walls: ``[T+1]`` fraction inside walls (zero for games without walls).
    """

    outside: np.ndarray
    in_walls: np.ndarray

    @property
    def worst(self) -> float:
        """Largest misplaced fraction (outside + in walls) over time."""
        return float((self.outside + self.in_walls).max())


@final
class FourRoomsGame(MeanFieldGame):
    """The four-rooms game as batched tensor functions; the field is the population model (its ``log_prob``)."""

    name = "four_rooms"
    domain = Domain.box((0.0, 0.0), (1.0, 1.0))
    state_dim = 2
    action_dim = 2

    def __init__(self, config: FourRoomsConfig | None = None) -> None:
        self.config = config if config is not None else four_rooms()
        self.horizon = self.config.horizon
        self.action_bound = float(self.config.action_bound)
        self.region_names = REGION_NAMES
        self._rects = wall_rectangles(self.config.layout)

    def walls(self, like: Tensor) -> Tensor:
        """The wall rectangles ``[R, 4]`` with the dtype and device of ``like``."""
        return self._rects.to(like)

    def initial_states(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> Tensor:
        low = torch.tensor(self.config.init_low, device=device)
        high = torch.tensor(self.config.init_high, device=device)
        return low + (high - low) * torch.rand(n, 2, generator=generator, device=device)

    def exploring_states(self, n: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> Tensor:
        """Uniform on the free space (the square minus the walls), by rejection. Returns ``[n, 2]``."""
        accepted: list[Tensor] = []
        count = 0
        while count < n:
            x = torch.rand(2 * (n - count) + 16, 2, generator=generator, device=device)
            x = x[self.in_free_space(x)]
            accepted.append(x)
            count += len(x)
        return torch.cat(accepted)[:n]

    def bind(self, population: PopulationModel) -> PopulationModel:
        """The population model itself: rewards call its ``log_prob(x, t)`` once per batch."""
        return bind_density_field(self, population)

    def move(self, x: Tensor, proposal: Tensor) -> Tensor:
        """Apply the move rule to proposals: ``[n, 2]`` next states (see :func:`resolve_moves`)."""
        return resolve_moves(x, proposal, self.walls(x))

    def step(self, t: int, x: Tensor, a: Tensor, field: Any, noise: Tensor) -> Tensor:
        return self.move(x, proposals(x, a, noise, self.config))

    def reward_given_log_density(self, x: Tensor, a: Tensor, log_density: Tensor) -> Tensor:
        """Running reward ``[n]`` for states ``[n, 2]``, actions ``[n, 2]`` and ``log μ_t(x)`` ``[n]``."""
        return running_reward(a, log_density, self.config)

    def terminal_reward_given_log_density(self, x: Tensor, log_density: Tensor) -> Tensor:
        """Terminal reward ``[n]`` for states ``[n, 2]`` and ``log μ_T(x)`` ``[n]``."""
        return crowd_term(log_density, self.config)

    def reward(self, t: int, x: Tensor, a: Tensor, field: Any) -> Tensor:
        return self.reward_given_log_density(x, a, field.log_prob(x, t).to(x))

    def terminal_reward(self, x: Tensor, field: Any) -> Tensor:
        return self.terminal_reward_given_log_density(x, field.log_prob(x, self.horizon).to(x))

    def normalise_state(self, x: Tensor) -> Tensor:
        return 2.0 * x - 1.0

    def in_free_space(self, x: Tensor) -> Tensor:
        """Whether each point (``[n, 2]``) is in the square and not inside a wall. Returns bool ``[n]``."""
        return in_square(x) & ~in_rectangles(x, self.walls(x))

    def region_index(self, x: Tensor) -> Tensor:
        """Region of each point, an index into ``region_names`` (-1: wall or outside). Returns ``[n]``."""
        return region_index(x, self.config.layout)

    def misplaced_mass(self, population: PopulationModel, n: int = 20_000,
                       generator: torch.Generator | None = None) -> MisplacedMass:
        """Monte Carlo share of ``population``'s mass outside [0, 1]² and inside walls, for t = 0..T."""
        outside, in_walls = [], []
        for t in range(self.horizon + 1):
            x = population.sample(t, n, generator=generator).double()
            out = ~in_square(x)
            outside.append(out.double().mean().item())
            in_walls.append((~out & in_rectangles(x, self.walls(x))).double().mean().item())
        return MisplacedMass(np.array(outside), np.array(in_walls))


# ---- registration -------------------------------------------------------------------------------

#: Config defaults of four-rooms (``section.field``: value), applied before a config file and ``--set``.
#: The flow gets the unit box as its support, so no mass leaves the domain.
FOUR_ROOMS_DEFAULTS: dict[str, dict[str, Any]] = {
    "fp": {"iterations": 20, "br_agents": 2000, "population_agents": 20000, "initial_flow_steps": 1500,
           "evaluate_every": 5},
    # Backward-induction best responses (agents/backward.py): against the zero policy's population
    # they fall 7 short of the exact grid response where PPO falls 42 short (it stops at the far side
    # of the start room). 70% of the sampled states spread over the free space, so that every room
    # and door is scored at every t. The PPO settings below are the former default
    # (--set best_response.algorithm=ppo): fresh responses, since one warm-started from a response to
    # a population that has since moved did not unlearn it (return -68 where a fresh one earns 153);
    # keep_best guards the rest. backward_lr 0.01 rather than 1e-3: the value regressions (300 full-batch
    # steps each) were under-fitted; against the populations after 5 and 20 iterations of
    # results/four_rooms_backward the shortfall fell from 18 / 45 to 10.7 / 16.6 at the same cost
    # (0.02: 10.7 / 14.8; 0.04 diverged: 108).
    "best_response": {"algorithm": "backward", "exploring_starts": 0.7, "backward_lr": 0.01,
                      "num_envs": 64, "total_steps": 300_000,
                      "warm_start": False, "n_steps": 128, "batch_size": 2048, "n_epochs": 10,
                      "log_std_init": -0.5, "hidden": 128, "keep_best": True},
    # The average is cloned as its conditional mean velocity with a fixed spread (see
    # AveragePolicyConfig.fixed_std): a learned spread kept 38-55% of the mass in the start room where
    # the best responses' exact average keeps 20%. 0.15 rather than 0.05: the mean policy herds agents
    # into clumps where best responses disagree; 20 iterations with grid best responses reached flow
    # TV 0.29 / room error 0.077 (0.36 / 0.047 with 0.05). Warm-started: 3,000 steps a refit.
    "average_policy": {"hidden": 128, "steps": 3000, "warm_start": True, "fixed_std": 0.15},
    # zuko: the same fit (held-out NLL within 0.007 nats at every k) in 17 s a refit against nflows' 30 s; the OMD
    # run ends at 13.0 against 12.6 (TV 0.119 against 0.117, results/omd/four_rooms_omd_nflows/), within the
    # seeds' spread. 600 refit steps: with 300 (nflows) the run ended at 13.7 and was worse at every evaluated k
    # (results/omd/four_rooms_omd_flow300/); early stopping (patience 3) fitted worse still.
    "flow": {"backend": "zuko", "low": (0.0, 0.0), "high": (1.0, 1.0), "transforms": 5, "hidden": 64, "bins": 8,
             "tail_bound": 6.0, "steps": 600},
    # Online mirror descent (the default loop). Its greedy policy is a one-step lookahead of V* = max_a Q*,
    # fitted by value iteration as a second output of the value network (optimal_value): the greedy policy
    # of Q^pi alone is one step of policy iteration, 95.7 / 27.3 short of the exact response at k = 1 / 5;
    # the lookahead is 4.0 / 3.6, <= 7.7 through k = 20. Fourier features of the state (fourier = 8) let a
    # 64-wide value net fit the walls in 200 steps (relative error 0.005 against 0.015 with 1,000 steps on
    # raw coordinates; the mirror step 30 s instead of 90). η = 0.15 and 4,096 states per t beat η = 0.1
    # and 2,048 (24.7 / 23.7 against 27.2 / 24.0 at k = 20 with the former value net); the exact-parts
    # sweep: 9.2 against 11.1. The measured η is written out so that the default run's config is this
    # file's (MEASURED_LEARNING_RATES holds the same value).
    "omd": {"learning_rate": 0.15, "states": 4096, "value_steps": 200, "optimal_value": True, "fourier": 8,
            "value_hidden": 64},
}

register_game(GameSpec(
    "four_rooms", lambda **overrides: FourRoomsGame(four_rooms(**overrides)), defaults=FOUR_ROOMS_DEFAULTS,
    # Online mirror descent (η = 0.15, V* lookahead, zuko flow): 13.0 at k = 20, flow TV <= 0.119, rooms within
    # 0.032, in 25 min, where DEDA-FP with its backward best responses ends at 37.6 (TV 0.30, rooms 0.10) in
    # 49 min (results/four_rooms_omd/, results/omd/). --algorithm dedafp gives DEDA-FP with the settings below.
    algorithm="omd",
    evaluator="dedafp.evaluation.grid:grid_evaluator", exact_responder="grid",
    # 44 x 44 cells and a 5 x 5 velocity lattice (the reference of results/reference/).
    grid={"cells": 44, "velocities": 5, "source_points": 2, "target_points": 2},
    progress_columns=("fp/grid_exploitability", "ref/tv_max", "ref/region_error_max", "ref/misplaced_max"),
    coupling="density", gym_id="dedafp/FourRooms-v0",
    description="crowd aversion in four rooms joined by doors (2-D box with walls), grid reference"))
