"""GAN training as an SDE (Cao and Guo): stationary covariance of SGD against the SDE's prediction.

The GAN is small enough for its stationary law to be exact:

* data ``x ~ N(μ, Σ)`` in ``R^d``; generator ``G_b(z) = b + S z`` with ``z ~ N(0, I_k)`` (the shift
  ``b`` is learned, the linear map ``S`` is fixed — with a linear critic it would get no restoring force);
* critic ``D_w(x) = w·x`` with a quadratic penalty:
  ``min_b max_w  L(b, w) = E[w·x] − E[w·G_b(z)] − (λ/2)|w|²``, equilibrium ``b* = μ, w* = 0``.

Simultaneous stochastic gradient descent–ascent with learning rate ``η`` and minibatches of ``B``
data points and ``B`` latent draws moves the error ``e = (b − μ, w)`` by

    e_{k+1} = (I − ηA) e_k + η ξ_k,   A = [[0, −I], [I, λI]],   ξ_k = (0, x̄ − μ − S z̄),
    Cov ξ = Q = blockdiag(0, (Σ + SSᵀ)/B)   (exact: the gradient noise does not depend on e).

Cao and Guo's SDE approximation, in time ``t = kη``, is ``dΘ = −A(Θ − Θ*) dt + √η Q^{1/2} dW``.
Stationary covariances, both exact:

* SGD: the discrete Lyapunov equation ``P = (I − ηA) P (I − ηA)ᵀ + η² Q``;
* SDE: the continuous Lyapunov equation ``A P + P Aᵀ = η Q``.

Expanding ``P_SGD = ηP₁ + η²P₂ + …`` in the first gives ``A P₁ + P₁ Aᵀ = Q`` (so ``P_SDE = ηP₁``) and
``A P₂ + P₂ Aᵀ = A P₁ Aᵀ``: the relative gap ``‖P_SGD − P_SDE‖/‖P_SDE‖ = κη + O(η²)`` with
``κ = ‖P₂‖/‖P₁‖`` — first order in the learning rate, as the SDE approximation's weak order predicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from dedafp.mfgan.residuals import check_finite


@dataclass(frozen=True)
class LinearGANConfig:
    """The linear GAN and its minibatch size.

    Attributes:
        data_mean: μ, length d.
        data_cov: Σ, ``d x d`` symmetric positive definite.
        generator_map: S, ``d x k`` (fixed).
        penalty: λ > 0, the critic's quadratic penalty.
        batch: B >= 1, data points (and latent draws) per stochastic gradient.
    """

    data_mean: tuple[float, ...] = (1.0, -0.5)
    data_cov: tuple[tuple[float, ...], ...] = ((1.0, 0.3), (0.3, 0.5))
    generator_map: tuple[tuple[float, ...], ...] = ((0.8, 0.0), (0.2, 0.6))
    penalty: float = 1.0
    batch: int = 4

    def __post_init__(self) -> None:
        d = len(self.data_mean)
        if d < 1:
            raise ValueError("data_mean must have at least one entry, got ()")
        cov = np.asarray(self.data_cov, dtype=float)
        if cov.shape != (d, d) or not np.allclose(cov, cov.T) or np.linalg.eigvalsh(cov).min() <= 0:
            raise ValueError(f"data_cov must be a symmetric positive definite {d}x{d} matrix, got {self.data_cov!r}")
        s = np.asarray(self.generator_map, dtype=float)
        if s.ndim != 2 or s.shape[0] != d:
            raise ValueError(f"generator_map must be a {d}xk matrix, got shape {s.shape}")
        if not math.isfinite(self.penalty) or self.penalty <= 0:
            raise ValueError(f"penalty must be > 0, got {self.penalty!r}")
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or self.batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {self.batch!r}")

    @property
    def dim(self) -> int:
        return len(self.data_mean)


def drift_matrix(config: LinearGANConfig) -> np.ndarray:
    """``A`` of the mean error dynamics ``ė = −A e``, shape ``[2d, 2d]`` (order ``(b, w)``)."""
    d, eye = config.dim, np.eye(config.dim)
    return np.block([[np.zeros((d, d)), -eye], [eye, config.penalty * eye]])


def noise_covariance(config: LinearGANConfig) -> np.ndarray:
    """``Q``: covariance of the stochastic gradient's noise, shape ``[2d, 2d]``."""
    d = config.dim
    s = np.asarray(config.generator_map, dtype=float)
    q = np.zeros((2 * d, 2 * d))
    q[d:, d:] = (np.asarray(config.data_cov, dtype=float) + s @ s.T) / config.batch
    return q


