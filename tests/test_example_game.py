"""The example user game of docs/examples (crowd aversion on the circle): its spec, closed form and evaluator."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dedafp.envs.registry import resolve_game
from dedafp.population import FlowConfig, PeriodicFlowPopulation
from dedafp.rollout import rollout

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "crowd_circle.py"


@pytest.fixture(scope="module")
def example():
    """The example's spec, one game with the defaults, and its module (for the closed-form helpers)."""
    spec, source = resolve_game(str(EXAMPLE))
    game = spec.make()
    return spec, source, game, sys.modules[type(game).__module__]


@pytest.fixture(scope="module")
def evaluator(example):
    spec, _, game, _ = example
    return spec.make_evaluator(game, 0, 1)


def _mu_star_cells(kappa: float, bins: int) -> torch.Tensor:
    """μ*'s mass on ``bins`` equal cells of [-π, π) (fine midpoint rule)."""
    fine = torch.linspace(-math.pi, math.pi, 100 * bins + 1, dtype=torch.float64)
    mass = torch.exp(kappa * torch.cos(0.5 * (fine[1:] + fine[:-1]))).reshape(bins, 100).sum(1)
    return mass / mass.sum()


def _histogram_tv(x: torch.Tensor, kappa: float, bins: int = 50) -> float:
    counts = torch.histc(x.double(), bins, -math.pi, math.pi) / x.shape[0]
    return 0.5 * float((counts - _mu_star_cells(kappa, bins)).abs().sum())


def test_the_example_resolves_from_its_file(example):
    spec, source, game, _ = example
    assert spec.name == "crowd_circle" and source.path == str(EXAMPLE) and source.sha256
    assert spec.coupling == "density" and callable(spec.evaluator)
    assert spec.progress_columns == ("fp/grid_exploitability", "ref/tv_max", "ref/action_error", "ref/flow_tv_max")
    assert game.domain.kind == "periodic" and game.domain.low == (-math.pi,) and game.domain.high == (math.pi,)
    assert spec.make({"kappa": 1.0}).config.kappa == 1.0
    with pytest.raises(ValueError, match="unknown crowd_circle parameter"):
        spec.make({"kapa": 1.0})


def test_config_validation(example):
    _, _, game, module = example
    with pytest.raises(ValueError, match="action_bound must exceed"):
        module.CrowdCircleConfig(action_bound=0.5)               # νκ = 1
    with pytest.raises(ValueError, match="density_floor must be below"):
        module.CrowdCircleConfig(density_floor=0.05)
    with pytest.raises(ValueError, match="sigma must be"):
        module.CrowdCircleConfig(sigma=0.0)


def test_closed_form_solves_the_stationary_hjb_and_fokker_planck(example):
    """-λ + ½ w'² + ν w'' + F - c log μ* = 0 with w = g, and zero Fokker-Planck flux μ* a* - ν μ*' = 0."""
    _, _, game, module = example
    for config in (game.config, module.CrowdCircleConfig(sigma=0.7, kappa=3.0, crowd_cost=0.5, action_bound=2.0)):
        x = (-math.pi + 2 * math.pi * torch.arange(100, dtype=torch.float64) / 100).unsqueeze(1).requires_grad_(True)
        w = module.terminal_reward(x, config)
        (dw,) = torch.autograd.grad(w.sum(), x, create_graph=True)
        (d2w,) = torch.autograd.grad(dw.sum(), x)
        log_mu = module.equilibrium_log_density(x, config)
        lam = config.crowd_cost * module.log_normaliser(config.kappa)
        residual = (-lam + 0.5 * dw[:, 0] ** 2 + config.nu * d2w[:, 0] + module.state_reward(x, config)
                    - config.crowd_cost * log_mu)
        assert float(residual.detach().abs().max()) < 1e-10
        (dlog_mu,) = torch.autograd.grad(log_mu.sum(), x)
        a_star = module.equilibrium_action(x, config)
        torch.testing.assert_close(a_star, dw.detach())                            # a* = ∂_x V
        torch.testing.assert_close(a_star, config.nu * dlog_mu)                    # zero flux
        mass = torch.exp(log_mu.detach()).mean() * 2 * math.pi                      # periodic trapezoid
        assert float(mass) == pytest.approx(1.0, abs=1e-10)


