"""Training of the (optionally HJB-regularised) score-based generative model.

    loss(θ) = L_DSM(θ) + γ · E[R[φ_θ](x_t, t)²]

with the residual evaluated at the same noised training points (x_t, t) the DSM term uses, so the
penalty costs no extra sampling; γ = 0 is the plain model and skips the residual entirely.

Usage::

    config = SGMConfig(gamma=0.1, steps=2000)
    result = train_sgm(config, training_points, seed=0)
    result.net.score(x, t)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from dedafp.lab.hjb import hjb_residual
from dedafp.lab.score import PotentialNet, dsm_loss
from dedafp.lab.sde import VPSDE


@dataclass(frozen=True)
class SGMConfig:
    """Model, noising SDE and training budget of one score-based generative model.

    Attributes:
        sde: the variance-preserving noising SDE.
        t_eps: smallest diffusion time trained, sampled and evaluated (0 < t_eps < 1).
        gamma: weight γ of the HJB penalty γ·E[R²] (>= 0; 0 = plain DSM).
        hidden: width of the potential network (>= 1).
        layers: hidden layers of the potential network (>= 1).
        steps: Adam steps (>= 1), the same for plain and regularised models.
        batch_size: training points per step (>= 1).
        lr: Adam learning rate (> 0), cosine-decayed to 0 over ``steps``.
        sample_steps: Euler–Maruyama steps of the reverse-SDE sampler (>= 1).
    """

    sde: VPSDE = field(default_factory=VPSDE)
    t_eps: float = 1e-3
    gamma: float = 0.0
    hidden: int = 64
    layers: int = 3
    steps: int = 3000
    batch_size: int = 256
    lr: float = 5e-3
    sample_steps: int = 500

    def __post_init__(self) -> None:
        if not isinstance(self.sde, VPSDE):
            raise TypeError(f"sde must be a VPSDE, got {type(self.sde).__name__}")
        if not (isinstance(self.t_eps, (int, float)) and 0.0 < self.t_eps < 1.0):
            raise ValueError(f"t_eps must be in (0, 1), got {self.t_eps!r}")
        if not (isinstance(self.gamma, (int, float)) and math.isfinite(self.gamma) and self.gamma >= 0):
            raise ValueError(f"gamma must be a finite number >= 0, got {self.gamma!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        for name in ("hidden", "layers", "steps", "batch_size", "sample_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class TrainResult:
    """A trained potential network and its training record.

    Attributes:
        net: the trained φ_θ (score = ``net.score``).
        dsm: mean DSM loss over the last 10% of steps.
        residual: mean squared HJB residual at the training points over the last 10% of steps
            (NaN when γ = 0: not computed).
        seconds_per_step: wall-clock seconds per training step.
    """

    net: PotentialNet
    dsm: float
    residual: float
    seconds_per_step: float


def train_sgm(config: SGMConfig, data: Tensor, seed: int, device: torch.device | str = "cpu",
              progress: Callable[[int], None] | None = None) -> TrainResult:
    """Train φ_θ on the training points ``data`` ``[n, d]`` with seed ``seed`` (weights and minibatches).

    ``progress(step)`` is called after every step (for a progress bar).
    """
    if data.ndim != 2:
        raise ValueError(f"data must have shape [n, d], got {tuple(data.shape)}")
    data = data.to(device, torch.float32)
    torch.manual_seed(seed)
    net = PotentialNet(data.shape[1], config.hidden, config.layers).to(device)
    gen = torch.Generator(device=device).manual_seed(seed + 1_000_003)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    dsm_tail, res_tail = [], []
    tail_from = config.steps - max(1, config.steps // 10)
    start = time.perf_counter()
    for step in range(config.steps):
        index = torch.randint(data.shape[0], (config.batch_size,), generator=gen, device=device)
        loss, x_t, t = dsm_loss(net, data[index], config.sde, config.t_eps, generator=gen)
        dsm_value = loss.detach()
        if config.gamma > 0:
            residual = hjb_residual(net, x_t, t.requires_grad_(True), config.sde, create_graph=True)
            mean_sq = (residual**2).mean()
            loss = loss + config.gamma * mean_sq
        if not torch.isfinite(loss):
            raise FloatingPointError(f"score-model loss became non-finite at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if step >= tail_from:
            dsm_tail.append(float(dsm_value))
            res_tail.append(float(mean_sq.detach()) if config.gamma > 0 else float("nan"))
        if progress is not None:
            progress(step + 1)
    seconds = (time.perf_counter() - start) / config.steps
    net.eval()
    return TrainResult(net, sum(dsm_tail) / len(dsm_tail), sum(res_tail) / len(res_tail), seconds)
