"""``dedafp bench dimensions``: density accuracy per unit of time, flow against kernel estimate, as d grows.

On the d-dimensional LQ game (:func:`lq_config`: the ``lq1d``/``lq2d`` presets for d = 1, 2, rotation
blocks beyond), a fixed linear policy, the exact equilibrium, induces exactly Gaussian marginals
(:func:`dedafp.reference.lq.equilibrium`). For each particle budget N, N agents are simulated with
that policy and three density estimates are built from the same particles:

* ``kde``: the baselines' Gaussian kernel density (:class:`~dedafp.population.ParticlePopulation`,
  Scott's rule);
* ``flow``: DEDA-FP's time-conditioned flow at the project's LQ defaults (:class:`FlowConfig`);
* ``gaussian``: a Gaussian fitted to the particles per t, which is the flow's per-time whitening
  alone, i.e. the correctly specified parametric model here: what a flow gains over it is nothing.

The error of each to the exact marginal is KL(exact || estimate) = E_exact[log p − log q], by Monte
Carlo on the same exact samples for all three (common random numbers), at a few times t. Wall-clock
is simulation + fit + the evaluation queries, all measured. Caveat: the marginals are Gaussian, the
case in which the flow's whitening is already exact; a non-Gaussian truth would be harder for it.

Usage::

    result = bench_dimensions(DimensionSweepConfig(), Path("results/bench"))
    result["verdict"]
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.common.files import write_json
from dedafp.common.timing import machine_info, seconds_since, synchronize, timed
from dedafp.envs.lq import LQConfig, LQGame, lq_preset
from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.gaussian import GaussianPopulation
from dedafp.population.particles import ParticlePopulation
from dedafp.reference import lq
from dedafp.rollout import rollout

ESTIMATORS = ("kde", "flow", "gaussian", "flow_long")


@dataclass(frozen=True)
class DimensionSweepConfig:
    """Sizes of the dimension sweep.

    Attributes:
        dims: state dimensions d (each >= 1).
        budgets: particle budgets N (agents simulated; each >= 16) for every estimator.
        kde_only_budgets: larger budgets for the kernel estimate alone (its cost is in the queries, so
            it can afford more particles within the flow's fitting time).
        eval_points: exact samples per evaluated t for the Monte Carlo KL (>= 16).
        eval_times: times at which the KL is evaluated (in 0..20).
        flow: the flow's configuration (default: the project's LQ flow, 400 Adam steps).
        flow_long_steps: Adam steps of a second flow fitted at the largest budget only (``flow_long``),
            to show how much of the flow's error is optimisation (None: skip).
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds simulations, exact samples and flow weights.
    """

    dims: tuple[int, ...] = (1, 2, 5, 10)
    budgets: tuple[int, ...] = (500, 2_000, 8_000, 32_000)
    kde_only_budgets: tuple[int, ...] = (128_000,)
    eval_points: int = 1_000
    eval_times: tuple[int, ...] = (0, 4, 8, 12, 16, 20)
    flow: FlowConfig = FlowConfig()
    flow_long_steps: int | None = 1_600
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, values, minimum in (("dims", self.dims, 1), ("budgets", self.budgets, 16),
                                      ("kde_only_budgets", self.kde_only_budgets, 16)):
            if (name != "kde_only_budgets" and not values) or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
                raise ValueError(f"{name} must be integers >= {minimum}, got {values!r}")
        if isinstance(self.eval_points, bool) or not isinstance(self.eval_points, int) or self.eval_points < 16:
            raise ValueError(f"eval_points must be an integer >= 16, got {self.eval_points!r}")
        if not self.eval_times or any(not isinstance(t, int) or not 0 <= t <= 20 for t in self.eval_times):
            raise ValueError(f"eval_times must be integers in 0..20, got {self.eval_times!r}")
        if self.flow_long_steps is not None and (isinstance(self.flow_long_steps, bool)
                                                 or not isinstance(self.flow_long_steps, int)
                                                 or self.flow_long_steps < 1):
            raise ValueError(f"flow_long_steps must be None or an integer >= 1, got {self.flow_long_steps!r}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but torch.cuda.is_available() is False; use --device cpu")


def lq_config(dim: int) -> LQConfig:
    """The d-dimensional LQ game: ``lq1d``/``lq2d`` for d = 1, 2; beyond, Ā's rotation is block-diagonal.

    A = I, B = dt I, Ā = 0.5 dt Rot_d (Rot_d: 2×2 rotations by π/2 along the diagonal, and 1 in the
    last entry when d is odd), x* = (2, 0, ..., 0), every other parameter as in the presets.
    """
    if dim in (1, 2):
        return lq_preset(f"lq{dim}d")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    rotation = np.zeros((dim, dim))
    for i in range(0, dim - 1, 2):
        rotation[i:i + 2, i:i + 2] = [[0.0, -1.0], [1.0, 0.0]]
    if dim % 2:
        rotation[-1, -1] = 1.0
    base = lq_preset("lq2d")
    dt, eye = base.dt, np.eye(dim)
    target = np.zeros(dim)
    target[0] = 2.0
    return LQConfig(dim=dim, horizon=base.horizon, dt=dt, A=eye, B=dt * eye, A_bar=0.5 * dt * rotation,
                    sigma=base.sigma, Q_x=dt * eye, R=dt * eye, Q_m=2 * dt * eye, Q_x_terminal=0.1 * eye,
                    Q_m_terminal=0.2 * eye, x_target=target, init_mean=np.zeros(dim), init_cov=eye)


class _AffineActor:
    """The affine policy ``a = K_t x + k_t`` (deterministic) as a :class:`~dedafp.agents.policy.Policy`."""

    def __init__(self, policy: lq.AffinePolicy, action_bound: float, device: torch.device) -> None:
        self.act = lq.affine_policy_fn(policy, device)
        self.action_bound = action_bound

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, _ = self.act(t, x)
        return mean, torch.zeros_like(mean)


def _kl_per_t(exact: GaussianPopulation, model: Any, points: dict[int, Tensor], device: torch.device
              ) -> tuple[dict[int, float], dict[int, float], float]:
    """Monte Carlo KL(exact || model) and its standard error per t, and the seconds the model's queries took."""
    kl, se, query = {}, {}, 0.0
    for t, x in points.items():
        with torch.no_grad():
            seconds, log_q = timed(lambda x=x, t=t: model.log_prob(x, t).double(), device)
        query += seconds
        gap = exact.log_prob(x, t).double() - log_q
        kl[t] = float(gap.mean())
        se[t] = float(gap.std() / np.sqrt(x.shape[0]))
    return kl, se, query


