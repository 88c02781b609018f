"""The laboratory's three judges: exact weighted score error, sliced W2 to fresh data, HJB residual.

All three use fixed evaluation points drawn from the *exact* noised marginals (the data are a Gaussian
mixture, so p_t and ∇log p_t are known), at ``times`` equally spaced in [t_eps, 1].

    score error  E_t E_{x ~ p_t} σ(t)² |s_θ(x, t) − ∇log p_t(x)|²      (the DSM weighting λ = σ²)
    residual     E_t E_{x ~ p_t} R[φ_θ](x, t)²                          (R of dedafp.lab.hjb)
    sliced W2    √(mean over directions of the 1-D W2² of sorted projections), samples vs fresh data
"""

from __future__ import annotations

import torch
from torch import Tensor

from dedafp.lab.hjb import Potential, hjb_residual
from dedafp.lab.sampler import ScoreFn
from dedafp.lab.sde import VPSDE, GaussianMixture


def evaluation_points(data: GaussianMixture, sde: VPSDE, points: int, times: int, t_eps: float, seed: int,
                      device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Fixed ``(x [times·points, d], t [times·points])``: ``points`` exact draws of p_t at each of ``times`` times."""
    gen = torch.Generator(device=device).manual_seed(seed)
    grid = torch.linspace(t_eps, 1.0, times, device=device)
    t = grid.repeat_interleave(points)
    return data.sample_marginal(t, sde, generator=gen), t


def weighted_score_error(score: ScoreFn, data: GaussianMixture, sde: VPSDE, x: Tensor, t: Tensor,
                         chunk: int = 8192) -> float:
    """Mean of σ(t)² |score(x, t) − ∇log p_t(x)|² over the evaluation points (dimensionless)."""
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        xs, ts = x[start:start + chunk], t[start:start + chunk]
        err = (score(xs, ts).detach() - data.marginal_score(xs, ts, sde)) ** 2
        total += float((sde.sigma(ts) ** 2 * err.sum(-1)).sum())
    return total / x.shape[0]


def mean_squared_residual(potential: Potential, sde: VPSDE, x: Tensor, t: Tensor, chunk: int = 8192) -> float:
    """Mean of R[φ](x, t)² over the evaluation points."""
    total = 0.0
    for start in range(0, x.shape[0], chunk):
        r = hjb_residual(potential, x[start:start + chunk], t[start:start + chunk], sde)
        total += float((r**2).sum())
    return total / x.shape[0]


def sliced_w2(x: Tensor, y: Tensor, projections: int = 512, seed: int = 0) -> float:
    """Sliced W2 between equal-size samples ``[n, d]``, over ``projections`` fixed random directions."""
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"samples must be equal-shape [n, d], got {tuple(x.shape)} and {tuple(y.shape)}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    directions = torch.randn(projections, x.shape[1], generator=gen, device=x.device, dtype=x.dtype)
    directions = directions / directions.norm(dim=1, keepdim=True)
    px, _ = torch.sort(x @ directions.T, dim=0)
    py, _ = torch.sort(y @ directions.T, dim=0)
    return float(((px - py) ** 2).mean().sqrt())