def max_stable_lr(config: LinearGANConfig) -> float:
    """Largest η with spectral radius of ``I − ηA`` below one: ``min 2 Re μ / |μ|²`` over eig(A)."""
    mu = np.linalg.eigvals(drift_matrix(config))
    return float(np.min(2 * mu.real / np.abs(mu) ** 2))


def sgd_stationary_covariance(config: LinearGANConfig, lr: float) -> np.ndarray:
    """Exact stationary covariance of the SGD iterates ``e_k``: discrete Lyapunov solve, ``[2d, 2d]``."""
    _check_lr(config, lr)
    m = np.eye(2 * config.dim) - lr * drift_matrix(config)
    return scipy.linalg.solve_discrete_lyapunov(m, lr**2 * noise_covariance(config))


def sde_stationary_covariance(config: LinearGANConfig, lr: float) -> np.ndarray:
    """The SDE's stationary covariance: continuous Lyapunov ``A P + P Aᵀ = η Q``, ``[2d, 2d]``."""
    _check_lr(config, lr)
    a = drift_matrix(config)
    # scipy solves ``a X + X aᴴ = q``: exactly ours with a = A, q = ηQ.
    return scipy.linalg.solve_continuous_lyapunov(a, lr * noise_covariance(config))


def gap_slope(config: LinearGANConfig) -> float:
    """κ with ``‖P_SGD − P_SDE‖_F / ‖P_SDE‖_F = κη + O(η²)`` (see the module docstring)."""
    a = drift_matrix(config)
    p1 = scipy.linalg.solve_continuous_lyapunov(a, noise_covariance(config))
    p2 = scipy.linalg.solve_continuous_lyapunov(a, a @ p1 @ a.T)
    return float(np.linalg.norm(p2) / np.linalg.norm(p1))


def _check_lr(config: LinearGANConfig, lr: float) -> None:
    limit = max_stable_lr(config)
    if not math.isfinite(lr) or lr <= 0 or lr >= limit:
        raise ValueError(f"lr must be in (0, {limit:.4g}) for stable SGD on this GAN, got {lr!r}")


@dataclass
class EmpiricalCovariance:
    """Covariance of simulated SGD iterates.

    Attributes:
        covariance: pooled over chains and post-burn-in steps, ``[2d, 2d]``.
        group_covariances: the same per group of chains, ``[groups, 2d, 2d]`` (for standard errors:
            groups are independent, whatever the autocorrelation within a chain).
        steps: SGD steps simulated per chain (burn-in included).
    """

    covariance: np.ndarray
    group_covariances: np.ndarray
    steps: int = 0

    def standard_error(self) -> np.ndarray:
        """Entrywise standard error of :attr:`covariance`, from the spread between groups, ``[2d, 2d]``."""
        groups = self.group_covariances.shape[0]
        return self.group_covariances.std(axis=0, ddof=1) / math.sqrt(groups)


