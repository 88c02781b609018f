"""Crowd aversion on the circle: a user's mean-field game with a closed-form equilibrium.

This file is an example of *your own game*: it uses only dedafp's public API and is not part of the
package. Train it with ``dedafp train docs/examples/crowd_circle.py``; check it with
``dedafp check-game docs/examples/crowd_circle.py``.

The game (state on the circle S = [-π, π), 1-D action, t = 0..T-1, dt the step, ξ_t ~ N(0, 1)):

    x_{t+1} = wrap(x_t + a_t dt + σ √dt ξ_t),                  a_t ∈ [-a_max, a_max]
    r_t     = dt (-a²/2 + F(x) - c log max(μ_t(x), ε)),         F(x) = (ν²κ + cκ) cos x - ½ ν²κ² sin² x
    g(x_T)  = νκ cos x_T,                                       ν = σ²/2
    x_0 ~ μ* = von Mises(0, κ):   μ*(x) = exp(κ cos x) / (2π I₀(κ))

Agents like the top of the circle (F, g) and dislike crowds (-c log μ). The defaults are σ = 1,
κ = 2, c = 1, dt = 0.05, T = 20 (one unit of time), a_max = 3, ε = 1e-4.

Closed-form equilibrium (continuous time; the value is maximised). With μ_t given, the value
V(t, x) solves the HJB equation

    ∂_t V + max_a (a ∂_x V - a²/2) + ν ∂_xx V + F - c log μ_t = 0,   V(T, ·) = g,

the maximiser being a = ∂_x V, and the population of agents playing a(t, x) solves the
Fokker-Planck equation ∂_t μ + ∂_x(μ a) - ν ∂_xx μ = 0. Try the stationary pair μ_t = μ* and
V(t, x) = w(x) + λ (T - t). Fokker-Planck: μ* is stationary if its flux vanishes,
μ* a - ν ∂_x μ* = 0, i.e. a = ν ∂_x log μ* = -νκ sin x. The HJB maximiser is a = w', so
w = ν log μ* + const = νκ cos x (+ const) = g: the terminal condition holds at t = T. The HJB
equation then reads

    -λ + ½ ν²κ² sin² x - ν²κ cos x + F(x) - cκ cos x + c log(2π I₀(κ)) = 0,

which F above satisfies for every x with λ = c log(2π I₀(κ)). So μ_t = μ* for all t and

    a*(x) = -νκ sin x          (towards the top, x = 0, against the diffusion)
    V(0, x) = νκ cos x + c T dt log(2π I₀(κ))

is a finite-horizon equilibrium of the continuous game; with c > 0 the crowd term is monotone
(Lasry-Lions), so it is the only one.

The discrete-time game is the Euler scheme of that game: the exact policy keeps the population at
μ* only up to O(dt). Measured with the defaults, max over t of TV(μ_t, μ*) for μ_t the flow of a*:
0.0057 on a 200-cell grid of the circle (the Euler chain propagated exactly, :class:`CircleGrid`)
and 0.0061 with 10⁶ agents of the game's own ``step`` histogrammed into 100 bins (of which ~0.0035 is
sampling noise: fresh draws of μ* score that); the Euler chain's variance excess is ≈ νκ dt / 2 =
2.5% (linearised: an OU process). In the discrete game a* is not exactly the equilibrium but its
grid exploitability is 7.7e-5 (the policy a = 0: 0.336), and its value 3.3509 against the
continuous game's 3.3596.

What the package needs from this file: one :data:`SPEC` (a :class:`dedafp.GameSpec`) with the
factory, config defaults, the N-player coupling and the closed-form evaluator
(:class:`CrowdCircleEvaluator`: the density's and the policy's errors to the equilibrium, and a
grid exploitability, every iteration).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp import GameSpec, MeanFieldGame
from dedafp.envs.base import Domain
from dedafp.population import PopulationModel

__all__ = ["CrowdCircleConfig", "CrowdCircleGame", "CrowdCircleEvaluator", "CircleGrid", "ExactPolicy",
           "EquilibriumPopulation", "SPEC", "equilibrium_action", "equilibrium_log_density", "grid_exploitability",
           "log_normaliser"]


@dataclass(frozen=True)
class CrowdCircleConfig:
    """Parameters of the crowd-circle game.

    Attributes:
        horizon: decision steps T (integer >= 1).
        dt: time step (> 0).
        sigma: noise intensity σ (> 0); one step's noise is σ √dt ξ.
        kappa: concentration κ >= 0 of the equilibrium von Mises law (0: uniform).
        crowd_cost: c >= 0, weight of the crowd-aversion term -c log μ.
        action_bound: actions are clipped to [-a_max, a_max]; must exceed νκ = max |a*|.
        density_floor: ε > 0, log μ is floored at log ε; must be below min μ* = e^{-κ} / (2π I₀(κ))
            so that the closed form holds exactly.
    """

    horizon: int = 20
    dt: float = 0.05
    sigma: float = 1.0
    kappa: float = 2.0
    crowd_cost: float = 1.0
    action_bound: float = 3.0
    density_floor: float = 1e-4

    def __post_init__(self) -> None:
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {self.horizon!r}")
        for name, strict in (("dt", True), ("sigma", True), ("kappa", False), ("crowd_cost", False),
                             ("action_bound", True), ("density_floor", True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or (value <= 0 if strict else value < 0):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, got {value!r}")
        if self.action_bound <= self.nu * self.kappa:
            raise ValueError(f"action_bound must exceed max |a*| = νκ = {self.nu * self.kappa:.3g}, "
                             f"got {self.action_bound}")
        lowest = math.exp(-self.kappa - log_normaliser(self.kappa))
        if self.density_floor >= lowest:
            raise ValueError(f"density_floor must be below min μ* = {lowest:.3g} (the closed form needs the floor "
                             f"inactive at equilibrium), got {self.density_floor}")

    @property
    def nu(self) -> float:
        """ν = σ²/2, the diffusion coefficient."""
        return 0.5 * self.sigma ** 2

    @property
    def noise_scale(self) -> float:
        """Standard deviation σ √dt of one step's noise."""
        return self.sigma * math.sqrt(self.dt)


