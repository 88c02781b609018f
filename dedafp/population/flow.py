"""Time-conditioned normalizing flow μ_θ(x | t): the population model DEDA-FP learns.

The density of μ_t is the push-forward of a standard normal through an autoregressive
rational-quadratic spline flow conditioned on time, composed with fixed bijections fitted to the
data (``x -> y``):

    [optional] bounded box:  u = logit((x - low) / (high - low))      (no mass ever leaves the box)
    per-time whitening:      y = L_t⁻¹ (u - c_t)                        (c_t, L_t: data mean, Cholesky)
    learned spline flow:     z = f_θ(y; context(t)),  z ~ N(0, I)

The whitening makes the learned part a small correction of a standard normal at every t, which is
what lets a small flow reach the accuracy the LQ validation asks for; its log-determinant is exact.
Two interchangeable backends build ``f_θ``: ``nflows`` (the design card's choice) and ``zuko``.

Usage::

    flow = FlowPopulation(FlowConfig(), dim=2, horizon=20)
    flow.fit(times, states)          # times [n] ints, states [n, 2]
    flow.log_prob(x, t=5); flow.sample(t=5, n=1000); flow.mean(5)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dedafp.common.validation import Rule, validated
from dedafp.population.base import PopulationModel
from dedafp.population.fokker_planck import FokkerPlanckTerm, fokker_planck_residual

BACKENDS = ("nflows", "zuko")
_EDGE = 1e-3


def time_context(t: Tensor, horizon: int, harmonics: int) -> Tensor:
    """Context ``(τ, sin kπτ, cos kπτ for k = 1..harmonics)`` of times ``t`` ``[n]``: ``[n, 1 + 2 harmonics]``.

    ``τ = 2t/T - 1``; ``t`` may be fractional (the Fokker-Planck penalty differentiates in t).
    """
    tau = 2.0 * t.float() / horizon - 1.0
    features = [tau]
    for k in range(1, harmonics + 1):
        features += [torch.sin(k * math.pi * tau), torch.cos(k * math.pi * tau)]
    return torch.stack(features, dim=-1)


@dataclass(frozen=True)
@validated("flow")
class FlowConfig:
    """Architecture and training budget of the population flow.

    Attributes:
        backend: ``"nflows"`` or ``"zuko"``.
        transforms: number of autoregressive spline transforms (>= 1).
        hidden: width of the conditioner networks (>= 1), two hidden layers.
        bins: spline bins per transform (>= 2).
        tail_bound: splines act on [-tail_bound, tail_bound] (whitened units), linear tails outside.
        time_harmonics: context = (τ, sin(kπτ), cos(kπτ) for k = 1..time_harmonics), τ = 2t/T - 1.
        steps: Adam steps per call of ``fit`` (>= 0).
        batch_size: samples per step (>= 1).
        lr: Adam learning rate (> 0), decayed by cosine to 0 within each ``fit`` call.
        mean_samples: antithetic base samples per t for ``mean`` (even, >= 2).
        low / high: optional box bounds of the state (both or neither, length = dim).
        fp_penalty: weight γ (>= 0) of the Fokker–Planck penalty γ·E[R²] added to the NLL in ``fit``
            (R of :mod:`dedafp.population.fokker_planck`); 0 = off: ``fit`` is exactly the plain NLL fit.
        patience: early stopping (>= 0; 0 = off, every fit takes its ``steps``). Otherwise a share
            ``holdout`` of the samples is held out, its NLL is measured every ``max(1, steps // 20)``
            steps, and the fit stops after ``patience`` measurements without an improvement of 1e-3
            nats: a warm-started refit to a population that moved little stops early.
        holdout: share of the samples held out for early stopping, in (0, 1) (used when patience > 0).
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "backend": BACKENDS, "transforms": ">= 1", "hidden": ">= 1", "bins": ">= 2", "tail_bound": "> 0",
        "time_harmonics": ">= 0", "steps": ">= 0", "batch_size": ">= 1", "lr": "> 0", "mean_samples": ">= 2",
        "fp_penalty": ">= 0", "patience": ">= 0", "holdout": "(0, 1)"}

    backend: str = "nflows"
    transforms: int = 3
    hidden: int = 32
    bins: int = 8
    tail_bound: float = 5.0
    time_harmonics: int = 2
    steps: int = 400
    batch_size: int = 1024
    lr: float = 2e-3
    mean_samples: int = 8192
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    fp_penalty: float = 0.0
    patience: int = 0
    holdout: float = 0.1

    def __post_init__(self) -> None:
        """mean_samples even; low and high together, low < high (stored as float tuples)."""
        if self.mean_samples % 2:
            raise ValueError(f"flow.mean_samples must be even (antithetic pairs), got {self.mean_samples}")
        if (self.low is None) != (self.high is None):
            raise ValueError("flow.low and flow.high must be given together or not at all")
        if self.low is not None:
            low, high = tuple(float(v) for v in self.low), tuple(float(v) for v in self.high)
            if len(low) != len(high) or any(lo >= hi for lo, hi in zip(low, high, strict=True)):
                raise ValueError(f"flow.low must be below flow.high coordinate-wise, got {low} and {high}")
            object.__setattr__(self, "low", low)
            object.__setattr__(self, "high", high)


    @property
    def context_dim(self) -> int:
        """Length of the time context vector."""
        return 1 + 2 * self.time_harmonics


