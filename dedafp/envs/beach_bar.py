"""The beach bar: agents on [0, 1] want to be near the bar but not in a crowd (density-coupled, 1-D).

For t = 0..T-1, with ξ_t ~ N(0, 1) and reflecting ends at 0 and 1:

    x_{t+1} = reflect(x + a dt + σ √dt ξ_t),          a ∈ [-a_max, a_max]
    r_t     = -c_B |x - b| - c_A a² - c_M log(μ_t(x) + ε)
    g(x_T)  = -c_B |x_T - b| - c_M log(μ_T(x_T) + ε)
    x_0 ~ Uniform([0, 0.25])

with the bar at b = 0.5, c_B = 1, c_A = 0.1, c_M = 0.1, ε = 0.01, dt = 0.05, σ = 0.2, T = 20. The terminal
reward is the running reward without its action cost (the convention of the four-rooms game).
μ_t is the population's density on [0, 1]. The grid reference solver (:mod:`dedafp.reference.grid`)
builds its kernel from :func:`reflect`.

Usage::

    game = BeachBarGame(beach_bar(crowd_cost=0.2))
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
from dedafp.envs.four_rooms import MisplacedMass, bind_density_field
from dedafp.envs.registry import GameSpec, register_game
from dedafp.population.base import PopulationModel

#: Names of the regions reported by :meth:`BeachBarGame.region_index`.
REGION_NAMES: tuple[str, ...] = ("left of the bar", "right of the bar")



@dataclass(frozen=True)
@validated("")
class BeachBarConfig:
    """Parameters of the beach-bar game; :func:`beach_bar` gives the preset.

    Attributes:
        horizon: number of decision steps T (integer >= 1).
        dt: time step (> 0); the drift moves a dt per step.
        sigma: noise intensity σ (>= 0); the step's noise is σ √dt ξ.
        action_bound: actions are clipped to [-action_bound, action_bound] (> 0).
        bar: position b of the bar, in [0, 1].
        bar_cost: c_B >= 0, cost c_B |x - b| of the distance to the bar (running and terminal).
        action_cost: c_A >= 0, running cost c_A a².
        crowd_cost: c_M >= 0, weight of the crowd-aversion term -c_M log(μ + ε) (running and terminal).
        density_floor: ε > 0 inside the logarithm (density units: 1 / length).
        init_low: left end of the uniform initial law, in [0, 1].
        init_high: right end of the uniform initial law, in (init_low, 1].
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "horizon": ">= 1", "dt": "> 0", "sigma": ">= 0", "action_bound": "> 0", "bar": "[0, 1]", "bar_cost": ">= 0",
        "action_cost": ">= 0", "crowd_cost": ">= 0", "density_floor": "> 0", "init_low": "[0, 1]",
        "init_high": "[0, 1]"}

    horizon: int = 20
    dt: float = 0.05
    sigma: float = 0.2
    action_bound: float = 2.0
    bar: float = 0.5
    bar_cost: float = 1.0
    action_cost: float = 0.1
    crowd_cost: float = 0.1
    density_floor: float = 0.01
    init_low: float = 0.0
    init_high: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        for name in ("dt", "action_bound", "density_floor"):
            check_number(name, getattr(self, name), 0.0)
        for name in ("sigma", "bar_cost", "action_cost", "crowd_cost"):
            check_number(name, getattr(self, name), 0.0, strict=False)
        for name in ("bar", "init_low", "init_high"):
            check_number(name, getattr(self, name), 0.0, strict=False, high=1.0)
        if not self.init_low < self.init_high:
            raise ValueError(f"init_high must exceed init_low, got init_low={self.init_low}, "
                             f"init_high={self.init_high}")

    @property
    def noise_scale(self) -> float:
        """Standard deviation σ √dt of one step's noise."""
        return self.sigma * math.sqrt(self.dt)

    def replace(self, **changes: Any) -> BeachBarConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def beach_bar(**overrides: Any) -> BeachBarConfig:
    """The beach-bar preset (T = 20, dt = 0.05, σ = 0.2, a ∈ [-2, 2], bar at 0.5, c_A = c_M = 0.1, ε = 0.01).

    Keyword arguments override fields of :class:`BeachBarConfig`; unknown names raise ``ValueError``.
    """
    check_overrides(BeachBarConfig, "beach_bar", overrides)
    return BeachBarConfig(**overrides)


