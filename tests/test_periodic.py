"""Contract and analytic tests of the periodic population model (a circular spline flow on the circle/torus)."""

import io
import math

import numpy as np
import pytest
import torch
from scipy.special import i0e

from dedafp.population import FlowConfig, PeriodicFlowPopulation, population_from_state_dict

HORIZON = 4
SMALL = FlowConfig(transforms=2, hidden=16, bins=8)


def _box(dim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A periodic box that is not [-π, π) (the affine map to angles is exercised)."""
    return (-1.0,) * dim, (3.0,) * dim


def _random_model(dim: int, seed: int = 0, scale: float = 0.15) -> PeriodicFlowPopulation:
    """A model whose weights are perturbed away from the (uniform) initial state: a non-trivial density."""
    low, high = _box(dim)
    model = PeriodicFlowPopulation(SMALL, dim, HORIZON, low, high, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=gen))
    return model


def _midpoints(dim: int, per_axis: int) -> tuple[torch.Tensor, float]:
    """Cell midpoints of the box ``[n, dim]`` and the volume of one cell."""
    low, high = _box(dim)
    width = high[0] - low[0]
    axis = low[0] + width * (torch.arange(per_axis, dtype=torch.float64) + 0.5) / per_axis
    points = torch.stack([g.reshape(-1) for g in torch.meshgrid(*[axis] * dim, indexing="ij")], 1)
    return points.float(), (width / per_axis) ** dim


def _von_mises(theta: np.ndarray, centre: float, kappa: float) -> np.ndarray:
    return np.exp(kappa * (np.cos(theta - centre) - 1.0)) / (2 * np.pi * i0e(kappa))


@pytest.mark.parametrize("dim", [1, 2])
def test_contract_shapes_dtypes_and_domain(dim):
    model = _random_model(dim)
    low, high = _box(dim)
    x = model.sample(2, 500, torch.Generator().manual_seed(0))
    assert x.shape == (500, dim) and x.dtype == torch.float32
    assert ((x >= low[0]) & (x < high[0])).all()
    assert model.log_prob(x, 2).shape == (500,) and torch.isfinite(model.log_prob(x, 2)).all()
    assert model.log_prob(x[:5], torch.tensor([0, 1, 2, 3, 4])).shape == (5,)
    mean = model.mean(2)
    assert mean.shape == (dim,) and ((mean >= low[0]) & (mean < high[0])).all()
    assert model.mean_flow().shape == (HORIZON + 1, dim)
    r = model.mean_resultant_length(2)
    assert r.shape == (dim,) and ((r >= 0) & (r <= 1)).all()
    again = model.sample(2, 500, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again, x)                     # determinism under an explicit generator


@pytest.mark.parametrize("dim", [1, 2])
def test_unfitted_model_is_uniform(dim):
    low, high = _box(dim)
    model = PeriodicFlowPopulation(SMALL, dim, HORIZON, low, high)
    x = low[0] + 4.0 * torch.rand(50, dim)
    torch.testing.assert_close(model.log_prob(x, 3), torch.full((50,), -dim * math.log(4.0)))


@pytest.mark.parametrize("dim", [1, 2])
def test_density_integrates_to_one_is_periodic_and_has_no_seam(dim):
    model = _random_model(dim)
    points, cell = _midpoints(dim, 4000 if dim == 1 else 200)
    with torch.no_grad():
        for t in (0, HORIZON):
            density = model.log_prob(points, t).exp().double()
            assert float(density.sum() * cell) == pytest.approx(1.0, abs=1e-3)
            assert float(density.max() / density.min()) > 1.5      # the density is not (near) uniform
        x = model.sample(1, 64, torch.Generator().manual_seed(1))
        for shift in (4.0, -8.0):                                    # whole periods, any coordinate
            torch.testing.assert_close(model.log_prob(x + shift, 1), model.log_prob(x, 1), atol=1e-4, rtol=0)
        # across the seam: low + ε and high − ε are 2ε apart on the circle
        for axis in range(dim):
            near_low, near_high = x.clone(), x.clone()
            near_low[:, axis], near_high[:, axis] = -1.0 + 1e-4, 3.0 - 1e-4
            gap = (model.log_prob(near_low, 1) - model.log_prob(near_high, 1)).abs().max()
            assert float(gap) < 2e-3


@pytest.mark.parametrize("dim", [1, 2])
def test_to_base_inverts_and_log_det_matches_autograd(dim):
    model = _random_model(dim, seed=3)
    x = model.sample(3, 5, torch.Generator().manual_seed(2))
    z, log_det = model.to_base(x, 3)
    assert ((z >= -math.pi) & (z <= math.pi)).all()
    torch.testing.assert_close(model.from_base(z, 3), x, atol=1e-4, rtol=0)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: model.to_base(v.unsqueeze(0), 3)[0][0], x[i])
        assert float(torch.linalg.slogdet(jac.double())[1]) == pytest.approx(float(log_det[i].detach()), abs=1e-3)
    torch.testing.assert_close(model.log_prob(x, 3), log_det - dim * math.log(2 * math.pi))


def test_fit_recovers_von_mises_mixtures_on_the_circle():
    """TV to two von Mises mixtures (one centred on the seam) after a 300-step fit on 4,000 samples per t.

    Measured over 8 data/weight seeds: TV 0.037 ± 0.005 (t = 0) and 0.034 ± 0.005 (t = 1), max 0.046;
    the uniform density is at TV 0.41 / 0.44; a box flow through a logit (FlowPopulation with low/high)
    on the same data reaches TV 0.063 / 0.048 with a jump of 0.16 in log μ across the seam. Tolerance:
    mean + 5 sd.
    """
    mixtures = {0: [(0.7, math.pi, 6.0), (0.3, 0.0, 2.0)], 1: [(0.5, -2.0, 4.0), (0.5, 1.5, 8.0)]}
    rng = np.random.default_rng(0)
    n = 4000
    angles = []
    for t in (0, 1):
        weights = [w for w, _, _ in mixtures[t]]
        component = rng.choice(len(weights), size=n, p=weights)
        theta = np.empty(n)
        for c, (_, centre, kappa) in enumerate(mixtures[t]):
            theta[component == c] = rng.vonmises(centre, kappa, int((component == c).sum()))
        angles.append(theta)
    to_state = lambda theta: -1.0 + 4.0 * (theta + np.pi) / (2 * np.pi)         # noqa: E731  angles -> [-1, 3)
    states = torch.tensor(to_state(np.concatenate(angles)), dtype=torch.float32)[:, None]
    model = PeriodicFlowPopulation(FlowConfig(transforms=2, hidden=32, bins=8, steps=300, batch_size=512, lr=5e-3),
                                   1, 1, (-1.0,), (3.0,), seed=0)
    nll = model.fit(torch.arange(2).repeat_interleave(n), states, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(nll)
    grid = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000 * 2 * np.pi - np.pi
    for t in (0, 1):
        truth = sum(w * _von_mises(grid.numpy(), c, k) for w, c, k in mixtures[t]) * 2 * np.pi / 4.0
        with torch.no_grad():
            fitted = model.log_prob(torch.tensor(to_state(grid.numpy()), dtype=torch.float32)[:, None], t).exp()
        tv = 0.5 * np.abs(fitted.numpy() - truth).mean() * 4.0
        assert tv < 0.06, f"t={t}: TV {tv:.3f}"
    # circular mean at t = 0: the seam (x = -1 ≡ 3), where the arithmetic mean would say ~1
    seam_distance = min(abs(float(model.mean(0)[0]) + 1.0), abs(float(model.mean(0)[0]) - 3.0))
    assert seam_distance < 0.05
    assert float(model.mean_resultant_length(1)[0]) < float(model.mean_resultant_length(0)[0])


def test_fit_recovers_a_correlated_density_on_the_torus():
    """θ1 ~ vM(π, 3), θ2 | θ1 ~ vM(θ1 + 1, 4): both coordinates cross the seam.

    Measured over 4 seeds (300 steps, 4,000 samples per t, 128² grid): TV 0.059 ± 0.005, max 0.067; the
    uniform density is at 0.77. Tolerance: mean + 5 sd.
    """
    rng = np.random.default_rng(0)
    n = 4000
    first = rng.vonmises(np.pi, 3.0, 2 * n)
    second = np.remainder(rng.vonmises(first + 1.0, 4.0) + np.pi, 2 * np.pi) - np.pi
    states = torch.tensor(np.stack([first, second], 1), dtype=torch.float32)
    model = PeriodicFlowPopulation(FlowConfig(transforms=2, hidden=32, bins=8, steps=300, batch_size=512, lr=5e-3),
                                   2, 1, (-math.pi,) * 2, (math.pi,) * 2, seed=0)
    model.fit(torch.arange(2).repeat_interleave(n), states, generator=torch.Generator().manual_seed(0))
    axis = -np.pi + 2 * np.pi * (np.arange(128) + 0.5) / 128
    a, b = np.meshgrid(axis, axis, indexing="ij")
    truth = (_von_mises(a, np.pi, 3.0) * _von_mises(b, a + 1.0, 4.0)).ravel()
    points = torch.tensor(np.stack([a.ravel(), b.ravel()], 1), dtype=torch.float32)
    with torch.no_grad():
        tv = 0.5 * np.abs(model.log_prob(points, 1).exp().numpy() - truth).mean() * (2 * np.pi) ** 2
    assert tv < 0.085, f"TV {tv:.3f}"
    mean = model.mean(1)                                   # circular means: π (the seam) and π + 1 ≡ 1 − π
    assert abs(abs(float(mean[0])) - math.pi) < 0.05 and abs(float(mean[1]) - (1.0 - math.pi)) < 0.1


def test_state_dict_round_trip():
    model = _random_model(2)
    x = model.sample(1, 20, torch.Generator().manual_seed(0))
    times = torch.arange(HORIZON + 1).repeat_interleave(40)
    model.fit(times, model.sample(0, times.shape[0]), steps=3, generator=torch.Generator().manual_seed(0))
    state = model.state_dict()
    assert state["kind"] == "periodic"
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = population_from_state_dict(torch.load(buffer, weights_only=False))
    assert isinstance(loaded, PeriodicFlowPopulation) and (loaded.low, loaded.high) == (model.low, model.high)
    torch.testing.assert_close(loaded.log_prob(x, 1), model.log_prob(x, 1))
    torch.testing.assert_close(loaded.mean(2), model.mean(2))
    assert loaded.optimizer.state_dict()["state"].keys() == model.optimizer.state_dict()["state"].keys()
    without_optimizer = {k: v for k, v in state.items() if k != "optimizer"}
    torch.testing.assert_close(PeriodicFlowPopulation.from_state_dict(without_optimizer).log_prob(x, 1),
                               model.log_prob(x, 1))


def test_validation_errors():
    with pytest.raises(ValueError, match="low must be below high"):
        PeriodicFlowPopulation(SMALL, 1, HORIZON, (1.0,), (1.0,))
    with pytest.raises(ValueError, match="must be 2 finite numbers"):
        PeriodicFlowPopulation(SMALL, 2, HORIZON, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="differ from the periodic domain"):
        PeriodicFlowPopulation(FlowConfig(low=(0.0,), high=(2.0,)), 1, HORIZON, (0.0,), (1.0,))
    model = PeriodicFlowPopulation(SMALL, 1, HORIZON, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="states must have shape"):
        model.log_prob(torch.zeros(3, 2), 0)
    with pytest.raises(ValueError, match="t must be in"):
        model.log_prob(torch.zeros(3, 1), HORIZON + 1)
    with pytest.raises(ValueError, match="fit needs times"):
        model.fit(torch.zeros(3), torch.zeros(4, 1))
    with pytest.raises(FloatingPointError):
        model.fit(torch.zeros(2), torch.tensor([[0.0], [float("nan")]]))


def test_the_periodic_flow_refuses_early_stopping_in_one_line():
    with pytest.raises(ValueError, match="flow.patience=2: the periodic flow has no early stopping"):
        PeriodicFlowPopulation(FlowConfig(patience=2), 1, HORIZON, (-math.pi,), (math.pi,))
