"""Periodic networks for functions on the unit torus ``[0, 1)^d``.

Periodicity is built into the input: a point enters only through ``sin(2πk x_i)`` and
``cos(2πk x_i)``, ``k = 1..K``, so every function the network can represent is exactly
1-periodic in each coordinate, with all its derivatives — the PDE residuals never see a seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ACTIVATIONS = ("tanh", "silu", "softplus")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture shared by the value and the density network.

    Attributes:
        width: hidden units per layer (>= 1).
        depth: hidden layers (>= 1).
        harmonics: K, the Fourier features per coordinate are ``k = 1..K`` (>= 1).
        activation: one of :data:`ACTIVATIONS` (smooth: the residuals need second derivatives).
    """

    width: int = 64
    depth: int = 3
    harmonics: int = 2
    activation: str = "tanh"

    def __post_init__(self) -> None:
        for name in ("width", "depth", "harmonics"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"network.{name} must be an integer >= 1, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"network.activation must be one of {ACTIVATIONS}, got {self.activation!r}")


class PeriodicFeatures(nn.Module):
    """``x [n, d] -> [sin 2πk x_i, cos 2πk x_i]_{k, i}`` of shape ``[n, 2Kd]``."""

    def __init__(self, harmonics: int) -> None:
        super().__init__()
        self.harmonics = harmonics

    def forward(self, x: Tensor) -> Tensor:
        # 2πk built in x's own dtype: a float32 2π would break exact periodicity in float64.
        frequencies = 2 * math.pi * torch.arange(1, self.harmonics + 1, dtype=x.dtype, device=x.device)
        phase = (x.unsqueeze(-1) * frequencies).flatten(start_dim=-2)  # [n, d*K]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


class PeriodicMLP(nn.Module):
    """Scalar function on the torus: periodic features followed by a smooth MLP.

    Args:
        dim: space dimension d.
        config: architecture.
    """

    def __init__(self, dim: int, config: NetworkConfig) -> None:
        super().__init__()
        self.dim = dim
        activation = {"tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus}[config.activation]
        layers: list[nn.Module] = [PeriodicFeatures(config.harmonics)]
        width_in = 2 * config.harmonics * dim
        for _ in range(config.depth):
            layers += [nn.Linear(width_in, config.width), activation()]
            width_in = config.width
        layers.append(nn.Linear(width_in, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Values at points ``x`` of shape ``[n, d]``. Returns ``[n]``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected points of shape [n, {self.dim}], got {tuple(x.shape)}")
        return self.net(x).squeeze(-1)