def test_game_pieces_wrap_and_see_the_circle(example):
    _, _, game, _ = example
    gen = torch.Generator().manual_seed(0)
    x0 = game.initial_states(200_000, gen)
    assert x0.shape == (200_000, 1) and game.domain.contains(x0).all()
    # measured TV of 200,000 draws to μ* in 50 bins over 5 seeds: 0.0047-0.0059 (sampling noise)
    assert _histogram_tv(x0[:, 0], game.config.kappa) < 0.009
    x = torch.tensor([[math.pi - 1e-3], [3.0]])
    nxt = game.step(0, x, torch.tensor([[3.0], [3.0]]), None, torch.zeros(2, 1))
    assert game.domain.contains(nxt).all() and float(nxt[0, 0]) < 0           # crossed the seam
    near = game.observation(2, torch.tensor([[-math.pi + 1e-6], [math.pi - 1e-6]]))
    assert near.shape == (2, game.obs_dim) and float((near[0] - near[1]).abs().max()) < 1e-5


def test_evaluator_gives_zero_error_to_the_exact_solution(example, evaluator):
    """The exact density and policy: no density or action error; a grid exploitability at the discretisation floor.

    Measured: grid exploitability of a* 7.7e-5 and TV of its own grid flow to μ* 0.0057 (the Euler
    scheme's O(dt)); the policy a = 0 scores 0.336 and 0.224.
    """
    _, _, game, module = example
    config = game.config
    metrics = evaluator.evaluate(0, module.ExactPolicy(config), module.EquilibriumPopulation(config), [], None)
    assert metrics["ref/tv_max"] < 1e-6 and metrics["ref/tv_mean"] < 1e-6 and metrics["ref/mass_error"] < 1e-5
    assert metrics["ref/action_error"] < 1e-6
    assert -1e-6 < metrics["fp/grid_exploitability"] < 1e-3
    assert metrics["ref/flow_tv_max"] < 0.01
    assert metrics["reference/exploitability"] == pytest.approx(metrics["fp/grid_exploitability"])
    # the continuous game's value νκ A(κ) + c T dt log(2π I₀(κ)) (A = I₁/I₀), up to O(dt): measured 3.3509 vs 3.3596
    from scipy.special import i0, i1
    exact_value = (config.nu * config.kappa * i1(config.kappa) / i0(config.kappa)
                   + config.crowd_cost * config.horizon * config.dt * module.log_normaliser(config.kappa))
    assert metrics["fp/grid_policy_value"] == pytest.approx(exact_value, abs=0.02)

    class Zero:
        action_bound = config.action_bound

        def distribution(self, t, x):
            return torch.zeros_like(x), torch.zeros_like(x)

    zero = evaluator.evaluate(0, Zero(), module.EquilibriumPopulation(config), [], None)
    assert zero["fp/grid_exploitability"] > 0.3 and zero["ref/flow_tv_max"] > 0.2
    cells = -np.pi + 2 * np.pi * (np.arange(200) + 0.5) / 200          # the evaluator's points
    weights = np.exp(config.kappa * np.cos(cells))
    expected = config.nu * config.kappa * float(np.sum(np.abs(np.sin(cells)) * weights) / weights.sum())
    assert zero["ref/action_error"] == pytest.approx(expected, rel=1e-5)


def test_discrete_time_exact_policy_keeps_the_population_near_mu_star(example):
    """200,000 agents playing a* in the Euler game: max over t of the histogram TV to μ*.

    Measured over 5 seeds: 0.0073-0.0085 (the O(dt) drift of the Euler chain plus 0.005 of sampling
    noise); the policy a = 0 drifts to 0.22.
    """
    _, _, game, module = example
    config = game.config
    sim = rollout(game, module.ExactPolicy(config), 200_000, game.bind(module.EquilibriumPopulation(config)),
                  deterministic=True, generator=torch.Generator().manual_seed(0), rewards=False)
    assert game.domain.contains(sim.states.reshape(-1, 1)).all()
    assert max(_histogram_tv(sim.states[t, :, 0], config.kappa) for t in range(config.horizon + 1)) < 0.012


def test_evaluator_scores_a_periodic_flow_fitted_to_mu_star(example, evaluator):
    """The evaluator reads any population model: a PeriodicFlowPopulation fitted to 1,000 μ* samples per t.

    Measured over 4 seeds (200 steps): ref/tv_max 0.042-0.046, ref/mass_error <= 4e-4.
    """
    _, _, game, module = example
    config = game.config
    gen = torch.Generator().manual_seed(0)
    times = torch.arange(config.horizon + 1).repeat_interleave(1000)
    states = module.sample_von_mises(times.shape[0], config.kappa, gen, "cpu")
    flow = PeriodicFlowPopulation(FlowConfig(transforms=2, hidden=32, steps=200, batch_size=512, lr=5e-3), 1,
                                  config.horizon, game.domain.low, game.domain.high)
    flow.fit(times, states, generator=gen)
    errors = evaluator.density_errors(flow)
    assert errors["ref/mass_error"] < 2e-3
    assert errors["ref/tv_max"] < 0.055 and errors["ref/tv_mean"] < errors["ref/tv_max"] + 1e-12
