"""Reverse-SDE sampler (Anderson 1982; Song et al. 2021), Euler–Maruyama from t = 1 down to t_eps.

The time reversal of dX = f dt + g dW is dX = [f − g² ∇log p_t] dt + g dW̄ run backwards in time; with
the score replaced by a model it turns prior noise N(0, I) into approximate data samples:

    x ← x − [f(x, t) − g(t)² s(x, t)] h + g(t) √h z,      z ~ N(0, I), h = (1 − t_eps) / steps,

with no noise on the last step (the usual noise-free final denoising step).

Usage::

    x = reverse_sde_sample(net.score, VPSDE(), n=4096, steps=500, t_eps=1e-3, generator=gen)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dedafp.lab.sde import VPSDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def reverse_sde_sample(score: ScoreFn, sde: VPSDE, n: int, dim: int = 2, steps: int = 500, t_eps: float = 1e-3,
                       generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
    """``n`` samples ``[n, dim]`` of the reverse SDE driven by ``score(x [n, d], t [n]) -> [n, d]``."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not 0.0 <= t_eps < 1.0:
        raise ValueError(f"t_eps must be in [0, 1), got {t_eps!r}")
    x = torch.randn(n, dim, generator=generator, device=device)
    h = (1.0 - t_eps) / steps
    for i in range(steps):
        t = torch.full((n,), 1.0 - i * h, device=device)
        g = sde.diffusion(t)[:, None]
        drift = sde.drift(x, t) - g**2 * score(x, t).detach()
        x = x - drift * h
        if i < steps - 1:
            x = x + g * (h**0.5) * torch.randn(x.shape, generator=generator, device=device)
    return x
