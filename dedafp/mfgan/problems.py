"""Ergodic mean-field games on the unit torus with exact solutions.

Every problem here has Hamiltonian ``½|p|²`` and logarithmic coupling; on ``T^d = [0, 1)^d``
the unknowns ``(u, m, H̄)`` solve

    ν·(−Δu) + ½|∇u|² + V(x) = ln m(x) + H̄      (HJB)
    −ν·Δm − div(m ∇u) = 0                        (Fokker–Planck)
    ∫u = 0,   ∫m = 1,   m > 0.

Sign check (done by hand and in ``tests/test_mfgan.py``): for the *viscous* problem, with
``s = Σ_i sin 2πx_i`` and ``c_i = cos 2πx_i``, ``u* = −s`` gives ``ν(−Δu*) = −2π² s`` (ν = ½) and
``½|∇u*|² = 2π² Σ c_i²``, so the HJB's left side is ``2π²(−s + Σc_i²) + V = 2s`` with the stated ``V``;
``ln m* = 2s − d·ln I₀(2)`` then forces ``H̄ = d·ln I₀(2)``. The FP flux ``ν∇m* + m*∇u*`` is
``m*(2π c − 2π c) = 0``. For the *first-order* problem (ν = 0, u* = 0) the HJB reads ``V = ln m* + H̄``.
The stated signs are therefore consistent and nothing needed fixing. ``I₀`` is the modified Bessel
function: ``∫₀¹ exp(a sin 2πx) dx = I₀(a)``.

Uniqueness in the first-order case: multiplying the FP equation by ``u`` and integrating gives
``∫ m |∇u|² = 0``, so ``∇u = 0`` wherever ``m > 0``; the HJB then fixes ``m = exp(V − H̄)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.special import i0
from torch import Tensor

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class ErgodicProblem:
    """An ergodic MFG on ``[0, 1)^dim`` with ``H = ½|p|²``, coupling ``ln m`` and an exact solution.

    Attributes:
        name: registry name (``viscous`` or ``first-order``).
        dim: space dimension d (>= 1).
        nu: viscosity ν (>= 0; 0 is the first-order problem).
        amplitude: ``a`` in ``m* ∝ exp(a Σ_i sin 2πx_i)``.
        u_amplitude: ``b`` in ``u* = b Σ_i sin 2πx_i`` (0 gives ``u* = 0``).
    """

    name: str
    dim: int
    nu: float
    amplitude: float
    u_amplitude: float

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {self.dim!r}")
        if not math.isfinite(self.nu) or self.nu < 0:
            raise ValueError(f"nu must be >= 0, got {self.nu!r}")
        # m* solves the FP equation only if its flux ν∇m* + m*∇u* vanishes, i.e. a·ν = −b.
        if not math.isclose(self.amplitude * self.nu, -self.u_amplitude, abs_tol=1e-12):
            raise ValueError(f"amplitude * nu must equal -u_amplitude (zero Fokker-Planck flux), got "
                             f"amplitude={self.amplitude}, nu={self.nu}, u_amplitude={self.u_amplitude}")

    # --- exact solution -------------------------------------------------------------------
    @property
    def exact_hbar(self) -> float:
        """H̄ = d·ln I₀(a) (the HJB with ``ln m* = a·s − d ln I₀(a)``)."""
        return self.dim * math.log(float(i0(self.amplitude)))

    @property
    def exact_log_normaliser(self) -> float:
        """``ln ∫ exp(a Σ sin 2πx_i) dx = d·ln I₀(a)``."""
        return self.dim * math.log(float(i0(self.amplitude)))

    def potential(self, x: Tensor) -> Tensor:
        """V(x) for points ``x`` of shape ``[n, d]``. Returns ``[n]``.

        Built so that the exact pair solves the HJB: ``V = ν Δu* − ½|∇u*|² + a·s``.
        """
        s = torch.sin(TWO_PI * x)
        c2 = torch.cos(TWO_PI * x) ** 2
        b = self.u_amplitude
        # ν Δu* = −ν b (2π)² s ;  ½|∇u*|² = ½ b² (2π)² Σ c²
        return (-self.nu * b * TWO_PI**2 * s - 0.5 * b**2 * TWO_PI**2 * c2 + self.amplitude * s).sum(dim=-1)

    def exact_u(self, x: Tensor) -> Tensor:
        """u*(x), shape ``[n]`` (mean zero on the torus)."""
        return self.u_amplitude * torch.sin(TWO_PI * x).sum(dim=-1)

    def exact_log_density_unnormalised(self, x: Tensor) -> Tensor:
        """``a Σ_i sin 2πx_i``, shape ``[n]``: ln m* up to its normaliser."""
        return self.amplitude * torch.sin(TWO_PI * x).sum(dim=-1)

    def exact_log_m(self, x: Tensor) -> Tensor:
        """ln m*(x), shape ``[n]`` (normalised: ∫m* = 1)."""
        return self.exact_log_density_unnormalised(x) - self.exact_log_normaliser

    @property
    def u_is_zero(self) -> bool:
        """True when u* = 0 (the u error is then absolute, not relative)."""
        return self.u_amplitude == 0


def viscous(dim: int = 1) -> ErgodicProblem:
    """ν = ½, ``V = Σ[2π²(sin 2πx_i − cos² 2πx_i) + 2 sin 2πx_i]``, ``u* = −Σ sin 2πx_i``,
    ``m* ∝ exp(2 Σ sin 2πx_i)``, ``H̄ = d ln I₀(2)``."""
    return ErgodicProblem("viscous", dim, nu=0.5, amplitude=2.0, u_amplitude=-1.0)


def first_order(dim: int = 1) -> ErgodicProblem:
    """ν = 0, ``V = Σ sin 2πx_i``, ``u* = 0``, ``m* ∝ exp(Σ sin 2πx_i)``, ``H̄ = d ln I₀(1)``
    (the example of Cao, Guo and Laurière)."""
    return ErgodicProblem("first-order", dim, nu=0.0, amplitude=1.0, u_amplitude=0.0)


PROBLEMS: dict[str, Callable[[int], ErgodicProblem]] = {"viscous": viscous, "first-order": first_order}


def make_problem(name: str, dim: int = 1) -> ErgodicProblem:
    """The reference problem ``name`` (one of :data:`PROBLEMS`) in dimension ``dim``."""
    if name not in PROBLEMS:
        raise ValueError(f"problem must be one of {sorted(PROBLEMS)}, got {name!r}")
    return PROBLEMS[name](dim)