class _NflowsBackend(nn.Module):
    """f_θ built with nflows: spline MADE transforms interleaved with reversals.

    Both backends expose ``forward(y, context) -> (z, log|det ∂z/∂y|)`` and ``inverse(z, context) -> y``.
    """

    def __init__(self, dim: int, config: FlowConfig) -> None:
        super().__init__()
        from nflows.distributions import StandardNormal
        from nflows.flows import Flow
        from nflows.transforms import (
            CompositeTransform,
            MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
            ReversePermutation,
        )
        layers: list[nn.Module] = []
        for i in range(config.transforms):
            if i > 0 and dim > 1:
                layers.append(ReversePermutation(dim))
            layers.append(MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                features=dim, hidden_features=config.hidden, context_features=config.context_dim,
                num_bins=config.bins, tails="linear", tail_bound=config.tail_bound))
        self.flow = Flow(CompositeTransform(layers), StandardNormal([dim]))   # only its transform is used

    def forward(self, y: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.flow._transform.forward(y, context=context)

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        return self.flow._transform.inverse(z, context=context)[0]


class _ZukoBackend(nn.Module):
    """f_θ built with zuko's neural spline flow."""

    def __init__(self, dim: int, config: FlowConfig) -> None:
        super().__init__()
        import zuko
        self.flow = zuko.flows.NSF(dim, config.context_dim, transforms=config.transforms, bins=config.bins,
                                   hidden_features=[config.hidden, config.hidden])
        self.tail_bound = config.tail_bound
        # zuko's splines act on [-5, 5]; rescale so that both backends share the tail bound.
        self.scale = 5.0 / config.tail_bound

    def forward(self, y: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        z, ladj = self.flow(context).transform.call_and_ladj(y * self.scale)
        return z, ladj + y.shape[-1] * math.log(self.scale)

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        return self.flow(context).transform.inv(z) / self.scale


class FlowPopulation(PopulationModel):
    """Normalizing-flow population model on R^d (or a box), conditioned on integer time t ∈ 0..T.

    Args:
        config: architecture and training budget.
        dim: state dimension d.
        horizon: last time index T.
        device: where the flow lives and computes.
        seed: seeds the initial weights (for reproducible runs).
    """

    def __init__(self, config: FlowConfig, dim: int, horizon: int, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        if config.low is not None and len(config.low) != dim:
            raise ValueError(f"flow.low/high must have length dim={dim}, got {len(config.low)}")
        self.config = config
        self.dim = dim
        self.horizon = horizon
        self._device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backend = _NflowsBackend if config.backend == "nflows" else _ZukoBackend
            self.net = backend(dim, config).to(self._device)
        # Per-time whitening, identity until the first fit.
        self.centre = torch.zeros(horizon + 1, dim, device=self._device)
        self.chol = torch.eye(dim, device=self._device).repeat(horizon + 1, 1, 1)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self._mean_cache: Tensor | None = None
        self.last_fp_residual = float("nan")
        #: Adam steps the last ``fit`` took (fewer than asked when early stopping ended it).
        self.last_steps = 0

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- fixed bijections -------------------------------------------------------------------

    def _context(self, t: Tensor) -> Tensor:
        return time_context(t, self.horizon, self.config.time_harmonics)

    def _to_unbounded(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map the box to R^d by a logit; returns (u, log|det du/dx|) per point."""
        if self.config.low is None:
            return x, x.new_zeros(x.shape[0])
        low = torch.tensor(self.config.low, device=x.device)
        width = torch.tensor(self.config.high, device=x.device) - low
        # Read the density within _EDGE (relative) of the box's faces at _EDGE: through the logit, a
        # fitted flow's density collapses there (log μ ~ -20 at 1e-4 from an outer wall, measured on
        # four-rooms), which a density reward would pay agents to hug the wall for.
        p = ((x - low) / width).clamp(_EDGE, 1 - _EDGE)
        u = torch.log(p) - torch.log1p(-p)
        return u, -(torch.log(p) + torch.log1p(-p) + torch.log(width)).sum(-1)

    def _from_unbounded(self, u: Tensor) -> Tensor:
        if self.config.low is None:
            return u
        low = torch.tensor(self.config.low, device=u.device)
        width = torch.tensor(self.config.high, device=u.device) - low
        return low + width * torch.sigmoid(u)

    def _whiten(self, u: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        chol = self.chol[t]
        y = torch.linalg.solve_triangular(chol, (u - self.centre[t]).unsqueeze(-1), upper=False).squeeze(-1)
        return y, -torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)

    def _times(self, t: int | Tensor, n: int) -> Tensor:
        times = torch.as_tensor(t, device=self._device).long().expand(n)
        if n and (times.min() < 0 or times.max() > self.horizon):
            raise ValueError(f"t must be in 0..{self.horizon}")
        return times

    # ---- PopulationModel ----------------------------------------------------------------------

    def to_base(self, x: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        """The base point ``z`` ``[n, d]`` of states ``x`` and ``log|det ∂z/∂x|`` ``[n]``."""
        x = x.to(self._device, torch.float32)
        times = self._times(t, x.shape[0])
        u, log_det_box = self._to_unbounded(x)
        y, log_det_white = self._whiten(u, times)
        z, log_det_flow = self.net.forward(y, self._context(times))
        return z, log_det_flow + log_det_white + log_det_box

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        z, log_det = self.to_base(x, t)
        return -0.5 * (z**2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) + log_det

    def log_prob_continuous(self, x: Tensor, t: Tensor) -> Tensor:
        """log μ(x | t) ``[n]`` at continuous times ``t`` ``[n]`` (float, in [0, T]), differentiable in x and t.

        The flow's context is read at τ = 2t/T − 1 and the per-time whitening is interpolated linearly
        between the neighbouring integer times, so this equals :meth:`log_prob` at integer t and
        ∂_t log μ exists in between (what the Fokker–Planck residual needs).
        """
        x = x.to(self._device, torch.float32)
        t = t.to(self._device, torch.float32)
        if t.shape != x.shape[:1]:
            raise ValueError(f"t must have shape [{x.shape[0]}], got {tuple(t.shape)}")
        if t.numel() and (t.min() < 0 or t.max() > self.horizon):
            raise ValueError(f"t must be in [0, {self.horizon}]")
        lower = t.detach().floor().long().clamp(0, max(self.horizon - 1, 0))
        upper = (lower + 1).clamp(max=self.horizon)
        w = (t - lower.float())[:, None]
        centre = (1 - w) * self.centre[lower] + w * self.centre[upper]
        chol = (1 - w[..., None]) * self.chol[lower] + w[..., None] * self.chol[upper]
        u, log_det_box = self._to_unbounded(x)
        y = torch.linalg.solve_triangular(chol, (u - centre).unsqueeze(-1), upper=False).squeeze(-1)
        log_det_white = -torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        z, log_det_flow = self.net.forward(y, self._context(t))
        return -0.5 * (z**2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) + log_det_flow + log_det_white \
            + log_det_box

    @torch.no_grad()
    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.dim, generator=generator, device=self._device)
        return self.from_base(z, t)

    def from_base(self, z: Tensor, t: int | Tensor) -> Tensor:
        """States ``[n, d]`` whose base points are ``z`` ``[n, d]`` (inverse of :meth:`to_base`)."""
        return self._push(z.to(self._device), self._times(t, z.shape[0]))

    def _push(self, z: Tensor, times: Tensor) -> Tensor:
        y = self.net.inverse(z, self._context(times))
        u = self.centre[times] + (self.chol[times] @ y.unsqueeze(-1)).squeeze(-1)
        return self._from_unbounded(u)

    @torch.no_grad()
    def mean(self, t: int) -> Tensor:
        """Mean of μ_t by antithetic Monte Carlo (fixed seed, cached until the next fit)."""
        if self._mean_cache is None:
            half = self.config.mean_samples // 2
            gen = torch.Generator(device=self._device).manual_seed(12345)
            z = torch.randn(half, self.dim, generator=gen, device=self._device)
            z = torch.cat([z, -z])       # antithetic: exact for the whitening, low variance near it
            means = []
            for time in range(self.horizon + 1):
                times = torch.full((z.shape[0],), time, device=self._device, dtype=torch.long)
                means.append(self._push(z, times).mean(0))
            self._mean_cache = torch.stack(means)
        return self._mean_cache[self._times(t, 1)[0]]

    # ---- fitting ------------------------------------------------------------------------------

    def fit(self, times: Tensor, states: Tensor, steps: int | None = None, generator: torch.Generator | None = None,
            refresh_whitening: bool = True, fokker_planck: FokkerPlanckTerm | None = None) -> float:
        """Maximum-likelihood fit on samples ``(times[i], states[i])``; warm-starts from the current weights.

        Args:
            times: integer times ``[n]`` in 0..T (every t should be present).
            states: ``[n, d]``.
            steps: Adam steps (default ``config.steps``); the learning rate decays to 0 over them.
            generator: for the minibatch draws.
            refresh_whitening: re-estimate the per-time whitening from this data first.
            fokker_planck: drift and noise of the population's dynamics; required when
                ``config.fp_penalty > 0`` (then the loss is NLL + fp_penalty · E[R²], R evaluated at the first
                ``points`` minibatch states at times t + u, u ~ U(−½, ½) clipped to [0, T]), ignored when 0.

        Returns:
            Mean negative log-likelihood (nats per sample) over the last 10% of steps (the NLL alone);
            the mean squared residual over those steps is in ``last_fp_residual`` (NaN when off).
        """
        times = times.to(self._device).long()
        states = states.to(self._device, torch.float32)
        if states.ndim != 2 or states.shape[1] != self.dim or times.shape != states.shape[:1]:
            raise ValueError(f"fit needs times [n] and states [n, {self.dim}], got {tuple(times.shape)} "
                             f"and {tuple(states.shape)}")
        if not torch.isfinite(states).all():
            raise FloatingPointError("flow training data contains NaN or inf")
        if refresh_whitening:
            self._refresh_whitening(times, states)
        penalty = self.config.fp_penalty
        if penalty > 0 and fokker_planck is None:
            raise ValueError(f"flow.fp_penalty = {penalty} needs the population's drift: pass "
                             "fit(..., fokker_planck=FokkerPlanckTerm(drift, sigma, dt))")
        steps = self.config.steps if steps is None else steps
        states, times, held_out = self._split_holdout(states, times, generator)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, max(steps, 1))
        losses, residuals = [], []
        n = states.shape[0]
        check_every, best, stale = max(1, steps // 20), math.inf, 0
        for step in range(steps):
            index = torch.randint(n, (min(self.config.batch_size, n),), generator=generator,
                                  device=self._device)
            loss = nll = -self.log_prob(states[index], times[index]).mean()
            if penalty > 0:
                mean_sq = self._fp_mean_square(states[index], times[index], fokker_planck, generator)
                residuals.append(mean_sq.item())
                loss = loss + penalty * mean_sq
            if not torch.isfinite(loss):
                raise FloatingPointError("flow negative log-likelihood became non-finite during fitting")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
            self.optimizer.step()
            schedule.step()
            losses.append(nll.item())
            if held_out is not None and (step + 1) % check_every == 0:
                with torch.no_grad():
                    score = float(-self.log_prob(held_out[1], held_out[0]).mean())
                best, stale = (score, 0) if score < best - 1e-3 else (best, stale + 1)
                if stale >= self.config.patience:
                    break
        self._mean_cache = None
        self.last_steps = len(losses)
        tail = losses[-max(1, len(losses) // 10):]
        self.last_fp_residual = float(np.mean(residuals[-max(1, len(residuals) // 10):])) if residuals else float("nan")
        return float(np.mean(tail)) if losses else float("nan")

    def _split_holdout(self, states: Tensor, times: Tensor, generator: torch.Generator | None
                       ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """Training states and times, and the held-out ``(times, states)`` of early stopping (None when off).

        At most 4,096 samples are held out: enough for the NLL to 0.01 nats, cheap to score.
        """
        if self.config.patience == 0:
            return states, times, None
        n = states.shape[0]
        size = min(4096, max(1, round(self.config.holdout * n)))
        order = torch.randperm(n, generator=generator, device=self._device)
        held, kept = order[:size], order[size:]
        return states[kept], times[kept], (times[held], states[held])

    def _fp_mean_square(self, states: Tensor, times: Tensor, term: FokkerPlanckTerm,
                        generator: torch.Generator | None) -> Tensor:
        """E[R²] at the first ``term.points`` minibatch states, at times jittered by U(−½, ½) within [0, T]."""
        x, t = states[: term.points], times[: term.points].float()
        jitter = torch.rand(t.shape, generator=generator, device=self._device) - 0.5
        t = (t + jitter).clamp(0.0, float(self.horizon))
        residual = fokker_planck_residual(self.log_prob_continuous, term, x, t, create_graph=True)
        return (residual**2).mean()

    @torch.no_grad()
    def _refresh_whitening(self, times: Tensor, states: Tensor) -> None:
        u, _ = self._to_unbounded(states)
        eye = torch.eye(self.dim, device=self._device)
        for time in range(self.horizon + 1):
            chunk = u[times == time]
            if chunk.shape[0] < 2 * self.dim + 2:
                raise ValueError(f"flow fit needs at least {2 * self.dim + 2} samples at every t; "
                                 f"t={time} has {chunk.shape[0]}")
            centre = chunk.mean(0)
            cov = torch.cov(chunk.T).reshape(self.dim, self.dim) + 1e-6 * eye
            self.centre[time] = centre
            self.chol[time] = torch.linalg.cholesky(cov)

    @torch.no_grad()
    def nll(self, times: Tensor, states: Tensor) -> float:
        """Mean negative log-likelihood (nats) of held-out samples."""
        return float(-self.log_prob(states, times).mean())

    # ---- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to rebuild the model: config, shapes, weights, whitening, optimizer."""
        return {"kind": "flow", "config": dataclasses.asdict(self.config), "dim": self.dim, "horizon": self.horizon,
                "net": self.net.state_dict(), "centre": self.centre.cpu(), "chol": self.chol.cpu(),
                "optimizer": self.optimizer.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> FlowPopulation:
        """Rebuild a model saved with :meth:`state_dict` (without ``"optimizer"``: a fresh optimizer)."""
        config = state["config"]
        for key in ("low", "high"):
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        model = cls(FlowConfig(**config), state["dim"], state["horizon"], device)
        model.net.load_state_dict(state["net"])
        model.centre = state["centre"].to(model.device)
        model.chol = state["chol"].to(model.device)
        if "optimizer" in state:
            model.optimizer.load_state_dict(state["optimizer"])
        return model
