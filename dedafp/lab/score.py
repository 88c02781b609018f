"""The score model: a scalar potential φ_θ(x, t) whose gradient ∇_x φ_θ is the score, and its DSM loss.

The network outputs a potential, not a vector field, so that the score s_θ = ∇_x φ_θ is a gradient
field by construction and the HJB residual of :mod:`dedafp.lab.hjb` (which needs ∂_t φ and Δφ) is
defined. φ_θ(x, t) = −½|x|² + MLP(x, t): the quadratic is the log-density of the prior N(0, I) that
the noising SDE converges to, so an untrained network already has the right score at t = 1.

Denoising score matching (Vincent 2011; Song et al. 2021) with the weighting λ(t) = σ(t)²:

    L_DSM(θ) = E_{t ~ U[t_eps, 1], x_0 ~ data, ε ~ N(0, I)} | σ(t) s_θ(α(t) x_0 + σ(t) ε, t) + ε |²

Usage::

    net = PotentialNet(dim=2, hidden=64, layers=3)
    loss = dsm_loss(net, x0_batch, VPSDE(), t_eps=1e-3, generator=gen)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from dedafp.lab.sde import VPSDE


def time_features(t: Tensor) -> Tensor:
    """Smooth features of t ∈ [0, 1], ``[n, 3]``: (t, sin πt, cos πt)."""
    return torch.stack([t, torch.sin(math.pi * t), torch.cos(math.pi * t)], dim=-1)


class PotentialNet(nn.Module):
    """φ_θ(x, t) = −½|x|² + MLP([x, t-features]) with SiLU activations (smooth, so Δφ and ∂_t φ exist).

    Args:
        dim: data dimension d.
        hidden: width of the hidden layers (>= 1).
        layers: number of hidden layers (>= 1).
    """

    def __init__(self, dim: int, hidden: int = 64, layers: int = 3) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("layers", layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.dim = dim
        sizes = [dim + 3] + [hidden] * layers
        modules: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            modules += [nn.Linear(a, b), nn.SiLU()]
        modules.append(nn.Linear(hidden, 1))
        self.mlp = nn.Sequential(*modules)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """φ_θ(x, t) ``[n]`` for x ``[n, d]``, t ``[n]``."""
        return -0.5 * (x**2).sum(-1) + self.mlp(torch.cat([x, time_features(t)], dim=-1)).squeeze(-1)

    def score(self, x: Tensor, t: Tensor, create_graph: bool = False) -> Tensor:
        """s_θ(x, t) = ∇_x φ_θ(x, t), ``[n, d]`` (``create_graph=True`` to train through it)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True) if not x.requires_grad else x
            phi = self.forward(x, t)
            (grad,) = torch.autograd.grad(phi.sum(), x, create_graph=create_graph)
        return grad


def dsm_loss(net: PotentialNet, x0: Tensor, sde: VPSDE, t_eps: float,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The σ²-weighted denoising score-matching loss on a batch ``x0`` ``[n, d]``.

    Returns:
        ``(loss, x_t, t)``: the scalar loss and the noised points ``[n, d]`` and times ``[n]`` it used
        (the HJB penalty is evaluated at the same points).
    """
    n = x0.shape[0]
    t = t_eps + (1.0 - t_eps) * torch.rand(n, generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device)
    sigma = sde.sigma(t)[:, None]
    x_t = (sde.alpha(t)[:, None] * x0 + sigma * eps).requires_grad_(True)
    score = net.score(x_t, t, create_graph=True)
    return ((sigma * score + eps) ** 2).sum(-1).mean(), x_t, t
