"""Tests of the Fokker–Planck residual and the fp_penalty option of the population flow."""

from __future__ import annotations

import math

import pytest
import torch

from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.fokker_planck import FokkerPlanckTerm, drift_from_step, fokker_planck_residual

THETA, OMEGA, SIGMA, DT = 0.7, 1.3, 0.5, 0.1
M0 = torch.tensor([1.5, -0.5], dtype=torch.float64)
P0 = torch.tensor([[0.6, 0.2], [0.2, 0.3]], dtype=torch.float64)


def _ou_moments(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean [n, 2] and covariance [n, 2, 2] of dX = (−θ I + ω J) X ds + σ dW, X_0 ~ N(M0, P0)."""
    c, sn = torch.cos(OMEGA * s), torch.sin(OMEGA * s)
    rot = torch.stack([torch.stack([c, -sn], -1), torch.stack([sn, c], -1)], -2)     # e^{ωJs}
    decay = torch.exp(-THETA * s)[:, None, None]
    flow = decay * rot                                                                 # e^{Ms}
    mean = flow @ M0
    noise = (SIGMA**2 / (2 * THETA) * -torch.expm1(-2 * THETA * s))[:, None, None] * torch.eye(2, dtype=s.dtype)
    return mean, flow @ P0 @ flow.transpose(-1, -2) + noise


def _ou_log_density(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    mean, cov = _ou_moments(t * DT)
    diff = (x - mean).unsqueeze(-1)
    quad = (diff.transpose(-1, -2) @ torch.linalg.solve(cov, diff)).squeeze(-1).squeeze(-1)
    return -0.5 * quad - 0.5 * torch.logdet(cov) - math.log(2 * math.pi)


def _ou_drift(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    matrix = torch.tensor([[-THETA, -OMEGA], [OMEGA, -THETA]], dtype=x.dtype)
    return x @ matrix.T


def test_residual_vanishes_for_an_exact_continuous_ou_process() -> None:
    gen = torch.Generator().manual_seed(0)
    t = 20 * torch.rand(400, generator=gen, dtype=torch.float64)
    x = 2 * torch.randn(400, 2, generator=gen, dtype=torch.float64)
    term = FokkerPlanckTerm(_ou_drift, SIGMA, DT)
    residual = fokker_planck_residual(_ou_log_density, term, x, t)
    assert residual.abs().max() < 1e-10
    # it can fail: the wrong noise, or time running at the wrong speed
    assert (fokker_planck_residual(_ou_log_density, FokkerPlanckTerm(_ou_drift, 2 * SIGMA, DT), x, t) ** 2).mean() > 0.1
    assert (fokker_planck_residual(_ou_log_density, FokkerPlanckTerm(_ou_drift, SIGMA, 2 * DT), x, t) ** 2).mean() > 0.1


def _lq_gaussian_log_density(means: torch.Tensor, covs: torch.Tensor):
    """Gaussian log-density at continuous t, moments interpolated linearly between the integer times."""
    horizon = means.shape[0] - 1

    def log_density(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        lower = t.detach().floor().long().clamp(0, horizon - 1)
        w = (t - lower.to(t.dtype))[:, None]
        mean = (1 - w) * means[lower] + w * means[lower + 1]
        cov = (1 - w[..., None]) * covs[lower] + w[..., None] * covs[lower + 1]
        diff = (x - mean).unsqueeze(-1)
        quad = (diff.transpose(-1, -2) @ torch.linalg.solve(cov, diff)).squeeze(-1).squeeze(-1)
        return -0.5 * quad - 0.5 * torch.logdet(cov) - 0.5 * x.shape[1] * math.log(2 * math.pi)

    return log_density


@pytest.mark.parametrize("preset", ["lq1d", "lq2d"])
def test_lq_exact_marginals_have_a_small_residual_that_shrinks_with_dt(preset: str) -> None:
    from dedafp.envs.lq import LQGame, lq_preset
    from dedafp.reference import lq

    scores = []
    for refine in (1, 4):
        base = lq_preset(preset)
        dt, horizon = base.dt / refine, base.horizon * refine
        eye = torch.eye(base.dim).numpy()
        # the same continuous-time game on a finer grid: A = I + dt·0, B = dt, Ā = Ā₀ dt / dt₀, costs ∝ dt
        config = base.replace(dt=dt, horizon=horizon, B=dt * eye, A_bar=base.array("A_bar") / refine,
                              Q_x=base.array("Q_x") / refine, R=base.array("R") / refine,
                              Q_m=base.array("Q_m") / refine)
        eq = lq.equilibrium(config)
        game = LQGame(config)
        field = torch.as_tensor(eq.mean_flow, dtype=torch.float64)
        gains, offsets = (torch.as_tensor(v, dtype=torch.float64) for v in (eq.policy.gains, eq.policy.offsets))

        def step(t, x, a, field, noise, game=game):
            c = game.config
            A, B, A_bar = (torch.as_tensor(c.array(n), dtype=x.dtype) for n in ("A", "B", "A_bar"))
            return x @ A.T + a @ B.T + field[t] @ A_bar.T + c.sigma * math.sqrt(c.dt) * noise

        drift = drift_from_step(step, lambda t, x, g=gains, o=offsets: x @ g[t].T + o[t], field, horizon, dt)
        term = FokkerPlanckTerm(drift, config.sigma, dt)
        log_density = _lq_gaussian_log_density(field, torch.as_tensor(eq.cov_flow, dtype=torch.float64))
        gen = torch.Generator().manual_seed(1)
        t = (torch.arange(horizon, dtype=torch.float64) + 0.5).repeat_interleave(64)
        mean, cov = field, torch.as_tensor(eq.cov_flow, dtype=torch.float64)
        lower = t.long()
        x = mean[lower] + (torch.linalg.cholesky(cov[lower]) @ torch.randn(t.shape[0], config.dim, 1,
                                                                             generator=gen, dtype=torch.float64)
                           ).squeeze(-1)
        scores.append(float((fokker_planck_residual(log_density, term, x, t) ** 2).mean()))
    # measured: E[R²] = 0.039 (lq1d and lq2d) at dt = 0.1 and 0.0029 / 0.0031 at dt = 0.025 (R = O(dt))
    assert scores[0] < 0.08
    assert scores[1] < 0.25 * scores[0]


def _data(horizon: int = 4, per_time: int = 64, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    times = torch.arange(horizon + 1).repeat_interleave(per_time)
    states = torch.randn(times.shape[0], dim, generator=gen) * (1 + 0.2 * times[:, None]) + 0.3 * times[:, None]
    return times, states


@pytest.mark.parametrize("backend, nll, weights", [("nflows", 3.902069330215454, 2.726452965885983),
                                                    ("zuko", 3.5521774291992188, 1.7494976091657009)])
def test_fp_penalty_zero_leaves_fit_bit_identical(backend: str, nll: float, weights: float) -> None:
    # nll and weights were recorded with flow.py before fp_penalty existed (same machine, torch CPU).
    times, states = _data()
    config = FlowConfig(backend=backend, steps=15, batch_size=128, hidden=16, transforms=2, mean_samples=64)
    term = FokkerPlanckTerm(lambda t, x: -x, 0.5, 0.1)
    fits = []
    for extra in ({}, {"fokker_planck": term}):
        flow = FlowPopulation(config, dim=2, horizon=4, seed=1)
        value = flow.fit(times, states, generator=torch.Generator().manual_seed(2), **extra)
        fits.append((value, [p.detach().clone() for p in flow.net.parameters()]))
        assert math.isnan(flow.last_fp_residual)
    assert fits[0][0] == fits[1][0]
    assert all(torch.equal(p, q) for p, q in zip(fits[0][1], fits[1][1], strict=True))
    assert fits[0][0] == pytest.approx(nll, rel=1e-6)
    assert sum(float(p.double().sum()) for p in fits[0][1]) == pytest.approx(weights, rel=1e-6)


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), True, "1"])
def test_flow_config_rejects_bad_fp_penalty(value: object) -> None:
    with pytest.raises(ValueError, match="fp_penalty"):
        FlowConfig(fp_penalty=value)


def test_fp_penalty_needs_the_drift_and_bad_terms_are_rejected() -> None:
    times, states = _data()
    flow = FlowPopulation(FlowConfig(steps=2, fp_penalty=0.1), dim=2, horizon=4)
    with pytest.raises(ValueError, match="fokker_planck"):
        flow.fit(times, states)
    with pytest.raises(ValueError, match="dt"):
        FokkerPlanckTerm(lambda t, x: x, 0.5, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        FokkerPlanckTerm(lambda t, x: x, -1.0, 0.1)


@pytest.mark.parametrize("dim", [1, 2])
def test_log_prob_continuous_matches_log_prob_at_integer_times(dim: int) -> None:
    times, states = _data(dim=dim)
    flow = FlowPopulation(FlowConfig(steps=5, hidden=8, transforms=2), dim=dim, horizon=4, seed=0)
    flow.fit(times, states, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(flow.log_prob_continuous(states, times.float()), flow.log_prob(states, times),
                              atol=1e-5)


def test_fp_penalty_lowers_the_residual_of_the_fitted_flow() -> None:
    # 1-D OU data: dX = −θX ds + σ dW from N(1.5, 0.6), sampled exactly at t = 0..4 (s = t·dt).
    theta, horizon, per_time = 0.7, 4, 128
    gen = torch.Generator().manual_seed(3)
    times = torch.arange(horizon + 1).repeat_interleave(per_time)
    s = times.double() * DT
    mean = 1.5 * torch.exp(-theta * s)
    var = 0.6 * torch.exp(-2 * theta * s) + SIGMA**2 / (2 * theta) * -torch.expm1(-2 * theta * s)
    states = (mean + var.sqrt() * torch.randn(times.shape[0], generator=gen, dtype=torch.float64)).float()[:, None]
    term = FokkerPlanckTerm(lambda t, x: -theta * x, SIGMA, DT, points=128)
    residuals = []
    for gamma in (0.0, 0.1):
        flow = FlowPopulation(FlowConfig(steps=60, hidden=16, transforms=2, fp_penalty=gamma), 1, horizon, seed=0)
        flow.fit(times, states[:, :], generator=torch.Generator().manual_seed(0), fokker_planck=term)
        t = torch.linspace(0.05, horizon - 0.05, 256)
        x = states[torch.randint(states.shape[0], (256,), generator=gen)]
        residuals.append(float((fokker_planck_residual(flow.log_prob_continuous, term, x, t) ** 2).mean()))
    assert residuals[1] < 0.5 * residuals[0]       # measured: 160 (γ = 0) against 12 (γ = 0.1)
