"""PDE residual operators of the ergodic MFG, quadrature on the torus, and the error metrics.

Derivatives come from ``torch.autograd`` on the points themselves (``create_graph=True`` so the
losses can be differentiated again with respect to network weights). Every function takes plain
callables ``x [n, d] -> [n]``, so the exact solutions and the networks go through the same code.

The Fokker–Planck residual comes in two forms, both exact rewritings of the same equation with
``m = exp(f)/Z``:

* ``density``: ``R = −νΔm − div(m∇u)``, literally (needs ``Z``);
* ``log`` (divided by ``m > 0``): ``R/m = −ν(Δf + |∇f|²) − ∇f·∇u − Δu``, which does not depend on
  ``Z`` at all, weights every point of the torus alike and cannot be lowered by shrinking ``m``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dedafp.mfgan.problems import ErgodicProblem

Function = Callable[[Tensor], Tensor]
FP_FORMS = ("log", "density")


def check_finite(name: str, value: Tensor, where: str = "") -> None:
    """Raise ``FloatingPointError`` naming ``name`` if ``value`` holds a NaN or an inf."""
    if not bool(torch.isfinite(value).all()):
        suffix = f" ({where})" if where else ""
        raise FloatingPointError(f"non-finite {name}{suffix}: training diverged; lower the learning rate")


def derivatives(fn: Function, x: Tensor, laplacian: bool = True,
                create_graph: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """Value, gradient and Laplacian of ``fn`` at ``x`` by autograd.

    Args:
        fn: scalar function of points ``[n, d] -> [n]``.
        x: points ``[n, d]``; a fresh leaf requiring grad is made from them.
        laplacian: also return ``Δfn`` (d extra backward passes).
        create_graph: keep the graph so the results can be differentiated again (training); False
            (evaluation, no Laplacian) frees it at once, which matters on large grids.

    Returns:
        ``(value [n], grad [n, d], laplacian [n] or None)``, attached to ``fn``'s parameters when
        ``create_graph``.
    """
    if laplacian and not create_graph:
        raise ValueError("laplacian=True needs create_graph=True (the gradient is differentiated again)")
    x = x.detach().requires_grad_(True)
    value = fn(x)
    (grad,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
    lap = None
    if laplacian:
        # One backward pass per coordinate (d is small); batched over all points at once.
        lap = sum(torch.autograd.grad(grad[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(x.shape[1]))
    return value, grad, lap


def hjb_lhs_minus_log_m(problem: ErgodicProblem, x: Tensor, u_grad: Tensor, u_lap: Tensor | None,
                        log_m: Tensor) -> Tensor:
    """``r = ν(−Δu) + ½|∇u|² + V − ln m``, shape ``[n]``: the HJB holds iff ``r ≡ H̄``.

    Only differences of ``r`` matter to the residual: the least-squares ``H̄`` is ``mean(r)``, so
    ``ln m`` may be passed unnormalised (``f``), which shifts ``r`` by ``ln Z``.
    """
    r = 0.5 * (u_grad**2).sum(dim=-1) + problem.potential(x) - log_m
    if problem.nu > 0:
        if u_lap is None:
            raise ValueError("u_lap is required when nu > 0")
        r = r - problem.nu * u_lap
    return r


def fp_residual_over_m(nu: float, u_grad: Tensor, u_lap: Tensor, f_grad: Tensor, f_lap: Tensor | None) -> Tensor:
    """``(−νΔm − div(m∇u)) / m`` with ``m ∝ exp(f)``: ``−ν(Δf + |∇f|²) − ∇f·∇u − Δu``, shape ``[n]``."""
    residual = -(f_grad * u_grad).sum(dim=-1) - u_lap
    if nu > 0:
        if f_lap is None:
            raise ValueError("f_lap is required when nu > 0")
        residual = residual - nu * (f_lap + (f_grad**2).sum(dim=-1))
    return residual


def torus_grid(points_per_dim: int, dim: int, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Cell-centred product grid on ``[0, 1)^dim``, shape ``[points_per_dim**dim, dim]``.

    The plain mean over this grid is the periodic trapezoidal rule: spectrally accurate for
    smooth periodic integrands (error ``~ 2|ĝ_n|``, the integrand's n-th Fourier coefficient).
    """
    axis = (torch.arange(points_per_dim, device=device, dtype=dtype) + 0.5) / points_per_dim
    mesh = torch.meshgrid(*([axis] * dim), indexing="ij")
    return torch.stack([g.reshape(-1) for g in mesh], dim=-1)