# ---- pure batched functions ---------------------------------------------------------------------

def reflect(y: Tensor) -> Tensor:
    """Fold any real ``y`` into [0, 1] by reflection at 0 and 1 (exact for any number of bounces)."""
    y = torch.remainder(y, 2.0)
    return torch.where(y > 1.0, 2.0 - y, y)


def next_states(x: Tensor, a: Tensor, noise: Tensor, config: BeachBarConfig) -> Tensor:
    """``reflect(x + clip(a) dt + σ √dt noise)`` for ``[n, 1]`` inputs. Returns ``[n, 1]``."""
    a = a.clamp(-config.action_bound, config.action_bound)
    return reflect(x + a * config.dt + config.noise_scale * noise)


def state_reward(x: Tensor, log_density: Tensor, config: BeachBarConfig) -> Tensor:
    """``-c_B |x - b| - c_M log(μ + ε)`` for ``x`` ``[n, 1]`` and ``log μ`` ``[n]``. Returns ``[n]``."""
    floor = torch.full_like(log_density, math.log(config.density_floor))
    return -config.bar_cost * (x[:, 0] - config.bar).abs() - config.crowd_cost * torch.logaddexp(log_density, floor)


def running_reward(x: Tensor, a: Tensor, log_density: Tensor, config: BeachBarConfig) -> Tensor:
    """``state_reward - c_A clip(a)²`` for ``x, a`` ``[n, 1]`` and ``log μ`` ``[n]``. Returns ``[n]``."""
    a = a.clamp(-config.action_bound, config.action_bound)
    return state_reward(x, log_density, config) - config.action_cost * (a * a).sum(-1)


# ---- the game ---------------------------------------------------------------------------------

