"""Time-conditioned normalizing flow on the circle or the torus: the population model of periodic games.

A periodic state space is the box ``[low, high)^d`` with opposite faces glued. Its density must be
periodic and continuous across the seam (``low`` and ``high`` are one point); a flow on R^d or
through a logit (:class:`~dedafp.population.flow.FlowPopulation`) has a wall there. This model is
a neural circular spline flow (Rezende et al., *Normalizing Flows on Tori and Spheres*, ICML 2020),
built from zuko's circular spline transform (the univariate transform of ``zuko.flows.NCSF``):

    affine map to angles:   θ = -π + 2π (wrap(x) - low) / (high - low)      (log-Jacobian d·log 2π - Σ log width)
    per layer l, per coordinate i (autoregressive, the order reversed every other layer):
        φ, spline params  = MLP(cos θ_<i, sin θ_<i, context(t))             (θ_<i: coordinates before i)
        θ_i  <-  RQS_π(wrap(θ_i + φ + π))                                    (learned rotation, then a spline)
    base:                   z = θ after the last layer,  z ~ Uniform([-π, π)^d)

Why not ``zuko.flows.NCSF`` itself: its conditioner reads the raw angles θ_<i, so in d >= 2 the
density of a coordinate jumps where an earlier coordinate crosses the seam (measured with random
weights, 3 transforms, d = 2: |Δ log μ| up to 0.34 between θ_1 = -π + 1e-4 and π - 1e-4). Feeding
(cos, sin) of the earlier angles removes that. Each spline maps [-π, π] onto itself with slope 1 at
both ends (zuko fixes the boundary knot derivatives), and a rotation is smooth on the circle, so
every layer is a C¹ diffeomorphism of the circle: the density is continuous and periodic. In d = 1
the model is an NCSF with a learned rotation per layer. The last layer of every conditioner starts at
zero, so an unfitted model is the uniform density.

The time context is :class:`FlowPopulation`'s: ``(τ, sin kπτ, cos kπτ for k = 1..time_harmonics)``,
``τ = 2t/T - 1``.

Usage::

    flow = PeriodicFlowPopulation(FlowConfig(), dim=1, horizon=20, low=(-math.pi,), high=(math.pi,))
    flow.fit(times, states)                 # times [n] ints, states [n, 1] (wrapped into [low, high))
    flow.log_prob(x, t=5); flow.sample(t=5, n=1000); flow.mean(5)   # mean: the circular mean
"""

from __future__ import annotations

import dataclasses
import math
from typing import final

import numpy as np
import torch
from torch import Tensor, nn

from dedafp.population.base import PopulationModel
from dedafp.population.flow import FlowConfig, time_context

__all__ = ["PeriodicFlowPopulation"]

_TWO_PI = 2.0 * math.pi


def _wrap_angle(theta: Tensor) -> Tensor:
    """Angles mapped into [-π, π)."""
    return torch.remainder(theta + math.pi, _TWO_PI) - math.pi


