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
    the exact 1-D W2² (sorted samples). In 1-D it is the exact empirical W2."""
    if x.shape != y.shape:
        raise ValueError(f"samples must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    d = x.shape[1]
    if d == 1:
        directions = torch.ones(1, 1, dtype=x.dtype, device=x.device)
    else:
        directions = torch.randn(projections, d, generator=generator, device=x.device, dtype=x.dtype)
        directions = directions / directions.norm(dim=1, keepdim=True)
    px, _ = torch.sort(x @ directions.T, dim=0)
    py, _ = torch.sort(y @ directions.T, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def moments(x: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[d]`` and covariance ``[d, d]`` of a sample ``[n, d]`` (float64 numpy)."""
    x = x.double()
    return x.mean(0).cpu().numpy(), torch.cov(x.T).reshape(x.shape[1], x.shape[1]).cpu().numpy()