def log_mean_exp(values: Tensor) -> Tensor:
    """``ln mean(exp(values))`` without overflow: ``ln Z`` from a quadrature of ``exp(f)``."""
    return torch.logsumexp(values, dim=0) - math.log(values.shape[0])


def solution_errors(problem: ErgodicProblem, u: Function, f: Function, points: Tensor) -> dict[str, float]:
    """Errors of ``(u, m = exp f / Z, H̄)`` against the exact solution, by quadrature on ``points``.

    ``Z`` and every integral are plain means over ``points`` (a torus grid or a uniform sample).
    ``H̄`` is estimated two ways from the HJB, ``H̄ = ν(−Δu) + ½|∇u|² + V − ln m`` pointwise:

    * ``hbar`` — averaged against ``m`` (the ergodic cost is an average under the invariant law),
      with ``∫ m(−νΔu) = ν ∫ m ∇f·∇u`` (integration by parts on the torus, exact) so no Laplacian
      is needed on the large grid. This weights the HJB where the population lives, and it is
      variational: with ``u = u*`` its error is exactly ``−KL(m‖m*)``, second order in ``m − m*``;
    * ``hbar_ls`` — averaged uniformly (the least-squares constant, as in training), with
      ``∫Δu = 0`` dropped. It weights regions where ``m* ~ e^{-2ad}`` as much as the bulk, so its
      error mostly measures ``ln m`` in the far tails.

    Returns:
        ``err_m`` (relative L²), ``err_u`` (relative L², or absolute L² when u* = 0), ``err_hbar`` and
        ``err_hbar_ls`` (signed), ``hbar``, ``hbar_ls``, ``mean_u`` and ``log_z``.
    """
    value_u, grad_u, _ = derivatives(u, points, laplacian=False, create_graph=False)
    f_values, grad_f, _ = derivatives(f, points, laplacian=False, create_graph=False)
    with torch.no_grad():
        value_u, grad_u, f_values, grad_f = value_u.detach(), grad_u.detach(), f_values.detach(), grad_f.detach()
        for name, tensor in (("u", value_u), ("grad u", grad_u), ("f", f_values), ("grad f", grad_f)):
            check_finite(name, tensor, "evaluation")
        log_z = log_mean_exp(f_values)
        log_m = f_values - log_z
        m = torch.exp(log_m)
        m_star = torch.exp(problem.exact_log_m(points))
        err_m = torch.sqrt(((m - m_star) ** 2).mean() / (m_star**2).mean())
        u_star = problem.exact_u(points)
        err_u = torch.sqrt(((value_u - u_star) ** 2).mean())
        if not problem.u_is_zero:
            err_u = err_u / torch.sqrt((u_star**2).mean())
        base = 0.5 * (grad_u**2).sum(-1) + problem.potential(points) - log_m
        hbar_ls = base.mean()
        hbar = (m * (base + problem.nu * (grad_f * grad_u).sum(-1))).mean()
    return {"err_m": float(err_m), "err_u": float(err_u), "err_hbar": float(hbar) - problem.exact_hbar,
            "err_hbar_ls": float(hbar_ls) - problem.exact_hbar, "hbar": float(hbar), "hbar_ls": float(hbar_ls),
            "mean_u": float(value_u.mean()), "log_z": float(log_z)}
