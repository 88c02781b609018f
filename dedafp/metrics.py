"""Distances between distributions used to judge population models."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor


def gaussian_w2(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """W2 between N(mean_a, cov_a) and N(mean_b, cov_b) (the Bures-Wasserstein formula).

    For arbitrary laws with these moments it is a lower bound of their W2 (Gelbrich), tight for
    Gaussians.
    """
    root = scipy.linalg.sqrtm(cov_a)
    cross = np.real(scipy.linalg.sqrtm(root @ cov_b @ root))
    bures = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(cross)
    return float(np.sqrt(np.sum((mean_a - mean_b) ** 2) + max(float(bures), 0.0)))


def sliced_w2(x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced W2 between two equal-size samples ``[n, d]``: root mean over random directions of
    the exact 1-D W2² (sorted samples). In 1-D it is the exact empirical W2.

    :func:`sliced_w2_to_sample` with ``levels = n`` (where the quantile rule is exact) and ``projections``
    random unit directions.
    """
    if x.shape != y.shape:
        raise ValueError(f"samples must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    d = x.shape[1]
    if d == 1:
        directions = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    else:
        directions = torch.randn(projections, d, generator=generator, device=x.device, dtype=x.dtype)
        directions = directions / directions.norm(dim=1, keepdim=True)
    return float(sliced_w2_to_sample(x.unsqueeze(0), y, directions, levels=x.shape[0])[0])


def sliced_w2_to_sample(x: Tensor, reference: Tensor, directions: Tensor, levels: int = 4096) -> Tensor:
    """Sliced W2 between each episode's empirical law ``x`` ``[E, N, d]`` and a sample ``reference`` ``[M, d]``.

    Per direction (``directions`` ``[P, d]``, unit rows) the 1-D W2² between the two quantile functions, by
    the midpoint rule at ``levels`` points (k + ½) / levels (exact when levels is a multiple of both N and
    M; otherwise a quadrature error of order 1 / levels); root of the mean over directions. Computed in the
    dtype of ``x``, ``reference`` and ``directions``. Returns ``[E]``.
    """
    def quantiles(sorted_values: Tensor, size: int) -> Tensor:
        index = ((torch.arange(levels, dtype=torch.float64) + 0.5) * size / levels).long().clamp(max=size - 1)
        return sorted_values.index_select(-2, index.to(sorted_values.device))

    ref = quantiles(torch.sort(reference @ directions.T, dim=0).values, reference.shape[0])   # [L, P]
    proj = quantiles(torch.sort(x @ directions.T, dim=1).values, x.shape[1])                  # [E, L, P]
    return (proj - ref).square().mean(1).mean(1).sqrt()


def moments(x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` of a sample ``[n, d]`` (float64 numpy)."""
    x = x.double()
    return x.mean(0).cpu().numpy(), torch.cov(x.T).reshape(x.shape[1], x.shape[1]).cpu().numpy()