def log_normaliser(kappa: float) -> float:
    """log(2π I₀(κ)), the log-normaliser of von Mises(0, κ)."""
    return math.log(2 * math.pi * float(np.i0(kappa)))


# ---- the closed form ----------------------------------------------------------------------------

def equilibrium_log_density(x: Tensor, config: CrowdCircleConfig) -> Tensor:
    """log μ*(x) = κ cos x - log(2π I₀(κ)) for states ``[n, 1]`` (any real numbers). Returns ``[n]``."""
    return config.kappa * torch.cos(x[:, 0]) - log_normaliser(config.kappa)


def equilibrium_action(x: Tensor, config: CrowdCircleConfig) -> Tensor:
    """a*(x) = -νκ sin x for states ``[n, 1]``. Returns ``[n, 1]``."""
    return -config.nu * config.kappa * torch.sin(x)


def state_reward(x: Tensor, config: CrowdCircleConfig) -> Tensor:
    """F(x) = (ν²κ + cκ) cos x - ½ ν²κ² sin² x for states ``[n, 1]``. Returns ``[n]``."""
    nu, kappa, c = config.nu, config.kappa, config.crowd_cost
    return (nu ** 2 * kappa + c * kappa) * torch.cos(x[:, 0]) - 0.5 * (nu * kappa * torch.sin(x[:, 0])) ** 2


def running_reward(x: Tensor, a: Tensor, log_density: Tensor, config: CrowdCircleConfig) -> Tensor:
    """dt (-a²/2 + F(x) - c log max(μ, ε)) for ``x, a`` ``[n, 1]`` and ``log μ(x)`` ``[n]``. Returns ``[n]``."""
    a = a.clamp(-config.action_bound, config.action_bound)
    crowd = config.crowd_cost * log_density.clamp_min(math.log(config.density_floor))
    return config.dt * (-0.5 * (a * a).sum(-1) + state_reward(x, config) - crowd)


