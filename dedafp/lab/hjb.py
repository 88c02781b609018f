"""The HJB residual of the log-density of the noised data.

The marginals p_t of the forward SDE dX = f dt + g dW solve the Fokker–Planck equation
∂_t p = −∇·(f p) + (g²/2) Δp. Writing p = e^φ (φ = log p, so the score is ∇φ) and dividing by p:

    R[φ](x, t) = ∂_t φ + ∇·f + f·∇φ − (g²/2)(Δφ + |∇φ|²) = 0.

This is the (viscous) Hamilton–Jacobi–Bellman equation of Zhang and Katsoulakis (arXiv 2304.13534):
with ψ = −φ it reads −∂_t ψ − f·∇ψ + (g²/2)Δψ − (g²/2)|∇ψ|² − ∇·f = 0, an HJB with Hamiltonian
H(x, p) = −f·p + (g²/2)|p|² whose optimal control is the score. Sign convention: φ is +log p (not −log p),
R is the left-hand side above, and its exact zero set is φ = log p_t + c (c one constant).

Usage::

    r = hjb_residual(net, x, t, VPSDE())            # [n]; net(x, t) -> φ [n]
    r_exact = hjb_residual(lambda x, t: data.marginal_log_prob(x, t, sde), x, t, sde)   # ≈ 0
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dedafp.lab.sde import VPSDE

Potential = Callable[[Tensor, Tensor], Tensor]


def hjb_residual(potential: Potential, x: Tensor, t: Tensor, sde: VPSDE, create_graph: bool = False) -> Tensor:
    """R[φ](x, t) ``[n]`` at points x ``[n, d]``, times t ``[n]``, with all derivatives by autograd.

    Args:
        potential: ``φ(x [n, d], t [n]) -> [n]``, differentiable in both arguments.
        x, t: where the residual is evaluated.
        sde: the forward SDE (f and g).
        create_graph: keep the graph (to train through the residual).

    Returns:
        The residual ``[n]``; the Laplacian is the exact trace of the Hessian (d backward passes).
    """
    if x.ndim != 2 or t.shape != x.shape[:1]:
        raise ValueError(f"hjb_residual needs x [n, d] and t [n], got {tuple(x.shape)} and {tuple(t.shape)}")
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        t = t if t.requires_grad else t.detach().requires_grad_(True)
        phi = potential(x, t)
        grad_x, grad_t = torch.autograd.grad(phi.sum(), (x, t), create_graph=True)
        laplacian = torch.zeros_like(phi)
        for i in range(x.shape[1]):
            (second,) = torch.autograd.grad(grad_x[:, i].sum(), x, create_graph=create_graph, retain_graph=True)
            laplacian = laplacian + second[:, i]
        if not create_graph:
            grad_x, grad_t = grad_x.detach(), grad_t.detach()
        f = sde.drift(x, t)
        g2 = sde.beta(t)
        residual = grad_t + sde.drift_divergence(t, x.shape[1]) + (f * grad_x).sum(-1) \
            - 0.5 * g2 * (laplacian + (grad_x**2).sum(-1))
    return residual if create_graph else residual.detach()
