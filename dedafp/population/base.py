"""The population-model interface: one distribution of agents' states per time step.

Every population model (normalizing flow, particles, kernel estimate, exact Gaussian) answers the
same three questions for an integer time ``t`` in ``0..horizon``:

    sample(t, n)     -> [n, d]   states drawn from μ_t
    log_prob(x, t)   -> [n]      log-density of μ_t at x (nats; per unit of state volume)
    mean(t)          -> [d]      the mean of μ_t

``t`` may be a Python int (one time for the batch) or, for ``log_prob``, a tensor of shape ``[n]``.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor


class PopulationModel(abc.ABC):
    """A time-indexed distribution of states μ_0, ..., μ_T on R^d."""

    #: Dimension of the state.
    dim: int
    #: Last time index T (times run over 0..T).
    horizon: int

    @abc.abstractmethod
    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` states from μ_t. Returns ``[n, dim]``."""

    @abc.abstractmethod
    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        """Log-density of μ_t at ``x`` (shape ``[n, dim]``). Returns ``[n]``."""

    @abc.abstractmethod
    def mean(self, t: int) -> Tensor:
        """Mean of μ_t. Returns ``[dim]``."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Device the model's tensors live on."""

    def _check_t(self, t: int) -> int:
        """``t`` as an int, or ``ValueError`` if it is outside ``0..horizon``."""
        if not 0 <= int(t) <= self.horizon:
            raise ValueError(f"t must be in 0..{self.horizon}, got {t}")
        return int(t)

    def mean_flow(self) -> Tensor:
        """Means of μ_0..μ_T stacked: ``[horizon + 1, dim]``."""
        return torch.stack([self.mean(t) for t in range(self.horizon + 1)])