def terminal_reward(x: Tensor, config: CrowdCircleConfig) -> Tensor:
    """g(x) = νκ cos x for states ``[n, 1]``. Returns ``[n]``."""
    return config.nu * config.kappa * torch.cos(x[:, 0])


def sample_von_mises(n: int, kappa: float, generator: torch.Generator | None, device: torch.device | str) -> Tensor:
    """``n`` draws ``[n, 1]`` in [-π, π) of von Mises(0, κ): uniform proposals accepted w.p. e^{κ(cos x - 1)}."""
    accepted: list[Tensor] = []
    count = 0
    rate = max(math.exp(log_normaliser(kappa) - kappa) / (2 * math.pi), 1e-3)     # acceptance: e^{-κ} I₀(κ)
    while count < n:
        batch = int((n - count) / rate * 1.2) + 16
        x = 2 * math.pi * torch.rand(batch, generator=generator, device=device) - math.pi
        u = torch.rand(batch, generator=generator, device=device)
        keep = x[u < torch.exp(kappa * (torch.cos(x) - 1.0))]
        accepted.append(keep)
        count += keep.shape[0]
    return torch.cat(accepted)[:n].unsqueeze(1)


# ---- the game ---------------------------------------------------------------------------------

class CrowdCircleGame(MeanFieldGame):
    """The crowd-circle game as batched tensor functions; the field is the population model (its ``log_prob``).

    Observations are ``(2t/T - 1, cos x, sin x)``: a policy of them is continuous on the circle.
    """

    name = "crowd_circle"
    domain = Domain.periodic((-math.pi,), (math.pi,))
    state_dim = 1
    action_dim = 1

    def __init__(self, config: CrowdCircleConfig | None = None) -> None:
        self.config = config if config is not None else CrowdCircleConfig()
        self.horizon = self.config.horizon
        self.action_bound = float(self.config.action_bound)

    @property
    def obs_dim(self) -> int:
        return 3

    def observation(self, t: int | Tensor, x: Tensor) -> Tensor:
        """``(2t/T - 1, cos x, sin x)`` ``[n, 3]`` float32; ``t`` an int or a tensor ``[n]``."""
        n = x.shape[0]
        t_col = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(n).reshape(n, 1)
        return torch.cat([2.0 * t_col / self.horizon - 1.0, torch.cos(x).float(), torch.sin(x).float()], dim=1)

    def normalise_state(self, x: Tensor) -> Tensor:
        return x / math.pi

    def initial_states(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> Tensor:
        """μ* = von Mises(0, κ). Returns ``[n, 1]``."""
        return sample_von_mises(n, self.config.kappa, generator, device)

    def exploring_states(self, n: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> Tensor:
        """Uniform on the circle. Returns ``[n, 1]``."""
        return 2 * math.pi * torch.rand(n, 1, generator=generator, device=device) - math.pi

    def bind(self, population: Any) -> Any:
        """The population model itself: rewards call its ``log_prob(x, t)`` once per batch."""
        if not callable(getattr(population, "log_prob", None)):
            raise TypeError(f"crowd_circle needs a population with log_prob(x, t), got {type(population).__name__}")
        return population

    def step(self, t: int, x: Tensor, a: Tensor, field: Any, noise: Tensor) -> Tensor:
        a = a.clamp(-self.config.action_bound, self.config.action_bound)
        return self.domain.wrap(x + a * self.config.dt + self.config.noise_scale * noise)

    def reward_given_log_density(self, x: Tensor, a: Tensor, log_density: Tensor) -> Tensor:
        """Running reward ``[n]`` for states ``[n, 1]``, actions ``[n, 1]`` and ``log μ_t(x)`` ``[n]``."""
        return running_reward(x, a, log_density, self.config)

    def terminal_reward_given_log_density(self, x: Tensor, log_density: Tensor) -> Tensor:
        """Terminal reward ``[n]`` (it does not depend on the density)."""
        return terminal_reward(x, self.config)

    def reward(self, t: int, x: Tensor, a: Tensor, field: Any) -> Tensor:
        return self.reward_given_log_density(x, a, field.log_prob(x, t).to(x))

    def terminal_reward(self, x: Tensor, field: Any) -> Tensor:
        return terminal_reward(x, self.config)


def make_crowd_circle(**overrides: Any) -> CrowdCircleGame:
    """The game with :class:`CrowdCircleConfig` fields overridden; unknown names raise ``ValueError``."""
    fields = {f.name for f in dataclasses.fields(CrowdCircleConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown crowd_circle parameter(s) {unknown}; allowed: {sorted(fields)}")
    return CrowdCircleGame(CrowdCircleConfig(**overrides))


# ---- exact stand-ins: the equilibrium population and policy ------------------------------------

class EquilibriumPopulation(PopulationModel):
    """μ_t = μ* for t = 0..T (the equilibrium flow of the continuous game), periodic."""

    def __init__(self, config: CrowdCircleConfig, device: torch.device | str = "cpu") -> None:
        self.config, self.dim, self.horizon = config, 1, config.horizon
        self._device = torch.device(device)

    @property
    def device(self) -> torch.device:
        return self._device

    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        self._check_t(t)
        return sample_von_mises(n, self.config.kappa, generator, self._device)

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        return equilibrium_log_density(x.to(self._device, torch.float32), self.config)

    def mean(self, t: int) -> Tensor:
        """The circular mean, 0."""
        self._check_t(t)
        return torch.zeros(1, device=self._device)


class ExactPolicy:
    """The equilibrium policy a*(x) = -νκ sin x, deterministic (a :class:`dedafp` policy: ``distribution``)."""

    action_dim = 1

    def __init__(self, config: CrowdCircleConfig) -> None:
        self.config = config
        self.action_bound = config.action_bound

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = equilibrium_action(x, self.config)
        return mean, torch.zeros_like(mean)


# ---- a grid of the circle: the Euler chain propagated exactly, backward induction -----------------

#: Gauss-Hermite nodes and weights for E f(m + s ξ), ξ ~ N(0, 1) (probabilists' form).
_HERMITE_NODES, _HERMITE_WEIGHTS = (torch.as_tensor(v, dtype=torch.float64)
                                    for v in np.polynomial.hermite_e.hermegauss(7))


@dataclass(frozen=True)
class GridScore:
    """A policy scored in the grid game against its own flow.

    Attributes:
        exploitability: best-response value minus the policy's value, averaged over μ_0 (reward units).
        policy_value: the policy's expected return.
        mass: the policy's flow on the cells, ``[T+1, cells]`` (probabilities).
    """

    exploitability: float
    policy_value: float
    mass: Tensor


class CircleGrid:
    """The grid version of the game: ``cells`` equal cells of [-π, π) and transition probabilities between them.

    From a cell centre x and action a the next state is N(x + a dt, σ² dt) wrapped: cell j receives the
    wrapped normal's mass on cell j (differences of the normal CDF over the images within 6 sd). The
    best response chooses among ``actions`` equally spaced actions in [-a_max, a_max] (their
    transitions are computed once).
    """

    def __init__(self, config: CrowdCircleConfig, cells: int = 200, actions: int = 121,
                 device: torch.device | str = "cpu") -> None:
        self.config, self.cells = config, cells
        self.device = torch.device(device)
        self.width = 2 * math.pi / cells
        self.edges = -math.pi + self.width * torch.arange(cells + 1, dtype=torch.float64, device=self.device)
        self.centres = 0.5 * (self.edges[1:] + self.edges[:-1])
        images = math.ceil(6 * config.noise_scale / (2 * math.pi))       # copies of the circle within 6 sd
        self.shifts = 2 * math.pi * torch.arange(-images, images + 1, dtype=torch.float64, device=self.device)
        self.lattice = torch.linspace(-config.action_bound, config.action_bound, actions, dtype=torch.float64,
                                      device=self.device)
        self.lattice_steps = self.transitions(self.centres[:, None] + self.lattice[None, :] * config.dt)  # [C, A, C]

    def transitions(self, y: Tensor) -> Tensor:
        """Rows ``[..., cells]`` of next-cell probabilities for next-state means ``y`` ``[...]`` (any reals)."""
        y = torch.remainder(y + math.pi, 2 * math.pi) - math.pi
        scaled = (self.edges - y[..., None, None] + self.shifts[:, None]) / self.config.noise_scale
        cdf = torch.special.ndtr(scaled)                                    # [..., images, cells + 1]
        rows = (cdf[..., 1:] - cdf[..., :-1]).sum(-2)
        return rows / rows.sum(-1, keepdim=True)

    def initial_mass(self) -> Tensor:
        """μ* on the cells, ``[cells]`` (centre values, normalised)."""
        mass = torch.exp(self.config.kappa * torch.cos(self.centres))
        return mass / mass.sum()

    def policy_actions(self, policy: Any) -> tuple[Tensor, Tensor]:
        """The policy's action law in every cell: actions ``[T, cells, 7]`` (Gauss-Hermite nodes of its
        Gaussian, clipped) and their weights ``[7]``."""
        x = self.centres.float().unsqueeze(1)
        actions = []
        for t in range(self.config.horizon):
            with torch.no_grad():
                mean, std = policy.distribution(t, x)
            mean, std = mean[:, 0].double().to(self.device), std[:, 0].double().to(self.device)
            actions.append(mean[:, None] + std[:, None] * _HERMITE_NODES.to(self.device))
        weights = _HERMITE_WEIGHTS.to(self.device)
        return torch.stack(actions).clamp(-self.config.action_bound, self.config.action_bound), weights / weights.sum()

    def score(self, policy: Any) -> GridScore:
        """Exploitability of ``policy`` against the flow it induces itself.

        The policy moves the mass of μ* forward; the rewards read that flow's density (mass / cell
        width, floored at ε); its value and the best response's follow by backward induction.
        Costs O(T cells² (7 + actions)).
        """
        config, dt = self.config, self.config.dt
        played, weights = self.policy_actions(policy)                               # [T, C, Q], [Q]
        steps = self.transitions(self.centres[None, :, None] + played * dt)          # [T, C, Q, C]
        mass = [self.initial_mass()]
        for t in range(config.horizon):
            mass.append(torch.einsum("c,q,cqd->d", mass[t], weights, steps[t]))
        flow = torch.stack(mass)                                                   # [T+1, C]
        x = self.centres.unsqueeze(1)
        log_density = torch.log(flow / self.width)
        value = best = terminal_reward(x, config)
        for t in reversed(range(config.horizon)):
            state = running_reward(x, torch.zeros_like(x), log_density[t], config)    # [C]: the reward at a = 0
            value = ((state[:, None] - 0.5 * dt * played[t] ** 2 + steps[t] @ value) * weights).sum(1)
            best = (state[:, None] - 0.5 * dt * self.lattice ** 2 + self.lattice_steps @ best).max(1).values
        start = flow[0]
        return GridScore(float(start @ (best - value)), float(start @ value), flow)


def grid_exploitability(policy: Any, config: CrowdCircleConfig, cells: int = 200, actions: int = 121,
                        device: torch.device | str = "cpu") -> GridScore:
    """``CircleGrid(config, cells, actions, device).score(policy)``: the policy's grid exploitability."""
    return CircleGrid(config, cells, actions, device).score(policy)


# ---- the evaluator --------------------------------------------------------------------------------

class CrowdCircleEvaluator:
    """Closed-form metrics of crowd_circle, every iteration (the :class:`dedafp.GameSpec` evaluator interface).

    * ``ref/tv_max``, ``ref/tv_mean``: total variation between the population model's μ_t and μ*
      (from ``population.log_prob`` on ``cells`` points of the circle), max and mean over t = 0..T;
      ``ref/mass_error``: max over t of |∫ μ_t - 1| (the model's mass check);
    * ``ref/action_error``: ∫ |ā(t, x) - a*(x)| μ*(dx), mean over t < T, ā the average policy's
      mean action (``average_policy.distribution``);
    * ``fp/grid_exploitability``, ``fp/grid_policy_value`` (:func:`grid_exploitability`) and
      ``ref/flow_tv_max``: max over t of TV(the average policy's own grid flow, μ*);
      ``reference/exploitability``: the same for a* (the floor of the Euler/grid discretisation).
    """

    def __init__(self, game: CrowdCircleGame, device: torch.device | str = "cpu", cells: int = 200) -> None:
        self.game, self.config, self.cells = game, game.config, cells
        self.device = torch.device(device)
        self.points = (-math.pi + 2 * math.pi * (torch.arange(cells, dtype=torch.float32) + 0.5) / cells).unsqueeze(1)
        self.truth = equilibrium_log_density(self.points, self.config).double().exp()
        self.grid = CircleGrid(self.config, cells, device=device)
        self.floor = self.grid.score(ExactPolicy(self.config)).exploitability

    def density_errors(self, population: PopulationModel) -> dict[str, float]:
        """TV of the population model to μ* (max, mean over t) and its worst mass error."""
        tv, mass = [], []
        cell = 2 * math.pi / self.cells
        with torch.no_grad():
            for t in range(self.config.horizon + 1):
                density = population.log_prob(self.points.to(population.device), t).double().cpu().exp()
                tv.append(0.5 * float((density - self.truth).abs().sum()) * cell)
                mass.append(abs(float(density.sum()) * cell - 1.0))
        return {"ref/tv_max": max(tv), "ref/tv_mean": float(np.mean(tv)), "ref/mass_error": max(mass)}

    def action_error(self, policy: Any) -> float:
        """μ*-weighted mean |ā - a*| over the circle, averaged over t < T (action units)."""
        exact = equilibrium_action(self.points, self.config)[:, 0].double()
        weights = self.truth / self.truth.sum()
        errors = []
        with torch.no_grad():
            for t in range(self.config.horizon):
                mean, _ = policy.distribution(t, self.points)
                errors.append(float((weights * (mean[:, 0].double().cpu() - exact).abs()).sum()))
        return float(np.mean(errors))

    def evaluate(self, iteration: int, average_policy: Any, population: PopulationModel,
                 best_responses: list, br_field: Any) -> dict[str, float]:
        """The metrics above after ``iteration`` best responses."""
        metrics = self.density_errors(population)
        metrics["ref/action_error"] = self.action_error(average_policy)
        score = self.grid.score(average_policy)
        truth = torch.as_tensor(self.truth / self.truth.sum(), device=score.mass.device)
        metrics.update({"fp/grid_exploitability": score.exploitability, "fp/grid_policy_value": score.policy_value,
                        "ref/flow_tv_max": float(0.5 * (score.mass - truth).abs().sum(1).max()),
                        "reference/exploitability": self.floor})
        return metrics


def crowd_circle_evaluator(game: CrowdCircleGame, eval_agents: int, iterations: int,
                           device: torch.device | str = "cpu", seed: int = 0) -> CrowdCircleEvaluator:
    """The :class:`CrowdCircleEvaluator` (the GameSpec signature; it is exact on a grid, no agents or seed)."""
    return CrowdCircleEvaluator(game, device)


# ---- the spec: what `dedafp train docs/examples/crowd_circle.py` reads ------------------------------

SPEC = GameSpec(
    "crowd_circle", make_crowd_circle,
    defaults={
        "fp": {"iterations": 5, "br_agents": 2000, "population_agents": 10000, "initial_flow_steps": 600},
        "best_response": {"algorithm": "pathwise", "hidden": 32, "layers": 2, "pathwise_agents": 512,
                          "pathwise_steps": 300, "pathwise_warm_steps": 150},
        "average_policy": {"hidden": 32, "steps": 600},
        # a periodic domain gets dedafp's circular spline flow (zuko's circular splines, whatever the backend)
        "flow": {"backend": "zuko", "transforms": 2, "hidden": 32, "bins": 8, "steps": 300, "batch_size": 512,
                 "lr": 5e-3},
    },
    evaluator=crowd_circle_evaluator,
    coupling="density",
    progress_columns=("fp/grid_exploitability", "ref/tv_max", "ref/action_error", "ref/flow_tv_max"),
    description="crowd aversion on the circle, closed-form von Mises equilibrium (docs/examples)")