def _gaussian_fit(states: Tensor) -> GaussianPopulation:
    """N(mean, covariance) of the particles at every t (``states`` ``[T+1, N, d]``)."""
    x = states.double()
    centred = x - x.mean(1, keepdim=True)
    covs = centred.transpose(1, 2) @ centred / (x.shape[1] - 1)
    return GaussianPopulation(x.mean(1).cpu(), covs.cpu(), device=states.device)


def _estimate(name: str, states: Tensor, config: DimensionSweepConfig, device: torch.device) -> tuple[Any, float]:
    """Build estimator ``name`` from the particles; returns it and the fit seconds."""
    synchronize(device)
    start = time.perf_counter()
    if name == "kde":
        model = ParticlePopulation(states, "scott", device=device)
    elif name == "gaussian":
        model = _gaussian_fit(states)
    else:
        T1, n, d = states.shape
        flow_config = config.flow
        if name == "flow_long":
            flow_config = dataclasses.replace(flow_config, steps=config.flow_long_steps)
        model = FlowPopulation(flow_config, d, T1 - 1, device, config.seed)
        times = torch.arange(T1, device=device).repeat_interleave(n)
        model.fit(times, states.reshape(-1, d), generator=torch.Generator(device=device).manual_seed(config.seed))
    return model, seconds_since(start, device)


