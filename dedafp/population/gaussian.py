"""Exact Gaussian population flow, e.g. the LQ game's equilibrium marginals."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from dedafp.population.base import PopulationModel


class GaussianPopulation(PopulationModel):
    """μ_t = N(means[t], covs[t]) for t = 0..T.

    Args:
        means: ``[T+1, d]``.
        covs: ``[T+1, d, d]``, symmetric positive semi-definite.
        device: where samples and densities are computed.
    """

    def __init__(self, means: np.ndarray | Tensor, covs: np.ndarray | Tensor,
                 device: torch.device | str = "cpu") -> None:
        means = torch.as_tensor(np.asarray(means), dtype=torch.float64)
        covs = torch.as_tensor(np.asarray(covs), dtype=torch.float64)
        if means.ndim != 2 or covs.shape != (*means.shape, means.shape[1]):
            raise ValueError(f"means must be [T+1, d] and covs [T+1, d, d]; got {tuple(means.shape)} "
                             f"and {tuple(covs.shape)}")
        self._device = torch.device(device)
        self.horizon = means.shape[0] - 1
        self.dim = means.shape[1]
        self.means = means.to(self._device)
        self.covs = covs.to(self._device)
        # A tiny jitter admits degenerate marginals (e.g. a deterministic x_0) for sampling and means.
        jitter = 1e-10 * torch.eye(self.dim, dtype=torch.float64, device=self._device)
        self._chol = torch.linalg.cholesky(self.covs + jitter)   # raises if a covariance is not PSD

    @property
    def device(self) -> torch.device:
        return self._device

    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        t = self._check_t(t)
        z = torch.randn(n, self.dim, generator=generator, device=self._device, dtype=torch.float64)
        return (self.means[t] + z @ self._chol[t].T).float()

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        x = x.to(self._device, torch.float64)
        index = torch.as_tensor(t, device=self._device).long().expand(x.shape[0])
        if index.min() < 0 or index.max() > self.horizon:
            raise ValueError(f"t must be in 0..{self.horizon}")
        diff = (x - self.means[index]).unsqueeze(-1)
        white = torch.linalg.solve_triangular(self._chol[index], diff, upper=False).squeeze(-1)
        log_det = torch.log(torch.diagonal(self._chol[index], dim1=-2, dim2=-1)).sum(-1)
        return (-0.5 * (white**2).sum(-1) - log_det - 0.5 * self.dim * math.log(2 * math.pi)).float()

    def mean(self, t: int) -> Tensor:
        return self.means[self._check_t(t)].float()

    def cov(self, t: int) -> Tensor:
        """Covariance of μ_t, ``[d, d]``."""
        return self.covs[self._check_t(t)].float()
