"""MFGAN: exact-solution checks of the residual operators, the density's normalisation, the networks'
periodicity, config validation, short training runs, the first-order stall and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from scipy.special import i0

from dedafp.mfgan import (
    ErgodicProblem,
    MFGANConfig,
    MFGANSolver,
    NetworkConfig,
    PeriodicMLP,
    derivatives,
    fp_residual_over_m,
    hjb_lhs_minus_log_m,
    log_mean_exp,
    make_problem,
    solution_errors,
    torus_grid,
)
from dedafp.mfgan.cli import main as cli_main

F64 = torch.float64
TWO_PI = 2 * math.pi


def _uniform(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("dim", [1, 3])
def test_potentials_are_the_ones_stated_in_the_issue(dim):
    x = _uniform(500, dim)
    s, c = torch.sin(TWO_PI * x), torch.cos(TWO_PI * x)
    stated_viscous = (2 * math.pi**2 * (s - c**2) + 2 * s).sum(-1)
    torch.testing.assert_close(make_problem("viscous", dim).potential(x), stated_viscous, rtol=0, atol=1e-12)
    torch.testing.assert_close(make_problem("first-order", dim).potential(x), s.sum(-1), rtol=0, atol=1e-12)
    assert make_problem("viscous", dim).exact_hbar == pytest.approx(dim * math.log(i0(2.0)), abs=1e-14)
    assert make_problem("first-order", dim).exact_hbar == pytest.approx(dim * math.log(i0(1.0)), abs=1e-14)


@pytest.mark.parametrize("name", ["viscous", "first-order"])
@pytest.mark.parametrize("dim", [1, 4])
def test_residuals_vanish_on_the_exact_solution_and_not_on_a_perturbed_one(name, dim):
    problem = make_problem(name, dim)
    x = _uniform(2000, dim)
    _, u_grad, u_lap = derivatives(problem.exact_u, x)
    _, f_grad, f_lap = derivatives(problem.exact_log_density_unnormalised, x)
    # With the *normalised* ln m*, the HJB's left side minus ln m* is exactly H̄ (float64 autograd:
    # the exact derivatives leave only rounding, measured <= 3e-14 in d = 4).
    r = hjb_lhs_minus_log_m(problem, x, u_grad, u_lap, problem.exact_log_m(x))
    assert (r - problem.exact_hbar).abs().max() < 1e-11
    assert fp_residual_over_m(problem.nu, u_grad, u_lap, f_grad, f_lap).abs().max() < 1e-11

    # Sanity: the same operators see a perturbation of u (so the checks above can fail).
    def bumped_u(y: torch.Tensor) -> torch.Tensor:
        return problem.exact_u(y) + 0.1 * torch.cos(2 * TWO_PI * y[:, 0])

    _, g2, l2 = derivatives(bumped_u, x)
    r2 = hjb_lhs_minus_log_m(problem, x, g2, l2, problem.exact_log_m(x))
    assert (r2 - r2.mean()).abs().max() > 0.1
    assert fp_residual_over_m(problem.nu, g2, l2, f_grad, f_lap).abs().max() > 0.1


@pytest.mark.parametrize("name", ["viscous", "first-order"])
@pytest.mark.parametrize("dim, points_per_dim", [(1, 1024), (4, 16)])
def test_errors_of_the_exact_solution_vanish_to_quadrature_accuracy(name, dim, points_per_dim):
    problem = make_problem(name, dim)
    grid = torus_grid(points_per_dim, dim, dtype=F64)
    # Z and H̄ from the grid (the default evaluation grids): the periodic trapezoidal rule's error is
    # set by the integrand's n-th Fourier coefficients (n points per axis). Largest measured: 4.5e-10
    # (m-weighted H̄, viscous, d = 4, 16 per axis; 8 per axis gave 1e-4); everything else <= 1e-13.
    errors = solution_errors(problem, problem.exact_u, problem.exact_log_density_unnormalised, grid)
    assert errors["err_m"] < 1e-8
    assert errors["err_u"] < 1e-12
    assert abs(errors["err_hbar"]) < 1e-8
    assert abs(errors["err_hbar_ls"]) < 1e-8
    assert errors["log_z"] == pytest.approx(problem.exact_log_normaliser, abs=1e-8)
    # A 5% wrong amplitude of ln m is seen (measured err_m 0.024-0.077 over these cases). With u = u*
    # the m-weighted H̄ error is exactly −KL(m‖m*) < 0, second order (measured -4.5e-4 to -3.5e-3);
    # the uniform least-squares one is first order (measured -0.022 to -0.28).
    wrong = solution_errors(problem, problem.exact_u, lambda y: 0.95 * problem.exact_log_density_unnormalised(y), grid)
    assert wrong["err_m"] > 0.02
    assert -0.01 < wrong["err_hbar"] < -2e-4
    assert abs(wrong["err_hbar_ls"]) > 1e-2


@pytest.mark.parametrize("dim, coarse, fine", [(1, 1024, 4099), (2, 256, 301), (4, 16, 21)])
def test_density_integrates_to_one(dim, coarse, fine):
    # m = exp(f)/Z with Z from the solver's evaluation grid, integrated on an independent grid
    # (different size, so no shared nodes except by accident). For the initial network f is smooth
    # and both rules are spectrally accurate; measured |∫m − 1| <= 2e-12 for dims 1, 2, 4.
    solver = MFGANSolver(MFGANConfig(dim=dim, dtype="float64", seed=3))
    assert solver.eval_points.shape[0] == coarse**dim
    with torch.no_grad():
        log_z = log_mean_exp(solver.f_net(solver.eval_points))
        m = torch.exp(solver.f_net(torus_grid(fine, dim, dtype=F64)) - log_z)
    assert float(m.mean()) == pytest.approx(1.0, abs=1e-8)
    # ... and the density is not trivially uniform (so the check is not vacuous).
    assert float(m.max() - m.min()) > 1e-3


def test_networks_are_periodic_in_every_coordinate():
    torch.manual_seed(0)
    net = PeriodicMLP(3, NetworkConfig(width=16, depth=2, harmonics=3)).double()
    x = _uniform(64, 3)
    value, grad, lap = derivatives(net, x)
    for i in range(3):
        shifted = x.clone()
        shifted[:, i] += 1.0
        v2, g2, l2 = derivatives(net, shifted)
        torch.testing.assert_close(v2, value, rtol=0, atol=1e-12)
        torch.testing.assert_close(g2, grad, rtol=0, atol=1e-11)
        torch.testing.assert_close(l2, lap, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
        net(x[:, :2])


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "gan"}, "mode must be one of"),
    ({"problem": "heat"}, "problem must be one of"),
    ({"fp_form": "flux"}, "fp_form must be one of"),
    ({"dim": 0}, "dim must be an integer between 1 and 8"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"lr": 1e-3, "lr_final": 1e-2}, "lr_final must be <= lr"),
    ({"density_hjb_weight": -1.0}, "density_hjb_weight must be None"),
    ({"value_fp_weight": float("nan")}, "value_fp_weight must be None"),
    ({"device": "tpu"}, "device must be"),
    ({"dtype": "float16"}, "dtype must be one of"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MFGANConfig(**kwargs)


def test_problem_rejects_negative_viscosity_and_inconsistent_flux():
    with pytest.raises(ValueError, match="nu must be >= 0, got -1"):
        ErgodicProblem("x", 1, nu=-1, amplitude=0.0, u_amplitude=0.0)
    with pytest.raises(ValueError, match="amplitude \\* nu must equal -u_amplitude"):
        ErgodicProblem("x", 1, nu=0.5, amplitude=1.0, u_amplitude=-1.0)
    with pytest.raises(ValueError, match="problem must be one of"):
        make_problem("heat")


def test_automatic_cross_coupling_only_for_first_order_problems():
    assert MFGANConfig(problem="viscous").resolved_cross_weights() == (0.0, 0.0)
    assert MFGANConfig(problem="first-order").resolved_cross_weights() == (1.0, 1.0)
    assert MFGANConfig(problem="first-order", density_hjb_weight=0).resolved_cross_weights() == (0.0, 1.0)


@pytest.mark.parametrize("mode", ["mfgan", "joint"])
def test_short_viscous_d1_training_approaches_the_exact_solution(mode):
    # 300 iterations (~3-5 s). Measured over seeds 0-4 (both modes): err_m <= 5.8e-4, err_u <= 1.1e-2,
    # |err_hbar| <= 1e-4, |err_hbar_ls| <= 5.7e-3; initially err_m ~ 0.7, err_u ~ 1. Bounds: ~3x the worst.
    result = MFGANSolver(MFGANConfig(mode=mode, iterations=300, log_every=100, seed=0)).train()
    first, last = result.history[0], result.final
    assert [row["iteration"] for row in result.history] == [100, 200, 300]
    assert last["err_m"] < 2e-3
    assert last["err_u"] < 3.5e-2
    assert abs(last["err_hbar"]) < 3e-4
    assert abs(last["err_hbar_ls"]) < 2e-2
    assert last["loss_hjb"] < first["loss_hjb"]
    assert not result.stalled


def test_training_is_reproducible_for_a_seed_and_changes_with_it():
    a = MFGANSolver(MFGANConfig(iterations=20, log_every=20, seed=5)).train().final
    b = MFGANSolver(MFGANConfig(iterations=20, log_every=20, seed=5)).train().final
    c = MFGANSolver(MFGANConfig(iterations=20, log_every=20, seed=6)).train().final
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert a["err_m"] != c["err_m"]


def test_first_order_starved_density_player_is_detected_and_the_default_prevents_it(caplog):
    # The value player driven to grad u = 0 by the FP residual, the density player on the FP
    # residual alone: m keeps its initial shape (err_m 0.52-0.54 over seeds 0-2 at 300 iterations)
    # and the stall is flagged. The default (both cross-couplings on for nu = 0) converges: err_m
    # 0.035-0.075 over the same seeds.
    starved = MFGANSolver(MFGANConfig(problem="first-order", iterations=300, log_every=100, seed=0,
                                      density_hjb_weight=0.0, value_fp_weight=1.0)).train()
    assert starved.stalled
    assert starved.final["err_m"] > 0.3
    assert "density player stalled" in caplog.text
    fixed = MFGANSolver(MFGANConfig(problem="first-order", iterations=300, log_every=100, seed=0)).train()
    assert not fixed.stalled
    assert fixed.final["err_m"] < 0.2


def test_density_form_of_the_fp_residual_is_m_times_the_log_form():
    solver = MFGANSolver(MFGANConfig(fp_form="density", dtype="float64", seed=1))
    x = _uniform(128, 1, seed=2)
    with torch.no_grad():
        log_z = log_mean_exp(solver.f_net(solver.normaliser_points))
    dense = solver._losses(x, train_u=False, train_f=False).fp.detach()
    plain = MFGANSolver(MFGANConfig(fp_form="log", dtype="float64", seed=1))
    _, ug, ul = derivatives(plain.u_net, x)
    f, fg, fl = derivatives(plain.f_net, x)
    expected = ((torch.exp(f - log_z) * fp_residual_over_m(0.5, ug, ul, fg, fl)) ** 2).mean().detach()
    assert float(dense) == pytest.approx(float(expected), rel=1e-10)
    assert float(plain._losses(x, train_u=False, train_f=False).fp.detach()) != pytest.approx(float(expected), rel=1e-3)


class _NaNPotential(ErgodicProblem):
    def potential(self, x):
        return torch.full(x.shape[:1], float("nan"), dtype=x.dtype)


def test_non_finite_losses_raise_a_clear_error():
    solver = MFGANSolver(MFGANConfig(iterations=5))
    solver.problem = _NaNPotential("nan", 1, nu=0.5, amplitude=2.0, u_amplitude=-1.0)
    with pytest.raises(FloatingPointError, match="non-finite generator \\(HJB\\) loss \\(iteration 0\\)"):
        solver.train()


def test_cli_mfgan_writes_summary_histories_and_figures(tmp_path, capsys):
    out = tmp_path / "study"
    code = cli_main(["mfgan", "--iterations", "20", "--seeds", "0", "1", "--out", str(out), "--set", "log_every=10",
                     "--set", "network.width=16"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {r["mode"] for r in summary["runs"]} == {"mfgan", "joint"} and len(summary["runs"]) == 4
    assert summary["config"]["network"]["width"] == 16
    assert set(summary["median"]) == {"mfgan", "joint"}
    for name in ("solution.png", "training.png", "history_mfgan_seed1.csv", "history_joint_seed0.csv"):
        assert (out / name).stat().st_size > 0
    assert len((out / "history_joint_seed0.csv").read_text().splitlines()) == 3  # header + 2 rows
    assert "median over 2 seed(s)" in capsys.readouterr().out
    assert cli_main(["mfgan", "--iterations", "5", "--out", str(out), "--set", "nonsense=1"]) == 2
    assert "unknown mfgan config field 'nonsense'" in capsys.readouterr().err
