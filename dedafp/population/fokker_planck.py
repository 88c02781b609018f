"""The Fokker–Planck residual of a time-conditioned population density and a drift.

A population whose agents follow dX = b(s, X) ds + σ dW (s the physical time, b per unit time, σ the
noise intensity per √time) has marginals μ_s solving ∂_s μ = −∇·(b μ) + (σ²/2) Δμ. Divided by μ:

    R(x, s) = ∂_s log μ + ∇·b + b·∇log μ − (σ²/2)(Δ log μ + |∇ log μ|²) = 0.

The population models here are indexed by the integer decision step t = s / dt, so ``∂_s = ∂_t / dt``;
the density is read at *continuous* t through :meth:`FlowPopulation.log_prob_continuous` (the flow's
time context is continuous already). All derivatives are exact autograd (the Laplacian is the trace of
the Hessian, d backward passes), so the cost grows linearly with d.

For a discrete-time game ``x_{t+1} = step(t, x, a, field, noise)`` the drift of the average policy is
``b = (step(t, x, ā(t, x), field, 0) − x) / dt`` (:func:`drift_from_step`); the game's exact discrete
marginals then satisfy the continuous equation only up to O(dt).

Usage::

    term = FokkerPlanckTerm(drift=b, sigma=0.5, dt=0.1)
    r = fokker_planck_residual(flow.log_prob_continuous, term, x, t)     # [n]
    flow.fit(times, states, fokker_planck=term)                          # with FlowConfig(fp_penalty=γ)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

Drift = Callable[[Tensor, Tensor], Tensor]
LogDensity = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FokkerPlanckTerm:
    """What the Fokker–Planck penalty of :meth:`FlowPopulation.fit` needs besides the data.

    Attributes:
        drift: ``b(t [n], x [n, d]) -> [n, d]``, per unit (physical) time, at continuous step times
            ``t ∈ [0, T]`` (float); differentiable in ``x`` (its divergence is taken by autograd).
        sigma: noise intensity σ per √(unit time) (>= 0), as in ``dX = b ds + σ dW``.
        dt: physical time of one step (> 0): s = t · dt.
        points: residual points per training step (>= 1), taken from the minibatch.
    """

    drift: Drift
    sigma: float
    dt: float
    points: int = 256

    def __post_init__(self) -> None:
        if not callable(self.drift):
            raise TypeError(f"drift must be callable b(t, x), got {type(self.drift).__name__}")
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma!r}")
        if not (isinstance(self.dt, (int, float)) and math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be a finite number > 0, got {self.dt!r}")
        if not isinstance(self.points, int) or isinstance(self.points, bool) or self.points < 1:
            raise ValueError(f"points must be an integer >= 1, got {self.points!r}")


def fokker_planck_residual(log_density: LogDensity, term: FokkerPlanckTerm, x: Tensor, t: Tensor,
                           create_graph: bool = False) -> Tensor:
    """R(x, t) ``[n]`` of ``log_density(x [n, d], t [n]) -> [n]`` at states ``x`` and continuous step times ``t``.

    Args:
        log_density: log μ, differentiable in ``x`` and ``t``.
        term: drift, noise and time step.
        x: states ``[n, d]``.
        t: continuous step times ``[n]`` (float).
        create_graph: keep the graph (to train through the residual).

    Returns:
        The residual in units of 1 / (physical time), ``[n]``.
    """
    if x.ndim != 2 or t.shape != x.shape[:1]:
        raise ValueError(f"residual needs x [n, d] and t [n], got {tuple(x.shape)} and {tuple(t.shape)}")
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        t = t.detach().to(x.dtype).requires_grad_(True)
        log_mu = log_density(x, t)
        grad_x, grad_t = torch.autograd.grad(log_mu.sum(), (x, t), create_graph=True)
        b = term.drift(t, x)
        if b.shape != x.shape:
            raise ValueError(f"drift must return [n, d] = {tuple(x.shape)}, got {tuple(b.shape)}")
        laplacian = torch.zeros_like(log_mu)
        divergence = torch.zeros_like(log_mu)
        for i in range(x.shape[1]):
            (second,) = torch.autograd.grad(grad_x[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
            laplacian = laplacian + second[:, i]
            if b.requires_grad:
                (db,) = torch.autograd.grad(b[:, i].sum(), x, create_graph=create_graph, retain_graph=True,
                                            allow_unused=True)
                if db is not None:
                    divergence = divergence + db[:, i]
        residual = grad_t / term.dt + divergence + (b * grad_x).sum(-1) \
            - 0.5 * term.sigma**2 * (laplacian + (grad_x**2).sum(-1))
    return residual if create_graph else residual.detach()


def drift_from_step(step: Callable[[int, Tensor, Tensor, Tensor, Tensor], Tensor],
                    mean_action: Callable[[int, Tensor], Tensor], field: Tensor, horizon: int, dt: float) -> Drift:
    """The drift ``b(t, x) = (step(k, x, ā(k, x), field, 0) − x) / dt`` of a discrete-time game, k = ⌊t⌋ ∧ (T − 1).

    Args:
        step: the game's ``step(t, x [n, d], a [n, d], field, noise [n, d]) -> [n, d]``.
        mean_action: the average policy's mean action ``ā(t, x [n, d]) -> [n, d]``, differentiable in x.
        field: the mean field the step reads (e.g. ``game.bind(population)``).
        horizon: T; the drift on [T − 1, T] is the last step's.
        dt: physical time of one step (> 0).

    Returns:
        ``b(t [n], x [n, d]) -> [n, d]``, piecewise constant in t over the steps [k, k + 1).
    """
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")

    def drift(t: Tensor, x: Tensor) -> Tensor:
        steps = t.detach().floor().long().clamp(0, horizon - 1)
        out = torch.zeros_like(x)
        for k in torch.unique(steps).tolist():
            mask = steps == k
            xk = x[mask]
            moved = step(int(k), xk, mean_action(int(k), xk), field, torch.zeros_like(xk))
            out = out.index_put((mask.nonzero().squeeze(-1),), (moved - xk) / dt)
        return out

    return drift