@final
class BeachBarGame(MeanFieldGame):
    """The beach-bar game as batched tensor functions; the field is the population model (its ``log_prob``)."""

    name = "beach_bar"
    domain = Domain.box((0.0,), (1.0,))
    state_dim = 1
    action_dim = 1

    def __init__(self, config: BeachBarConfig | None = None) -> None:
        self.config = config if config is not None else beach_bar()
        self.horizon = self.config.horizon
        self.action_bound = float(self.config.action_bound)
        self.region_names = REGION_NAMES

    def initial_states(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> Tensor:
        low, high = self.config.init_low, self.config.init_high
        return low + (high - low) * torch.rand(n, 1, generator=generator, device=device)

    def exploring_states(self, n: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> Tensor:
        """Uniform on the beach [0, 1]. Returns ``[n, 1]``."""
        return torch.rand(n, 1, generator=generator, device=device)

    def bind(self, population: PopulationModel) -> PopulationModel:
        """The population model itself: rewards call its ``log_prob(x, t)`` once per batch."""
        return bind_density_field(self, population)

    def move(self, x: Tensor, proposal: Tensor) -> Tensor:
        """Where a proposal ``x + a dt + noise`` lands (``[n, 1]``): its reflection into [0, 1]."""
        return reflect(proposal)

    def step(self, t: int, x: Tensor, a: Tensor, field: Any, noise: Tensor) -> Tensor:
        return next_states(x, a, noise, self.config)

    def reward_given_log_density(self, x: Tensor, a: Tensor, log_density: Tensor) -> Tensor:
        """Running reward ``[n]`` for states ``[n, 1]``, actions ``[n, 1]`` and ``log μ_t(x)`` ``[n]``."""
        return running_reward(x, a, log_density, self.config)

    def terminal_reward_given_log_density(self, x: Tensor, log_density: Tensor) -> Tensor:
        """Terminal reward ``[n]`` for states ``[n, 1]`` and ``log μ_T(x)`` ``[n]``."""
        return state_reward(x, log_density, self.config)

    def reward(self, t: int, x: Tensor, a: Tensor, field: Any) -> Tensor:
        return self.reward_given_log_density(x, a, field.log_prob(x, t).to(x))

    def terminal_reward(self, x: Tensor, field: Any) -> Tensor:
        return self.terminal_reward_given_log_density(x, field.log_prob(x, self.horizon).to(x))

    def normalise_state(self, x: Tensor) -> Tensor:
        return 2.0 * x - 1.0

    def in_free_space(self, x: Tensor) -> Tensor:
        """Whether each point (``[n, 1]``) lies in [0, 1]. Returns bool ``[n]``."""
        return ((x >= 0.0) & (x <= 1.0)).all(-1)

    def region_index(self, x: Tensor) -> Tensor:
        """0 left of the bar, 1 at or right of it, -1 outside [0, 1]. Returns int64 ``[n]``."""
        region = (x[:, 0] >= self.config.bar).long()
        return torch.where(self.in_free_space(x), region, torch.full_like(region, -1))

    def misplaced_mass(self, population: PopulationModel, n: int = 20_000,
                       generator: torch.Generator | None = None) -> MisplacedMass:
        """Monte Carlo share of ``population``'s mass outside [0, 1], for t = 0..T (no walls: ``in_walls`` = 0)."""
        outside = [(~self.in_free_space(population.sample(t, n, generator=generator))).double().mean().item()
                   for t in range(self.horizon + 1)]
        return MisplacedMass(np.array(outside), np.zeros(self.horizon + 1))


# ---- registration -------------------------------------------------------------------------------

#: Config defaults of the beach bar (``section.field``: value); the flow lives on [0, 1].
BEACH_BAR_DEFAULTS: dict[str, dict[str, Any]] = {
    "fp": {"iterations": 10, "br_agents": 2000, "population_agents": 20000, "initial_flow_steps": 1500},
    "best_response": {"algorithm": "ppo", "num_envs": 64, "total_steps": 200_000, "warm_steps": 100_000,
                      "n_steps": 128, "batch_size": 2048, "n_epochs": 10, "log_std_init": -0.5},
    # The average is cloned as its conditional mean with a fixed spread (AveragePolicyConfig.fixed_std):
    # PPO's best responses disagree by 0.5-0.9 action bounds at the same states (bc/br_spread), which a
    # learned Gaussian spread turns into action noise at every step. 10 iterations, seeds 0 / 1: grid
    # exploitability 0.327 / 0.393 against 0.449 / 0.827 with the learned spread.
    "average_policy": {"fixed_std": 0.02},
    "flow": {"low": (0.0,), "high": (1.0,), "transforms": 4, "hidden": 32, "steps": 500},
}

register_game(GameSpec(
    "beach_bar", lambda **overrides: BeachBarGame(beach_bar(**overrides)), defaults=BEACH_BAR_DEFAULTS,
    # Online mirror descent (η = 20): 0.070 ± 0.005 at k = 10 over 3 seeds, where DEDA-FP with the same flow
    # ends at 0.33-0.39 and exact fictitious play at 0.38 (results/omd/). --algorithm dedafp gives DEDA-FP.
    algorithm="omd",
    evaluator="dedafp.evaluation.grid:grid_evaluator", exact_responder="grid",
    # 1-D, so a fine discretisation costs little: 100 cells, 21 velocities.
    grid={"cells": 100, "velocities": 21, "source_points": 4, "target_points": 4},
    progress_columns=("fp/grid_exploitability", "ref/tv_max", "ref/region_error_max", "ref/misplaced_max"),
    coupling="density", gym_id="dedafp/BeachBar-v0",
    description="1-D beach bar with crowd aversion and reflecting ends, grid reference"))
