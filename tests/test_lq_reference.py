"""Analytic-truth tests of the exact LQ reference (Riccati, propagation, exploitability)."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dedafp.envs.lq import LQGame, lq_preset
from dedafp.reference import lq


def _unpack(theta: np.ndarray, T: int, d: int) -> lq.AffinePolicy:
    gains = theta[: T * d * d].reshape(T, d, d)
    offsets = theta[T * d * d:].reshape(T, d)
    return lq.AffinePolicy(gains, offsets, np.zeros((T, d, d)))


@pytest.mark.parametrize("preset, horizon", [("lq1d", 6), ("lq2d", 3)])
def test_riccati_matches_brute_force_optimisation(preset, horizon):
    config = lq_preset(preset).replace(horizon=horizon)
    rng = np.random.default_rng(0)
    mean_flow = rng.normal(size=(horizon + 1, config.dim))
    br = lq.best_response(config, mean_flow)
    T, d = horizon, config.dim
    result = minimize(lambda th: -lq.policy_value(config, _unpack(th, T, d), mean_flow),
                      np.zeros(T * d * d + T * d), method="BFGS", options={"gtol": 1e-10})
    brute = _unpack(result.x, T, d)
    assert -result.fun == pytest.approx(br.value(config), abs=1e-8)
    np.testing.assert_allclose(brute.gains, br.policy.gains, atol=1e-4)
    np.testing.assert_allclose(brute.offsets, br.policy.offsets, atol=1e-4)
    # The best response's value equals its own exact policy value.
    assert lq.policy_value(config, br.policy, mean_flow) == pytest.approx(br.value(config), abs=1e-10)


@pytest.mark.parametrize("preset", ["lq1d", "lq2d"])
def test_equilibrium_has_zero_exploitability_and_is_a_fixed_point(preset):
    config = lq_preset(preset)
    eq = lq.equilibrium(config)
    assert abs(lq.exploitability(config, [eq.policy]).exploitability) < 1e-10
    induced = lq.propagate(config, [lq.best_response(config, eq.mean_flow).policy]).mean_flow
    np.testing.assert_allclose(induced, eq.mean_flow, atol=1e-10)


def test_lq2d_reference_figures():
    config = lq_preset("lq2d")
    assert lq.exploitability(config, [lq.AffinePolicy.zero(config)]).exploitability == pytest.approx(
        12.40, abs=0.01)
    trace = lq.exact_fictitious_play(config, 10)
    assert trace.exploitability[10] == pytest.approx(0.26, abs=0.005)
    assert np.all(np.diff(trace.exploitability) < 0)


def test_policy_value_matches_simulated_returns_of_the_game():
    # Independent check of the moment formulas against the torch game's own reward functions.
    config = lq_preset("lq2d")
    eq = lq.equilibrium(config)
    noisy = lq.AffinePolicy(eq.policy.gains, eq.policy.offsets,
                            np.broadcast_to(0.09 * np.eye(2), (config.horizon, 2, 2)).copy())
    game, n = LQGame(config), 200_000
    gen = torch.Generator().manual_seed(1)
    field = torch.as_tensor(eq.mean_flow, dtype=torch.float32)
    act = lq.affine_policy_fn(noisy)
    x, total = game.initial_states(n, gen), torch.zeros(n, dtype=torch.float64)
    for t in range(config.horizon):
        mean, std = act(t, x)
        a = mean + std * torch.randn(mean.shape, generator=gen)
        total += game.reward(t, x, a, field).double()
        x = game.step(t, x, a, field, torch.randn(x.shape, generator=gen))
    total += game.terminal_reward(x, field).double()
    exact = lq.policy_value(config, noisy, eq.mean_flow)
    std_error = float(total.std()) / np.sqrt(n)
    assert abs(float(total.mean()) - exact) < 4 * std_error


def test_monte_carlo_exploitability_is_low_variance_and_unbiased():
    config = lq_preset("lq2d")
    eq = lq.equilibrium(config)
    at_eq = lq.monte_carlo_exploitability(config, lq.affine_policy_fn(eq.policy), 100_000)
    assert at_eq.exploitability.std_error < 1e-3
    assert abs(at_eq.exploitability.exploitability) < 1e-3
    zero = lq.AffinePolicy.zero(config)
    mc = lq.monte_carlo_exploitability(config, lq.affine_policy_fn(zero), 100_000).exploitability
    exact = lq.exploitability(config, [zero]).exploitability
    assert abs(mc.exploitability - exact) < 4 * mc.std_error + 0.01


@pytest.mark.parametrize("field, value, message", [
    ("horizon", 0, "horizon must be an integer >= 1"),
    ("sigma", -1.0, "sigma must be a finite number >= 0"),
    ("R", [[0.0, 0.0], [0.0, 0.0]], "R must be positive definite"),
    ("A", [[1.0]], r"A must have shape \(2, 2\)"),
    ("x_target", [1.0, 2.0, 3.0], "x_target must have length 2"),
])
def test_bad_lq_configs_fail_clearly(field, value, message):
    with pytest.raises(ValueError, match=message):
        lq_preset("lq2d").replace(**{field: value})


def test_unknown_preset_names_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: 'lq1d', 'lq2d'"):
        lq_preset("lq3d")