def simulate_sgd(config: LinearGANConfig, lr: float, chains: int = 4096, mixing_times: float = 40.0,
                 burn_in_mixing_times: float = 10.0, groups: int = 16, seed: int = 0,
                 device: str | torch.device = "cpu") -> EmpiricalCovariance:
    """Run ``chains`` independent SGD chains of the GAN (true minibatches, not Gaussian surrogates).

    Lengths are in mixing times ``1/(η min Re eig A)`` so every learning rate gets the same statistical
    effort. Chains start at the equilibrium; the burn-in forgets that.

    Args:
        config: the GAN.
        lr: learning rate η.
        chains: independent chains, simulated as one batch (divisible by ``groups``).
        mixing_times: post-burn-in length, in mixing times.
        burn_in_mixing_times: discarded length, in mixing times.
        groups: chain groups for standard errors.
        seed: RNG seed.
        device: torch device.

    Returns:
        The empirical stationary covariance of ``e = (b − μ, w)``.
    """
    _check_lr(config, lr)
    if chains < groups or chains % groups:
        raise ValueError(f"chains must be a positive multiple of groups={groups}, got {chains}")
    d, bsz = config.dim, config.batch
    rate = float(np.min(np.linalg.eigvals(drift_matrix(config)).real))
    tau = 1.0 / (lr * rate)
    burn, keep = int(math.ceil(burn_in_mixing_times * tau)), int(math.ceil(mixing_times * tau))
    gen = torch.Generator(device=device).manual_seed(seed)
    f64 = torch.float64
    chol = torch.linalg.cholesky(torch.as_tensor(config.data_cov, dtype=f64, device=device))
    s_map = torch.as_tensor(config.generator_map, dtype=f64, device=device)
    k = s_map.shape[1]
    b = torch.zeros(chains, d, dtype=f64, device=device)  # b − μ
    w = torch.zeros(chains, d, dtype=f64, device=device)
    second = torch.zeros(groups, 2 * d, 2 * d, dtype=f64, device=device)
    for step in range(burn + keep):
        # Minibatch means of the data's and the generator's samples, minus μ: x̄ − μ and S z̄.
        x_noise = torch.randn(chains, bsz, d, generator=gen, dtype=f64, device=device).mean(1) @ chol.T
        g_noise = torch.randn(chains, bsz, k, generator=gen, dtype=f64, device=device).mean(1) @ s_map.T
        # Simultaneous descent (b) / ascent (w) with the same minibatch.
        b, w = b + lr * w, w + lr * (x_noise - b - g_noise - config.penalty * w)
        if step >= burn:
            e = torch.cat([b, w], dim=1).reshape(groups, chains // groups, 2 * d)
            second += torch.einsum("gci,gcj->gij", e, e) / (chains // groups)
    check_finite("SGD iterates", second, f"lr={lr}")
    # The stationary mean is exactly 0 (the dynamics are linear and the noise centred), so the
    # covariance is the second moment; estimating a mean would only add noise.
    group_cov = (second / keep).cpu().numpy()
    return EmpiricalCovariance(group_cov.mean(0), group_cov, steps=burn + keep)


def relative_gap(p: np.ndarray, reference: np.ndarray) -> float:
    """``‖p − reference‖_F / ‖reference‖_F``."""
    return float(np.linalg.norm(p - reference) / np.linalg.norm(reference))


def compare(config: LinearGANConfig, lrs: list[float], chains: int = 4096, mixing_times: float = 40.0,
            seed: int = 0, device: str | torch.device = "cpu") -> list[dict[str, float]]:
    """SGD (exact and simulated) against the SDE's stationary covariance at each learning rate.

    Returns:
        One row per η: ``lr``, ``gap_exact`` (``‖P_SGD − P_SDE‖/‖P_SDE‖``), ``gap_empirical`` (simulated
        SGD against the SDE), ``sampling_error`` (Frobenius norm of the simulation's standard-error
        matrix, relative to ‖P_SDE‖), ``sim_vs_exact`` (‖P_sim − P_SGD‖/‖P_SDE‖: should be of the order
        of ``sampling_error``), ``kappa_eta`` (the first-order prediction κη), ``var_b0_sgd``,
        ``var_b0_sde``, ``var_b0_sim`` (variance of the first generator coordinate) and ``steps``.
    """
    kappa = gap_slope(config)
    rows = []
    for i, lr in enumerate(lrs):
        p_sgd, p_sde = sgd_stationary_covariance(config, lr), sde_stationary_covariance(config, lr)
        sim = simulate_sgd(config, lr, chains=chains, mixing_times=mixing_times, seed=seed + i, device=device)
        scale = np.linalg.norm(p_sde)
        # Typical size of the sampling error ‖P_sim − E P_sim‖_F: it bounds how far the simulated
        # gap can sit from the exact one (triangle inequality), so it serves as the gap's error bar.
        noise = float(np.linalg.norm(sim.standard_error()) / scale)
        rows.append({
            "lr": lr,
            "gap_exact": relative_gap(p_sgd, p_sde),
            "gap_empirical": relative_gap(sim.covariance, p_sde),
            "sampling_error": noise,
            "sim_vs_exact": float(np.linalg.norm(sim.covariance - p_sgd) / scale),
            "kappa_eta": kappa * lr,
            "var_b0_sgd": float(p_sgd[0, 0]),
            "var_b0_sde": float(p_sde[0, 0]),
            "var_b0_sim": float(sim.covariance[0, 0]),
            "steps": float(sim.steps),
        })
    return rows


def fit_loglog_slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])