def _sweep_dimension(dim: int, config: DimensionSweepConfig, device: torch.device,
                     print_fn: Callable[[str], None]) -> list[dict[str, Any]]:
    game = LQGame(lq_config(dim), name=f"lq{dim}d")
    eq = lq.equilibrium(game.config)
    exact = GaussianPopulation(eq.mean_flow, eq.cov_flow, device=device)
    policy = _AffineActor(eq.policy, game.action_bound, device)
    field = torch.as_tensor(eq.mean_flow, dtype=torch.float32, device=device)
    generator = torch.Generator(device=device).manual_seed(config.seed + dim)
    points = {t: exact.sample(t, config.eval_points, generator) for t in config.eval_times}
    rows = []
    plan = [(n, ("kde", "flow", "gaussian")) for n in config.budgets]
    if config.flow_long_steps is not None:
        plan.append((max(config.budgets), ("flow_long",)))
    plan += [(n, ("kde",)) for n in config.kde_only_budgets]
    for n, estimators in plan:
        simulate, sim = timed(lambda n=n: rollout(game, policy, n, field, generator=generator, device=device,
                                                  rewards=False), device)
        for name in estimators:
            model, fit = _estimate(name, sim.states, config, device)
            kl, se, query = _kl_per_t(exact, model, points, device)
            row = {"dim": dim, "particles": n, "estimator": name, "simulate_seconds": simulate,
                   "fit_seconds": fit, "query_seconds": query, "wall_clock_seconds": simulate + fit + query,
                   "kl_mean": float(np.mean(list(kl.values()))), "kl_max": float(np.max(list(kl.values()))),
                   "kl_mean_se": float(np.sqrt(np.sum(np.square(list(se.values())))) / len(se)),
                   "kl_per_t": {str(t): v for t, v in kl.items()}}
            rows.append(row)
            print_fn(f"  d={dim:>2} N={n:>7} {name:>8}: KL mean {row['kl_mean']:.2e} ± {row['kl_mean_se']:.1e}, max "
                     f"{row['kl_max']:.2e}, wall {row['wall_clock_seconds']:7.2f} s "
                     f"(fit {fit:.2f}, query {query:.2f})")
    return rows


def _winner(flow: dict[str, Any], kde: dict[str, Any] | None) -> str:
    """``"flow"``, ``"kde"`` or ``"tie"``: the lower mean KL, unless the gap is within 2 standard errors."""
    if kde is None:
        return "flow"
    noise = 2.0 * float(np.hypot(flow.get("kl_mean_se", 0.0), kde.get("kl_mean_se", 0.0)))
    gap = kde["kl_mean"] - flow["kl_mean"]
    return "tie" if abs(gap) <= noise else ("flow" if gap > 0 else "kde")


