"""The beach-bar game: reflection, the domain invariant (property-based), rewards, binding, validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dedafp.envs.beach_bar import BeachBarConfig, BeachBarGame, beach_bar, reflect, running_reward, state_reward
from dedafp.population.base import PopulationModel

GAME = BeachBarGame()


class Triangle(PopulationModel):
    """Density 2x on [0, 1] (and 0 elsewhere) at every t; counts its log_prob calls."""

    dim, horizon = 1, 20

    def __init__(self):
        self.calls = 0

    @property
    def device(self):
        return torch.device("cpu")

    def sample(self, t, n, generator=None):
        return torch.sqrt(torch.rand(n, 1, generator=generator))

    def log_prob(self, x, t):
        self.calls += 1
        inside = (x[:, 0] > 0) & (x[:, 0] <= 1)
        return torch.where(inside, torch.log(2 * x[:, 0].clamp(min=1e-30)), torch.full_like(x[:, 0], -math.inf))

    def mean(self, t):
        return torch.tensor([2.0 / 3.0])


def naive_reflect(y: float) -> float:
    while y < 0 or y > 1:
        y = -y if y < 0 else 2 - y
    return y


@settings(max_examples=300, deadline=None)
@given(st.floats(-50, 50))
def test_reflect_matches_repeated_bouncing_and_stays_in_the_interval(y):
    out = reflect(torch.tensor([y], dtype=torch.float64)).item()
    assert 0.0 <= out <= 1.0
    assert out == pytest.approx(naive_reflect(y), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(x=st.floats(0, 1), a=st.floats(-10, 10), noise=st.floats(-40, 40))
def test_a_step_never_leaves_the_interval(x, a, noise):
    xt = torch.tensor([[x]], dtype=torch.float64)
    out = GAME.step(0, xt, torch.tensor([[a]], dtype=torch.float64), None,
                    torch.tensor([[noise]], dtype=torch.float64)).item()
    assert 0.0 <= out <= 1.0
    proposal = x + max(-2.0, min(2.0, a)) * 0.05 + GAME.config.noise_scale * noise
    assert out == pytest.approx(naive_reflect(proposal), abs=1e-9)


def test_trajectories_stay_in_the_interval_and_reach_the_bar():
    generator = torch.Generator().manual_seed(0)
    x = GAME.initial_states(20_000, generator)
    assert x.min() >= 0 and x.max() <= 0.25
    for t in range(GAME.horizon):
        a = 2.0 * torch.sign(0.5 - x)                         # head for the bar at full speed
        x = GAME.step(t, x, a, None, torch.randn(x.shape, generator=generator))
        assert ((x >= 0) & (x <= 1)).all()
    # Full speed covers 0.1 per step: after 20 steps everyone hovers around the bar.
    assert (x - 0.5).abs().mean() < 0.1


def test_reward_formula_terminal_convention_and_one_density_query():
    population = Triangle()
    field = GAME.bind(population)
    assert field is population
    x = torch.tensor([[0.25], [0.5], [1.5]])
    a = torch.tensor([[1.0], [-3.0], [0.0]])                 # -3 is clipped to -2
    r = GAME.reward(0, x, a, field)
    assert population.calls == 1
    expected = [-0.25 - 0.1 * 1.0 - 0.1 * math.log(0.5 + 0.01),
                -0.0 - 0.1 * 4.0 - 0.1 * math.log(1.0 + 0.01),
                -1.0 - 0.0 - 0.1 * math.log(0.01)]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-6)
    # Terminal reward: the running reward without the action cost.
    g = GAME.terminal_reward(x, field)
    np.testing.assert_allclose(g.numpy(), np.array(expected) + 0.1 * np.array([1.0, 4.0, 0.0]), rtol=1e-6)
    log_density = torch.tensor([0.3])
    assert (running_reward(x[:1], a[:1], log_density, GAME.config)
            == state_reward(x[:1], log_density, GAME.config) - 0.1).all()


def test_binding_checks_and_misplaced_mass():
    with pytest.raises(TypeError, match="log_prob"):
        GAME.bind(42)
    short = Triangle()
    short.horizon = 5
    with pytest.raises(ValueError, match="horizon>=20"):
        GAME.bind(short)
    report = GAME.misplaced_mass(Triangle(), n=1000, generator=torch.Generator().manual_seed(0))
    assert report.outside.shape == (21,) and report.worst == 0.0


def test_normalised_observation():
    obs = GAME.observation(20, torch.tensor([[0.0], [1.0]]))
    np.testing.assert_allclose(obs.numpy(), [[1.0, -1.0], [1.0, 1.0]])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"horizon": 2.5}, "horizon must be an integer >= 1"),
    ({"dt": 0}, "dt must be > 0"),
    ({"crowd_cost": -0.1}, "crowd_cost must be >= 0"),
    ({"bar": 1.5}, "bar must be <= 1.0"),
    ({"init_low": 0.3, "init_high": 0.2}, "init_high must exceed init_low"),
    ({"density_floor": float("inf")}, "density_floor must be a finite number"),
    ({"action_bound": True}, "action_bound must be a finite number"),
    ({"speed": 1.0}, "unknown beach_bar parameter"),
])
def test_invalid_configs_fail_with_the_field_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        beach_bar(**overrides)


def test_preset_values():
    config = beach_bar()
    assert config == BeachBarConfig()
    assert (config.horizon, config.dt, config.sigma, config.bar, config.action_cost, config.crowd_cost,
            config.density_floor, config.init_high) == (20, 0.05, 0.2, 0.5, 0.1, 0.1, 0.01, 0.25)