class _CircularSplineFlow(nn.Module):
    """f_θ: angles ``[n, d]`` in [-π, π)^d to base angles, autoregressive with periodic conditioners.

    ``forward(theta, context) -> (z, log|det ∂z/∂θ|)``; ``inverse(z, context) -> theta`` (coordinate by
    coordinate, d passes per layer).
    """

    def __init__(self, dim: int, context_dim: int, transforms: int, hidden: int, bins: int) -> None:
        super().__init__()
        import zuko
        self.dim, self.bins = dim, bins
        # Per layer, the coordinates in the order they are transformed; coordinate order[k] reads order[:k].
        self.orders = [list(range(dim)) if layer % 2 == 0 else list(range(dim))[::-1] for layer in range(transforms)]
        # Outputs per coordinate: rotation φ (1), bin widths (K), heights (K), interior knot derivatives (K - 1).
        outputs = 1 + 3 * bins - 1
        self.conditioners = nn.ModuleList()
        for order in self.orders:
            layer = nn.ModuleList()
            for k in range(len(order)):
                mlp = zuko.nn.MLP(2 * k + context_dim, outputs, hidden_features=[hidden, hidden])
                for parameter in mlp[-1].parameters():      # the output layer (zuko's Linear)
                    nn.init.zeros_(parameter)
                layer.append(mlp)
            self.conditioners.append(layer)

    def _univariate(self, mlp: nn.Module, earlier: list[Tensor], context: Tensor):
        """The rotation φ ``[n]`` and zuko's spline on [-π, π] for one coordinate, given earlier angles."""
        from zuko.transforms import MonotonicRQSTransform
        features = [context] + [f(angle).unsqueeze(-1) for angle in earlier for f in (torch.cos, torch.sin)]
        params = mlp(torch.cat(features, dim=-1))
        k = self.bins
        spline = MonotonicRQSTransform(params[:, 1:1 + k], params[:, 1 + k:1 + 2 * k], params[:, 1 + 2 * k:],
                                       bound=math.pi)
        return params[:, 0], spline

    def forward(self, theta: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        log_det = theta.new_zeros(theta.shape[0])
        for order, layer in zip(self.orders, self.conditioners, strict=True):
            out = list(theta.unbind(-1))
            for k, (i, mlp) in enumerate(zip(order, layer, strict=True)):
                shift, spline = self._univariate(mlp, [theta[:, j] for j in order[:k]], context)
                out[i], ladj = spline.call_and_ladj(_wrap_angle(theta[:, i] + shift + math.pi))
                log_det = log_det + ladj
            theta = torch.stack(out, dim=-1)
        return theta, log_det

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        for order, layer in zip(self.orders[::-1], list(self.conditioners)[::-1], strict=True):
            out = list(z.unbind(-1))
            for k, (i, mlp) in enumerate(zip(order, layer, strict=True)):
                shift, spline = self._univariate(mlp, [out[j] for j in order[:k]], context)
                out[i] = _wrap_angle(spline.inv(z[:, i]) - shift - math.pi)
            z = torch.stack(out, dim=-1)
        return z


def _bounds(name: str, value: tuple[float, ...] | list[float], dim: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in value)
    if len(values) != dim or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be {dim} finite numbers, got {value!r}")
    return values


@final
class PeriodicFlowPopulation(PopulationModel):
    """Normalizing-flow population model on the periodic box ``[low, high)^d``, conditioned on t ∈ 0..T.

    Densities are per unit of state volume and periodic: ``log_prob(x + k (high - low))`` equals
    ``log_prob(x)`` for any integer k, so states need not be wrapped first. Samples lie in ``[low, high)``.

    Of :class:`FlowConfig` the model uses ``transforms``, ``hidden`` (two hidden layers), ``bins``,
    ``time_harmonics``, ``steps``, ``batch_size``, ``lr`` and ``mean_samples``; ``backend`` and
    ``tail_bound`` do not apply (zuko's circular spline on [-π, π] always). ``low``/``high`` of the
    config must be None or equal to the domain's.

    Args:
        config: architecture and training budget.
        dim: state dimension d (1: the circle, 2: the torus, ...).
        horizon: last time index T.
        low / high: the periodic box, ``d`` numbers each with ``low < high``.
        device: where the flow lives and computes.
        seed: seeds the initial weights (the torch global RNG is left untouched).
    """

    def __init__(self, config: FlowConfig, dim: int, horizon: int, low: tuple[float, ...], high: tuple[float, ...],
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        if not isinstance(config, FlowConfig):
            raise TypeError(f"config must be a FlowConfig, got {type(config).__name__}")
        if config.patience:
            raise ValueError(f"flow.patience={config.patience}: the periodic flow has no early stopping yet; "
                             "set flow.patience=0 (fixed flow.steps)")
        for name, value in (("dim", dim), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        low, high = _bounds("low", low, dim), _bounds("high", high, dim)
        if any(lo >= hi for lo, hi in zip(low, high, strict=True)):
            raise ValueError(f"low must be below high in every coordinate, got {low} and {high}")
        if config.low is not None and (config.low != low or config.high != high):
            raise ValueError(f"flow.low/high {config.low}/{config.high} differ from the periodic domain {low}/{high}; "
                             f"leave them unset for a periodic game")
        self.config = config
        self.dim = dim
        self.horizon = horizon
        self.low, self.high = low, high
        self._device = torch.device(device)
        self._low = torch.tensor(low, device=self._device)
        self._width = torch.tensor(high, device=self._device) - self._low
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = _CircularSplineFlow(dim, config.context_dim, config.transforms, config.hidden,
                                           config.bins).to(self._device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr)
        self._moments: Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    # ---- maps -------------------------------------------------------------------------------------

    def _times(self, t: int | Tensor, n: int) -> Tensor:
        times = torch.as_tensor(t, device=self._device).long().expand(n)
        if n and (times.min() < 0 or times.max() > self.horizon):
            raise ValueError(f"t must be in 0..{self.horizon}")
        return times

    def _check_states(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"states must have shape [n, {self.dim}], got {tuple(x.shape)}")
        return x.to(self._device, torch.float32)

    def _to_angles(self, x: Tensor) -> Tensor:
        """States (any real numbers) as angles in [-π, π)."""
        return _wrap_angle(_TWO_PI * (x - self._low) / self._width - math.pi)

    def _from_angles(self, theta: Tensor) -> Tensor:
        """Angles in [-π, π) as states in [low, high)."""
        x = self._low + self._width * (theta + math.pi) / _TWO_PI
        # rounding may land exactly on high: fold it back onto low (the same point of the circle)
        return torch.where(x >= self._low + self._width, self._low, x)

    def to_base(self, x: Tensor, t: int | Tensor) -> tuple[Tensor, Tensor]:
        """The base angles ``z`` ``[n, d]`` in [-π, π) of states ``x`` and ``log|det ∂z/∂x|`` ``[n]``."""
        x = self._check_states(x)
        times = self._times(t, x.shape[0])
        z, log_det = self.net(self._to_angles(x), time_context(times, self.horizon, self.config.time_harmonics))
        return z, log_det + torch.log(_TWO_PI / self._width).sum()

    def from_base(self, z: Tensor, t: int | Tensor) -> Tensor:
        """States ``[n, d]`` in [low, high) whose base angles are ``z`` ``[n, d]`` (inverse of :meth:`to_base`)."""
        z = z.to(self._device, torch.float32)
        times = self._times(t, z.shape[0])
        return self._from_angles(self.net.inverse(z, time_context(times, self.horizon, self.config.time_harmonics)))

    # ---- PopulationModel --------------------------------------------------------------------------

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        """Log-density of μ_t at ``x`` ``[n, d]`` (nats, per unit of state volume; periodic in x). Returns ``[n]``."""
        z, log_det = self.to_base(x, t)
        return log_det - self.dim * math.log(_TWO_PI)

    @torch.no_grad()
    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` states ``[n, d]`` in [low, high) drawn from μ_t."""
        z = _TWO_PI * torch.rand(n, self.dim, generator=generator, device=self._device) - math.pi
        return self.from_base(z, self._check_t(t))

    @torch.no_grad()
    def _circular_moments(self) -> Tensor:
        """E[cos θ], E[sin θ] per t and coordinate, ``[T+1, 2, d]``: quasi-Monte Carlo over the base (cached)."""
        if self._moments is None:
            sobol = torch.quasirandom.SobolEngine(self.dim, scramble=True, seed=12345)
            z = (_TWO_PI * sobol.draw(self.config.mean_samples) - math.pi).float().to(self._device)
            moments = []
            for time in range(self.horizon + 1):
                times = torch.full((z.shape[0],), time, device=self._device, dtype=torch.long)
                theta = self._to_angles(self._from_angles(
                    self.net.inverse(z, time_context(times, self.horizon, self.config.time_harmonics))))
                moments.append(torch.stack([torch.cos(theta).mean(0), torch.sin(theta).mean(0)]))
            self._moments = torch.stack(moments)
        return self._moments

    def mean(self, t: int) -> Tensor:
        """Circular mean of μ_t per coordinate, in [low, high): ``[d]``.

        The arithmetic mean of a periodic coordinate depends on where the seam is cut; the circular
        mean is the point ``low + width (atan2(E sin θ, E cos θ) + π) / 2π`` (θ: the coordinate as an
        angle in [-π, π)). It is ill-defined when the mean resultant length
        (:meth:`mean_resultant_length`) is near 0 (a near-uniform coordinate). Estimated from
        ``config.mean_samples`` scrambled Sobol base points, cached until the next fit.
        """
        cos, sin = self._circular_moments()[self._check_t(t)]
        return self._from_angles(torch.atan2(sin, cos))

    def mean_resultant_length(self, t: int) -> Tensor:
        """``|E e^{iθ}|`` of μ_t per coordinate, in [0, 1] (1: a point mass, 0: e.g. uniform): ``[d]``."""
        return torch.linalg.vector_norm(self._circular_moments()[self._check_t(t)], dim=0)

    # ---- fitting ----------------------------------------------------------------------------------

    def fit(self, times: Tensor, states: Tensor, steps: int | None = None,
            generator: torch.Generator | None = None) -> float:
        """Maximum-likelihood fit on samples ``(times[i], states[i])``; warm-starts from the current weights.

        Args:
            times: integer times ``[n]`` in 0..T.
            states: ``[n, d]`` (any real numbers; read modulo the period).
            steps: Adam steps (default ``config.steps``); the learning rate decays to 0 by cosine over them.
            generator: for the minibatch draws.

        Returns:
            Mean negative log-likelihood (nats per sample) over the last 10% of steps (NaN for 0 steps).
        """
        times = times.to(self._device).long()
        states = states.to(self._device, torch.float32)
        if states.ndim != 2 or states.shape[1] != self.dim or times.shape != states.shape[:1]:
            raise ValueError(f"fit needs times [n] and states [n, {self.dim}], got {tuple(times.shape)} "
                             f"and {tuple(states.shape)}")
        if not torch.isfinite(states).all():
            raise FloatingPointError("flow training data contains NaN or inf")
        self._times(times, times.shape[0])
        steps = self.config.steps if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, max(steps, 1))
        losses = []
        n = states.shape[0]
        for _ in range(steps):
            index = torch.randint(n, (min(self.config.batch_size, n),), generator=generator, device=self._device)
            loss = -self.log_prob(states[index], times[index]).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError("flow negative log-likelihood became non-finite during fitting")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
            self.optimizer.step()
            schedule.step()
            losses.append(loss.item())
        self._moments = None
        tail = losses[-max(1, steps // 10):]
        return float(np.mean(tail)) if losses else float("nan")

    @torch.no_grad()
    def nll(self, times: Tensor, states: Tensor) -> float:
        """Mean negative log-likelihood (nats) of held-out samples."""
        return float(-self.log_prob(states, times).mean())

    # ---- persistence ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """What rebuilds the model: ``kind`` ``"periodic"``, config, shapes, bounds, weights, optimizer."""
        return {"kind": "periodic", "config": dataclasses.asdict(self.config), "dim": self.dim,
                "horizon": self.horizon, "low": self.low, "high": self.high, "net": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict()}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> PeriodicFlowPopulation:
        """Rebuild a model saved with :meth:`state_dict` (without ``"optimizer"``: a fresh optimizer)."""
        if state.get("kind") != "periodic":
            raise ValueError(f"not a periodic flow's state (kind {state.get('kind')!r})")
        config = dict(state["config"])
        for key in ("low", "high"):
            if config.get(key) is not None:
                config[key] = tuple(config[key])
        model = cls(FlowConfig(**config), state["dim"], state["horizon"], tuple(state["low"]), tuple(state["high"]),
                    device)
        model.net.load_state_dict(state["net"])
        if "optimizer" in state:
            model.optimizer.load_state_dict(state["optimizer"])
        return model