def equal_time_comparison(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every flow point, the most accurate kernel estimate whose wall-clock is no larger.

    ``winner`` says which has the lower mean KL (``"tie"`` within 2 standard errors); the flow wins
    outright when no kernel estimate ran that fast.
    """
    out = []
    for dim in sorted({r["dim"] for r in rows}):
        kde = [r for r in rows if r["dim"] == dim and r["estimator"] == "kde"]
        for flow in (r for r in rows if r["dim"] == dim and r["estimator"] == "flow"):
            within = [r for r in kde if r["wall_clock_seconds"] <= flow["wall_clock_seconds"]]
            best = min(within, key=lambda r: r["kl_mean"]) if within else None
            out.append({"dim": dim, "flow_particles": flow["particles"], "flow_seconds": flow["wall_clock_seconds"],
                        "flow_kl": flow["kl_mean"], "kde_particles": best["particles"] if best else None,
                        "kde_seconds": best["wall_clock_seconds"] if best else None,
                        "kde_kl": best["kl_mean"] if best else None, "winner": _winner(flow, best)})
    return out


def _verdict(rows: list[dict[str, Any]], equal_time: list[dict[str, Any]]) -> str:
    parts = []
    for dim in sorted({r["dim"] for r in rows}):
        timed = [e for e in equal_time if e["dim"] == dim]
        at_time = ", ".join(f"N={e['flow_particles']}: {e['winner']}" for e in timed)
        kde = {r["particles"]: r for r in rows if r["dim"] == dim and r["estimator"] == "kde"}
        flows = [r for r in rows if r["dim"] == dim and r["estimator"] == "flow"]
        at_budget = ", ".join(f"N={r['particles']}: {_winner(r, kde.get(r['particles']))}" for r in flows)
        parts.append(f"d={dim}: more accurate at equal wall-clock [{at_time}]; at equal particle budget "
                     f"[{at_budget}]")
    return "; ".join(parts) + "."


def bench_dimensions(config: DimensionSweepConfig, out: Path, print_fn: Callable[[str], None] = print) -> dict:
    """Run the sweep; write ``dimension_sweep.json`` and ``dimension_sweep.png`` under ``out``. Returns the JSON."""
    device = torch.device(config.device)
    print_fn(f"LQ dimension sweep on {device}: d = {config.dims}, N = {config.budgets} (+ KDE at "
             f"{config.kde_only_budgets}), flow {config.flow.backend} x{config.flow.transforms} "
             f"(hidden {config.flow.hidden}), {config.flow.steps} Adam steps of {config.flow.batch_size}")
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    rows = [row for dim in config.dims for row in _sweep_dimension(dim, config, device, print_fn)]
    equal_time = equal_time_comparison(rows)
    machine = machine_info(load_at_start)
    result = {"benchmark": "dimension_sweep", "device": str(device), "machine": machine,
              "config": dataclasses.asdict(config), "policy": "exact LQ equilibrium (affine, deterministic)",
              "error": "KL(exact || estimate) by Monte Carlo on eval_points exact samples per evaluated t",
              "wall_clock": "simulation of the N agents + fit + the evaluation queries",
              "caveat": "the exact marginals are Gaussian: the flow's per-time whitening is already the right "
                        "model ('gaussian' row), a favourable case for the flow",
              "rows": rows, "equal_time": equal_time, "verdict": _verdict(rows, equal_time),
              "seconds": time.perf_counter() - started}
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "dimension_sweep.json")
    _plot(result, out / "dimension_sweep.png")
    print_fn(result["verdict"])
    print_fn(f"written {out / 'dimension_sweep.json'} and {out / 'dimension_sweep.png'}")
    return result


def _plot(result: dict, path: Path) -> None:
    """KL against wall-clock (top) and against particle budget (bottom), one column per d."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r["dim"] for r in result["rows"]})
    fig, axes = plt.subplots(2, len(dims), figsize=(3.6 * len(dims), 6.4), squeeze=False)
    style = {"kde": ("tab:orange", "s", "-"), "flow": ("tab:blue", "o", "-"), "gaussian": ("tab:gray", "^", ":"),
             "flow_long": ("tab:blue", "*", "")}
    labels = {"flow_long": f"flow, {result['config']['flow_long_steps']} steps"}
    for j, dim in enumerate(dims):
        for name in ESTIMATORS:
            rows = sorted((r for r in result["rows"] if r["dim"] == dim and r["estimator"] == name),
                          key=lambda r: r["particles"])
            if not rows:
                continue
            colour, marker, line = style[name]
            # A KL within 2 standard errors of 0 is drawn at that noise level, with an open marker.
            noise = [2 * r["kl_mean_se"] for r in rows]
            kl = [max(r["kl_mean"], level) for r, level in zip(rows, noise, strict=True)]
            resolved = [r["kl_mean"] > level for r, level in zip(rows, noise, strict=True)]
            for i, x_key in enumerate(("wall_clock_seconds", "particles")):
                xs = [r[x_key] for r in rows]
                axes[i, j].plot(xs, kl, linestyle=line or "none", marker=marker, color=colour,
                                label=labels.get(name, name) if i == 0 else None)
                unresolved = [(x, v) for x, v, ok in zip(xs, kl, resolved, strict=True) if not ok]
                if unresolved:
                    axes[i, j].scatter(*zip(*unresolved, strict=True), marker=marker, s=30, edgecolors=colour,
                                       facecolors="white", zorder=3)
            if name in ("kde", "flow"):
                for r, value in zip(rows, kl, strict=True):
                    n = r["particles"]
                    axes[0, j].annotate(f"{n // 1000}k" if n >= 1000 else str(n), (r["wall_clock_seconds"], value),
                                        fontsize=6, color=colour)
        for i, xlabel in enumerate(("wall-clock (s): simulate + fit + query", "particles N")):
            axes[i, j].set_xscale("log")
            axes[i, j].set_yscale("log")
            axes[i, j].set_xlabel(xlabel, fontsize=8)
            axes[i, j].grid(alpha=0.3, which="both")
        axes[0, j].set_title(f"LQ, d = {dim}", fontsize=9)
        axes[0, j].set_ylabel("KL(exact || estimate), mean over t", fontsize=8)
        axes[1, j].set_ylabel("KL, mean over t", fontsize=8)
    axes[0, 0].legend(fontsize=7, title="open: KL < 2 s.e.", title_fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
