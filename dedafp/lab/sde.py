"""The variance-preserving (Ornstein–Uhlenbeck) noising SDE and Gaussian-mixture data with exact marginals.

Forward (noising) SDE on t ∈ [0, 1], with a linear noise schedule β(t) = β_min + (β_max − β_min) t:

    dX_t = f(X_t, t) dt + g(t) dW_t,      f(x, t) = −½ β(t) x,      g(t) = √β(t)

Its transition is Gaussian: X_t | X_0 = α(t) X_0 + σ(t) ε, ε ~ N(0, I), with

    α(t) = exp(−½ ∫₀ᵗ β(s) ds),      σ(t)² = 1 − α(t)²,

so a Gaussian mixture Σ_k w_k N(m_k, S_k) at t = 0 stays a Gaussian mixture
Σ_k w_k N(α m_k, α² S_k + σ² I) at every t: every noised marginal p_t, its log-density and its score
∇ log p_t are known in closed form (:class:`GaussianMixture`). Everything is differentiable in x and t.

Usage::

    sde, data = VPSDE(), ring_mixture()
    x0 = data.sample(4096, generator=torch.Generator().manual_seed(0))
    t = torch.full((4096,), 0.5)
    x_t = sde.alpha(t)[:, None] * x0 + sde.sigma(t)[:, None] * torch.randn_like(x0)
    score = data.marginal_score(x_t, t, sde)           # exact ∇ log p_t(x_t), [4096, 2]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _finite_positive(name: str, value: object) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE ``dX = −½β(t) X dt + √β(t) dW`` on t ∈ [0, 1].

    Attributes:
        beta_min: β(0) (> 0), per unit time.
        beta_max: β(1) (>= beta_min), per unit time; ``beta_min == beta_max`` is the constant-rate OU process.
    """

    beta_min: float = 0.1
    beta_max: float = 12.0

    def __post_init__(self) -> None:
        _finite_positive("beta_min", self.beta_min)
        _finite_positive("beta_max", self.beta_max)
        if self.beta_max < self.beta_min:
            raise ValueError(f"beta_max must be >= beta_min, got {self.beta_max} < {self.beta_min}")

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = g(t)², same shape as ``t``."""
        return self.beta_min + (self.beta_max - self.beta_min) * t

    def integrated_beta(self, t: Tensor) -> Tensor:
        """∫₀ᵗ β(s) ds, same shape as ``t``."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale α(t) = exp(−½ ∫₀ᵗ β), same shape as ``t``."""
        return torch.exp(-0.5 * self.integrated_beta(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale σ(t) = √(1 − α(t)²), same shape as ``t`` (σ(0) = 0)."""
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Forward drift f(x, t) = −½ β(t) x for x ``[n, d]``, t ``[n]``; returns ``[n, d]``."""
        return -0.5 * self.beta(t)[:, None] * x

    def drift_divergence(self, t: Tensor, dim: int) -> Tensor:
        """∇·f = −½ β(t) d, shape of ``t``."""
        return -0.5 * dim * self.beta(t)

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t) = √β(t), same shape as ``t``."""
        return torch.sqrt(self.beta(t))


@dataclass(frozen=True)
class GaussianMixture:
    """A Gaussian mixture Σ_k w_k N(m_k, S_k) in R^d, the data law p_0 of the laboratory.

    Attributes:
        weights: ``[K]`` positive, summing to 1.
        means: ``[K, d]``.
        covs: ``[K, d, d]`` symmetric positive definite.
    """

    weights: tuple[float, ...]
    means: tuple[tuple[float, ...], ...]
    covs: tuple[tuple[tuple[float, ...], ...], ...]

    def __post_init__(self) -> None:
        w = torch.tensor(self.weights, dtype=torch.float64)
        m = torch.tensor(self.means, dtype=torch.float64)
        s = torch.tensor(self.covs, dtype=torch.float64)
        if w.ndim != 1 or (w <= 0).any() or abs(float(w.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must be positive and sum to 1, got {self.weights}")
        if m.ndim != 2 or m.shape[0] != w.shape[0]:
            raise ValueError(f"means must have shape [K={w.shape[0]}, d], got {tuple(m.shape)}")
        d = m.shape[1]
        if s.shape != (w.shape[0], d, d):
            raise ValueError(f"covs must have shape [{w.shape[0]}, {d}, {d}], got {tuple(s.shape)}")
        if not torch.allclose(s, s.transpose(1, 2)) or (torch.linalg.eigvalsh(s) <= 0).any():
            raise ValueError("covs must be symmetric positive definite")

    @property
    def dim(self) -> int:
        """Dimension d."""
        return len(self.means[0])

    def tensors(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``(weights [K], means [K, d], covs [K, d, d])`` on ``device``."""
        return tuple(torch.tensor(v, dtype=dtype, device=device) for v in (self.weights, self.means, self.covs))

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        """``n`` draws from the mixture, ``[n, d]`` float32."""
        w, m, s = self.tensors(device)
        k = torch.multinomial(w, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, device=device)
        return m[k] + (torch.linalg.cholesky(s)[k] @ eps.unsqueeze(-1)).squeeze(-1)

    def _noised(self, t: Tensor | None, sde: VPSDE | None, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Log-weights ``[K]``, means ``[n, K, d]`` and covariances ``[n, K, d, d]`` of p_t (p_0 if t is None)."""
        w, m, s = self.tensors(x.device, x.dtype)
        n = x.shape[0]
        if t is None:
            return w.log(), m.expand(n, -1, -1), s.expand(n, -1, -1, -1)
        if sde is None:
            raise ValueError("a noised marginal needs the sde")
        if t.shape != (n,):
            raise ValueError(f"t must have shape [{n}], got {tuple(t.shape)}")
        a = sde.alpha(t.to(x))[:, None, None]
        var = sde.sigma(t.to(x))[:, None, None, None] ** 2
        eye = torch.eye(self.dim, dtype=x.dtype, device=x.device)
        return w.log(), a * m, a[..., None] ** 2 * s + var * eye

    def _components(self, x: Tensor, t: Tensor | None, sde: VPSDE | None) -> tuple[Tensor, Tensor]:
        """Per-component log(w_k N_k(x)) ``[n, K]`` and precision-times-residual S_k⁻¹(x − m_k) ``[n, K, d]``."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}], got {tuple(x.shape)}")
        log_w, means, covs = self._noised(t, sde, x)
        diff = x[:, None, :] - means                                       # [n, K, d]
        chol = torch.linalg.cholesky(covs)
        white = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False)    # L⁻¹ diff
        precision_diff = torch.linalg.solve_triangular(chol.transpose(-1, -2), white, upper=True).squeeze(-1)
        log_det = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_comp = log_w - 0.5 * (white.squeeze(-1) ** 2).sum(-1) - 0.5 * log_det \
            - 0.5 * self.dim * math.log(2 * math.pi)
        return log_comp, precision_diff

    def log_prob(self, x: Tensor, t: Tensor | None = None, sde: VPSDE | None = None) -> Tensor:
        """log p_t(x) ``[n]`` for x ``[n, d]`` (t ``[n]``; ``t=None``: the data law p_0)."""
        log_comp, _ = self._components(x, t, sde)
        return torch.logsumexp(log_comp, dim=-1)

    def score(self, x: Tensor, t: Tensor | None = None, sde: VPSDE | None = None) -> Tensor:
        """Exact score ∇_x log p_t(x) ``[n, d]`` in closed form: −Σ_k r_k(x) S_k⁻¹(x − m_k), r the responsibilities."""
        log_comp, precision_diff = self._components(x, t, sde)
        resp = torch.softmax(log_comp, dim=-1)
        return -(resp.unsqueeze(-1) * precision_diff).sum(1)

    def marginal_log_prob(self, x: Tensor, t: Tensor, sde: VPSDE) -> Tensor:
        """log p_t(x) of the noised marginal, ``[n]`` (x ``[n, d]``, t ``[n]``)."""
        return self.log_prob(x, t, sde)

    def marginal_score(self, x: Tensor, t: Tensor, sde: VPSDE) -> Tensor:
        """Exact ∇ log p_t(x) of the noised marginal, ``[n, d]``."""
        return self.score(x, t, sde)

    def sample_marginal(self, t: Tensor, sde: VPSDE, generator: torch.Generator | None = None) -> Tensor:
        """One draw of X_t for each entry of ``t`` ``[n]``: α(t) X_0 + σ(t) ε, ``[n, d]``."""
        x0 = self.sample(t.shape[0], generator=generator, device=t.device)
        eps = torch.randn(x0.shape, generator=generator, device=t.device)
        return sde.alpha(t)[:, None] * x0 + sde.sigma(t)[:, None] * eps


def ring_mixture(components: int = 8, radius: float = 2.0, std: float = 0.3) -> GaussianMixture:
    """``components`` equal-weight isotropic Gaussians of standard deviation ``std`` on a circle of ``radius``."""
    if not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be an integer >= 1, got {components!r}")
    _finite_positive("radius", radius)
    _finite_positive("std", std)
    angles = [2 * math.pi * k / components for k in range(components)]
    means = tuple((radius * math.cos(a), radius * math.sin(a)) for a in angles)
    cov = ((std**2, 0.0), (0.0, std**2))
    return GaussianMixture(tuple([1.0 / components] * components), means, tuple([cov] * components))
