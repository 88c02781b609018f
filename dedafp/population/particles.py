"""Empirical particle population with a Gaussian kernel density estimate."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dedafp.population.base import PopulationModel

BANDWIDTH_RULES = ("scott", "silverman")


def bandwidth_factor(rule: str | float, n: int, dim: int) -> float:
    """Kernel bandwidth as a multiple of the data's standard deviation.

    ``"scott"``: n^(-1/(d+4)); ``"silverman"``: (n (d+2) / 4)^(-1/(d+4)); a float is used as is.
    """
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        if not rule > 0:
            raise ValueError(f"bandwidth must be > 0, got {rule}")
        return float(rule)
    if rule == "scott":
        return n ** (-1.0 / (dim + 4))
    if rule == "silverman":
        return (n * (dim + 2) / 4.0) ** (-1.0 / (dim + 4))
    raise ValueError(f"bandwidth must be a positive number or one of {BANDWIDTH_RULES}, got {rule!r}")


class ParticlePopulation(PopulationModel):
    """μ_t given by particles ``states[t]`` (``[T+1, N, d]``); densities by a Gaussian KDE.

    The kernel covariance at time t is ``h² · Cov(states[t])`` with ``h`` from ``bandwidth``
    (the convention of ``scipy.stats.gaussian_kde``). Densities are evaluated in chunks of
    ``chunk`` query points with a log-sum-exp, never point by point.
    """

    def __init__(self, states: Tensor, bandwidth: str | float = "scott", chunk: int = 2048,
                 device: torch.device | str | None = None) -> None:
        if states.ndim != 3 or states.shape[1] < 2:
            raise ValueError(f"states must be [T+1, N>=2, d], got {tuple(states.shape)}")
        if not torch.isfinite(states).all():
            raise FloatingPointError("particle states contain NaN or inf")
        self._device = torch.device(device) if device is not None else states.device
        self.states = states.to(self._device, torch.float32)
        self.horizon = states.shape[0] - 1
        self.dim = states.shape[2]
        self.chunk = chunk
        self.bandwidth = bandwidth
        n = states.shape[1]
        factor = bandwidth_factor(bandwidth, n, self.dim)
        x = self.states.double()
        centred = x - x.mean(1, keepdim=True)
        cov = centred.transpose(1, 2) @ centred / (n - 1)
        cov = cov + 1e-9 * torch.eye(self.dim, dtype=cov.dtype, device=cov.device)
        self._kernel_chol = torch.linalg.cholesky(factor**2 * cov).float()   # [T+1, d, d]

    @property
    def device(self) -> torch.device:
        return self._device

    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Resample ``n`` particles of time ``t`` (with replacement). Returns ``[n, d]``."""
        index = torch.randint(self.states.shape[1], (n,), generator=generator, device=self._device)
        return self.states[t, index]

    def mean(self, t: int) -> Tensor:
        return self.states[t].mean(0)

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        x = x.to(self._device, torch.float32)
        times = torch.as_tensor(t, device=self._device).long().expand(x.shape[0])
        out = torch.empty(x.shape[0], device=self._device)
        for time in times.unique().tolist():
            mask = times == time
            out[mask] = self._log_kde(x[mask], time)
        return out

    def _log_kde(self, x: Tensor, t: int) -> Tensor:
        chol = self._kernel_chol[t]
        # Whiten once: the kernel is then an isotropic unit Gaussian in whitened coordinates.
        centres = torch.linalg.solve_triangular(chol, self.states[t].T, upper=False).T      # [N, d]
        queries = torch.linalg.solve_triangular(chol, x.T, upper=False).T                  # [n, d]
        n = centres.shape[0]
        const = -torch.log(torch.diagonal(chol)).sum() - 0.5 * self.dim * math.log(2 * math.pi) - math.log(n)
        pieces = []
        for start in range(0, queries.shape[0], self.chunk):
            sq = torch.cdist(queries[start:start + self.chunk], centres).square()
            pieces.append(torch.logsumexp(-0.5 * sq, dim=1))
        return torch.cat(pieces) + const if pieces else x.new_zeros(0)

    def state_dict(self) -> dict:
        """Particles and bandwidth rule (rebuild with :meth:`from_state_dict`)."""
        return {"kind": "particles", "states": self.states.cpu(), "bandwidth": self.bandwidth}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> ParticlePopulation:
        """Rebuild a model saved with :meth:`state_dict`."""
        return cls(state["states"], state["bandwidth"], device=device)
