"""``dedafp bench scaling``: seconds per phase of a DEDA-FP iteration, and how they grow.

Every iteration of :class:`~dedafp.algorithms.fictitious_play.FictitiousPlay` records the seconds of
its phases in its metrics (``time/best_response``, ``time/bc`` (the best response's played rollout and
the behavioural cloning), ``time/br_quality``, ``time/rollout`` (the average policy's population),
``time/flow``, ``time/evaluation``; ``time/iteration`` is their sum). This benchmark reads them, through
the public API (``load_config``, ``make_algorithm``, ``iteration()``), along three axes:

* ``k``: one run of K iterations on ``lq1d`` (the buffer grows by ``br_agents`` agents' samples per k);
* ``agents``: ``fp.population_agents`` and ``fp.br_agents`` scaled together, a short run per count,
  phases of its last iteration;
* ``dims``: the d-dimensional LQ game of :func:`dedafp.benchmarks.dimensions.lq_config` (``lq1d`` and
  ``lq2d`` for d = 1, 2; for d > 2 a game ``lq{d}d`` is registered in this process, with the presets'
  exact Riccati responder and evaluator), a short run per d.

Budgets are fixed and small (stated in the output): exact Riccati best responses by default, so that
the population-model and cloning costs are not hidden behind deep RL (``best_response="default"``
uses the game's own responder, pathwise on LQ); cloning and flow steps a third of the project's
defaults. The flow's fixed-size queries do not shrink with those budgets: every best response starts
with the game's bind of the flow (its mean at every t, ``flow.mean_samples`` samples per t), and the
LQ evaluation draws 20,000 flow samples per t for its W2 terms. Each phase's growth is fitted by least squares on
log-log, seconds ≈ c · x^p, and the verdict names the dominant phase at k = 1, 10, 50 (extrapolated
with the fitted exponents beyond the measured K, and said so) and at each agent count and d.

Usage::

    result = bench_scaling(ScalingBenchConfig(), Path("results/bench"))
    result["verdict"]
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dedafp.common.files import write_json
from dedafp.common.threads import configure_threads
from dedafp.common.timing import machine_info, timed
from dedafp.common.validation import Rule, validated

__all__ = ["PHASES", "ScalingBenchConfig", "bench_scaling", "fit_power_law", "lq_env"]

#: The phases of one iteration, as ``time/<phase>`` in its metrics.
PHASES = ("best_response", "bc", "br_quality", "rollout", "flow", "evaluation")

#: Iterations at which the verdict names the dominant phase (extrapolated beyond the measured K).
VERDICT_ITERATIONS = (1, 10, 50)

#: A k-exponent above this is reported as growth with k (every step budget is fixed).
GROWTH = 0.2

_AXES = {"k": "iteration k", "agents": "agents simulated (population = best response)", "dims": "state dimension d"}


@dataclass(frozen=True)
@validated("scaling")
class ScalingBenchConfig:
    """Sizes and budgets of the scaling benchmark.

    Attributes:
        game: the 1-D game of the k and agents sweeps (``lq1d`` or ``lq2d``).
        iterations: K, iterations of the k sweep (>= 2).
        agents: agent counts of the agents sweep (each >= 16, at least two, increasing).
        dims: state dimensions of the d sweep (each >= 1, at least two, increasing).
        point_iterations: iterations of each agents and d run (>= 1); the last one's phases are reported.
        base_agents: ``fp.br_agents`` = ``fp.population_agents`` of the k and d sweeps (>= 16).
        eval_agents: ``fp.eval_agents`` of every run (>= 2: the Monte Carlo exploitability evaluation, whose
            flow moments take 20,000 flow samples per t whatever this count; 0: the reference metrics only).
        bc_steps: ``average_policy.steps``, Adam steps of each behavioural cloning (>= 1).
        flow_steps: ``flow.steps``, Adam steps of each flow refit (>= 1).
        initial_flow_steps: ``fp.initial_flow_steps``, the flow's first fit (iteration 0, >= 0).
        best_response: ``"exact"`` (the game's exact responder: Riccati) or ``"default"`` (the game's
            default responder: pathwise on LQ, at its default budget).
        threads: torch CPU threads (>= 1).
        device: ``"cpu"`` or ``"cuda"``.
        seed: the runs' seed (>= 0).
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "game": ("lq1d", "lq2d"), "iterations": ">= 2", "point_iterations": ">= 1", "base_agents": ">= 16",
        "eval_agents": ">= 0", "bc_steps": ">= 1", "flow_steps": ">= 1", "initial_flow_steps": ">= 0",
        "best_response": ("exact", "default"), "threads": ">= 1", "device": ("cpu", "cuda"), "seed": ">= 0"}

    game: str = "lq1d"
    iterations: int = 12
    agents: tuple[int, ...] = (2_000, 8_000, 32_000)
    dims: tuple[int, ...] = (1, 2, 5, 10)
    point_iterations: int = 1
    base_agents: int = 2_000
    eval_agents: int = 10_000
    bc_steps: int = 500
    flow_steps: int = 200
    initial_flow_steps: int = 400
    best_response: str = "exact"
    threads: int = 1
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        """agents and dims: at least two increasing integers (agents >= 16, dims >= 1); stored as tuples;
        eval_agents 0 or >= 2."""
        if self.eval_agents == 1:
            raise ValueError("scaling.eval_agents must be 0 (no Monte Carlo evaluation) or >= 2, got 1")
        for name, values, minimum in (("agents", self.agents, 16), ("dims", self.dims, 1)):
            values = tuple(values)
            if (len(values) < 2 or any(v < minimum for v in values)
                    or any(b <= a for a, b in zip(values, values[1:], strict=False))):
                raise ValueError(f"scaling.{name} must be at least two increasing integers >= {minimum} "
                                 f"(a growth exponent needs two points), got {list(values)!r}")
            object.__setattr__(self, name, values)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("scaling.device is 'cuda' but torch.cuda.is_available() is False; use --device cpu")

    def budgets(self) -> str:
        """The fixed budgets, in one line (printed and written with the results)."""
        responder = "exact Riccati" if self.best_response == "exact" else "the game's default responder"
        from dedafp.agents.average_policy import AveragePolicyConfig
        from dedafp.config import FictitiousPlayConfig
        from dedafp.population.flow import FlowConfig
        return (f"best responses: {responder}; behavioural cloning {self.bc_steps} Adam steps per iteration "
                f"(project default {AveragePolicyConfig().steps}), flow {self.flow_steps} steps per refit "
                f"({FlowConfig().steps}), {self.initial_flow_steps} at iteration 0 "
                f"({FictitiousPlayConfig().initial_flow_steps}); "
                f"{self.base_agents} agents (best response and population) unless swept; "
                f"{self.eval_agents} evaluation agents; {self.threads} torch thread(s) on {self.device}")


# ---- the fit ---------------------------------------------------------------------------------------


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> dict[str, float | None]:
    """Least squares of ``log y = log c + p log x``: ``{"p", "c", "r2", "points"}``.

    Points with ``y <= 0`` (a phase that did not run) are left out; fewer than two points, or a
    single x, give ``p = c = r2 = None``.
    """
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True) if b > 0 and a > 0]
    if len(pairs) < 2 or len({a for a, _ in pairs}) < 2:
        return {"p": None, "c": None, "r2": None, "points": len(pairs)}
    lx, ly = np.log([a for a, _ in pairs]), np.log([b for _, b in pairs])
    p, log_c = np.polyfit(lx, ly, 1)
    residual = ly - (log_c + p * lx)
    spread = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / spread if spread > 0 else 1.0
    return {"p": float(p), "c": float(np.exp(log_c)), "r2": r2, "points": len(pairs)}


# ---- the games -------------------------------------------------------------------------------------


@functools.cache
def _lq_spec(dim: int) -> Any:
    """The spec of the d-dimensional LQ game (d > 2): the lq2d spec's responder and evaluator, renamed."""
    from dedafp.benchmarks.dimensions import lq_config
    from dedafp.envs.base import check_overrides
    from dedafp.envs.lq import LQConfig, LQGame
    from dedafp.envs.registry import game_spec

    name = f"lq{dim}d"

    def make(**overrides: Any) -> LQGame:
        check_overrides(LQConfig, "LQ", overrides)
        return LQGame(lq_config(dim).replace(**overrides), name=name)

    return dataclasses.replace(game_spec("lq2d"), name=name, factory=make, gym_id=None,
                               description=f"linear-quadratic game, {dim}-D state (dedafp bench scaling)")


def lq_env(dim: int) -> str:
    """The registered name of the d-dimensional LQ game: ``lq1d``, ``lq2d``, or ``lq{d}d`` registered now."""
    if dim in (1, 2):
        return f"lq{dim}d"
    from dedafp.envs.registry import register_game
    return register_game(_lq_spec(dim)).name


# ---- the runs --------------------------------------------------------------------------------------


def _algorithm(config: ScalingBenchConfig, env: str, agents: int, iterations: int) -> Any:
    from dedafp import load_config, make_algorithm

    overrides = [f"fp.iterations={iterations}", f"fp.br_agents={agents}", f"fp.population_agents={agents}",
                 f"fp.eval_agents={config.eval_agents}", "fp.evaluate_every=1",
                 f"fp.initial_flow_steps={config.initial_flow_steps}", f"average_policy.steps={config.bc_steps}",
                 # flow.patience=0: the LQ games stop refits early by default; here every budget stays fixed.
                 f"flow.steps={config.flow_steps}", "flow.patience=0", f"device={config.device}", f"seed={config.seed}"]
    if config.best_response == "exact":
        from dedafp.envs.registry import game_spec
        overrides.append(f"best_response.algorithm={game_spec(env).exact_responder}")
    return make_algorithm(load_config(env, overrides=overrides))


def _row(algorithm: Any, record: Any) -> dict[str, Any]:
    metrics = record.metrics
    row = {"k": record.iteration, "seconds": {p: float(metrics.get(f"time/{p}", 0.0)) for p in PHASES},
           "total": float(metrics["time/iteration"]),
           "buffer_samples": int(sum(int(t.numel()) for t in algorithm.buffer.times))}
    if "fp/exploitability" in metrics:
        row["exploitability"] = float(metrics["fp/exploitability"])
    return row


def _bind_seconds(algorithm: Any) -> float:
    """Seconds of the game's bind of the current population model (the flow's mean at every t), the first
    call of every best response; with Riccati responses nearly all of time/best_response. Measured only
    after a run's last iteration: the flow caches its mean until its next fit, so measuring it earlier
    would hand the next best response its query for free."""
    return timed(lambda: algorithm.game.bind(algorithm.population), algorithm.device)[0]


def _short(row: dict[str, Any]) -> str:
    return " ".join(f"{p} {row['seconds'][p]:.2f}" for p in PHASES) + f" | total {row['total']:.2f} s"


def _sweep_k(config: ScalingBenchConfig, print_fn: Callable[[str], None]) -> tuple[list[dict], dict]:
    algorithm = _algorithm(config, config.game, config.base_agents, config.iterations)
    initial = algorithm.initialise()
    start = {p: float(initial.metrics.get(f"time/{p}", 0.0)) for p in PHASES}
    print_fn(f"  k sweep, {config.game}: iteration 0 (initial flow fit) {initial.metrics['time/iteration']:.2f} s")
    rows = []
    for _ in range(config.iterations):
        record = algorithm.iteration()
        row = {"x": record.iteration, **_row(algorithm, record)}
        rows.append(row)
        print_fn(f"  k={row['x']:>3}: {_short(row)}")
    rows[-1]["bind_seconds"] = _bind_seconds(algorithm)
    return rows, {"seconds": start, "total": float(initial.metrics["time/iteration"])}


def _point(config: ScalingBenchConfig, env: str, agents: int, probe: bool) -> dict[str, Any]:
    algorithm = _algorithm(config, env, agents, config.point_iterations)
    for _ in range(config.point_iterations):
        record = algorithm.iteration()
    row = _row(algorithm, record)
    if probe:
        row["bind_seconds"] = _bind_seconds(algorithm)
    return row


def _sweep_agents(config: ScalingBenchConfig, print_fn: Callable[[str], None]) -> list[dict]:
    rows = []
    for n in config.agents:
        row = {"x": n, **_point(config, config.game, n, probe=True)}
        rows.append(row)
        print_fn(f"  agents={n:>7}: {_short(row)}")
    return rows


def _sweep_dims(config: ScalingBenchConfig, print_fn: Callable[[str], None]) -> list[dict]:
    rows = []
    for d in config.dims:
        # No bind probe here: in d = 10 it is half a minute, and time/best_response is that query already.
        row = {"x": d, "env": lq_env(d), **_point(config, lq_env(d), config.base_agents, probe=False)}
        rows.append(row)
        print_fn(f"  d={d:>3}: {_short(row)}")
    return rows


# ---- the verdict -----------------------------------------------------------------------------------


def _exponents(rows: list[dict]) -> dict[str, dict]:
    xs = [r["x"] for r in rows]
    fits = {p: fit_power_law(xs, [r["seconds"][p] for r in rows]) for p in PHASES}
    fits["iteration"] = fit_power_law(xs, [r["total"] for r in rows])
    return fits


#: The phases of training proper (the evaluation is a measurement, optional with fp.evaluate_every).
TRAINING = tuple(p for p in PHASES if p != "evaluation")


def _dominant(seconds: dict[str, float]) -> dict[str, Any]:
    """The largest phase, its seconds and share of the iteration; and the largest of the training phases."""
    phase = max(PHASES, key=lambda p: seconds[p])
    training = max(TRAINING, key=lambda p: seconds[p])
    total = sum(seconds[p] for p in PHASES)
    return {"phase": phase, "seconds": seconds[phase], "share": seconds[phase] / total if total > 0 else 0.0,
            "total": total, "training_phase": training,
            "training_share": seconds[training] / total if total > 0 else 0.0}


def _at_k(rows: list[dict], fits: dict[str, dict], k: int) -> dict[str, Any]:
    """The dominant phase at iteration k: measured if k was run, else extrapolated with the fits."""
    measured = next((r for r in rows if r["x"] == k), None)
    if measured is not None:
        return {"k": k, "extrapolated": False, **_dominant(measured["seconds"])}
    seconds = {p: (fits[p]["c"] * k ** fits[p]["p"] if fits[p]["p"] is not None else 0.0) for p in PHASES}
    return {"k": k, "extrapolated": True, "predicted_seconds": seconds, **_dominant(seconds)}


def _phrase(d: dict[str, Any]) -> str:
    text = f"{d['phase']} ({d['seconds']:.2f} s, {100 * d['share']:.0f}% of {d['total']:.2f} s)"
    if d["training_phase"] != d["phase"]:
        text += f", of training {d['training_phase']} ({100 * d['training_share']:.0f}%)"
    return text


def _exponent_text(fits: dict[str, dict]) -> str:
    return ", ".join(f"{p} {fits[p]['p']:+.2f}" if fits[p]["p"] is not None else f"{p} n/a"
                     for p in (*PHASES, "iteration"))


def _verdict(config: ScalingBenchConfig, sweeps: dict[str, list[dict]], fits: dict[str, dict]
             ) -> tuple[list[str], dict[str, list]]:
    k_points = [_at_k(sweeps["k"], fits["k"], k) for k in VERDICT_ITERATIONS]
    dominant = {"k": k_points,
                "agents": [{"agents": r["x"], **_dominant(r["seconds"])} for r in sweeps["agents"]],
                "dims": [{"dim": r["x"], **_dominant(r["seconds"])} for r in sweeps["dims"]]}
    at_k = "; ".join(f"k={d['k']}{' (extrapolated with the fitted exponents)' if d['extrapolated'] else ''}: "
                     f"{_phrase(d)}" for d in k_points)
    growing = [f"{p} (p {fits['k'][p]['p']:+.2f})" for p in PHASES
               if fits["k"][p]["p"] is not None and fits["k"][p]["p"] > GROWTH]
    lines = [
        f"against k (1..{config.iterations}, {config.game}, buffer +{config.base_agents} agents' samples per k), "
        f"exponents p of seconds ~ c k^p: {_exponent_text(fits['k'])}",
        f"dominant phase against k: {at_k}",
        (f"growing with k (p > {GROWTH}) at fixed step budgets: {', '.join(growing)}" if growing else
         f"no phase grows with k (every p <= {GROWTH}) at fixed step budgets"),
        f"against agents ({', '.join(map(str, config.agents))}), exponents: {_exponent_text(fits['agents'])}; "
        "dominant: " + "; ".join(f"N={d['agents']}: {_phrase(d)}" for d in dominant["agents"]),
        f"against d ({', '.join(map(str, config.dims))}), exponents: {_exponent_text(fits['dims'])}; "
        "dominant: " + "; ".join(f"d={d['dim']}: {_phrase(d)}" for d in dominant["dims"]),
    ]
    return lines, dominant


# ---- the benchmark ---------------------------------------------------------------------------------


def bench_scaling(config: ScalingBenchConfig, out: Path, print_fn: Callable[[str], None] = print) -> dict:
    """Run the three sweeps; write ``scaling.json``, ``scaling.csv`` and ``scaling.png`` under ``out``."""
    configure_threads(config.threads)
    print_fn(f"DEDA-FP phase scaling: K = {config.iterations} on {config.game}, agents = {config.agents}, "
             f"d = {config.dims} ({config.point_iterations} iteration(s) each, phases of the last)")
    print_fn(f"  budgets: {config.budgets()}")
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    k_rows, initial = _sweep_k(config, print_fn)
    sweeps = {"k": k_rows, "agents": _sweep_agents(config, print_fn), "dims": _sweep_dims(config, print_fn)}
    fits = {axis: _exponents(rows) for axis, rows in sweeps.items()}
    verdict, dominant = _verdict(config, sweeps, fits)
    result = {"benchmark": "scaling", "device": config.device, "machine": machine_info(load_at_start),
              "config": dataclasses.asdict(config), "budgets": config.budgets(),
              "phases": {p: f"time/{p}" for p in PHASES},
              "notes": ["time/bc includes the best response's played rollout (br_agents agents) before the "
                        "cloning; time/iteration is the sum of the phases",
                        "agents and d points: the last of point_iterations iterations of a fresh run",
                        "bind_seconds (k and agents sweeps, after each run's last iteration): the game's bind of "
                        "the final population model (the flow's mean at every t), the mean-field query each best "
                        "response starts with; "
                        "measured after the run's last iteration, since the flow caches it until its next fit",
                        "exponents: least squares on log-log, seconds ~ c x^p, over every measured point"],
              "iteration_0": initial, "sweeps": sweeps, "exponents": fits, "dominant": dominant,
              "verdict": verdict, "seconds": time.perf_counter() - started}
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "scaling.json")
    _write_csv(sweeps, out / "scaling.csv")
    _plot(result, out / "scaling.png")
    print_fn(table(result))
    for line in verdict:
        print_fn(line)
    print_fn(f"written {out / 'scaling.json'}, {out / 'scaling.csv'} and {out / 'scaling.png'} "
             f"({result['seconds']:.0f} s)")
    return result


def table(result: dict) -> str:
    """A short text table: seconds per phase at every point, then each axis's exponents."""
    header = f"{'axis':>6} {'x':>6} " + " ".join(f"{p:>13}" for p in (*PHASES, "iteration"))
    lines = [header]
    for axis, rows in result["sweeps"].items():
        for r in rows:
            lines.append(f"{axis:>6} {r['x']:>6} " + " ".join(f"{r['seconds'][p]:>13.3f}" for p in PHASES)
                         + f" {r['total']:>13.3f}")
        fits = result["exponents"][axis]
        lines.append(f"{axis:>6} {'p':>6} " + " ".join(
            f"{fits[p]['p']:>+13.2f}" if fits[p]["p"] is not None else f"{'n/a':>13}" for p in (*PHASES, "iteration")))
    return "\n".join(lines)


def _write_csv(sweeps: dict[str, list[dict]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["axis", "x", *(f"{p}_s" for p in PHASES), "iteration_s", "buffer_samples"])
        for axis, rows in sweeps.items():
            for r in rows:
                writer.writerow([axis, r["x"], *(f"{r['seconds'][p]:.6g}" for p in PHASES), f"{r['total']:.6g}",
                                 r["buffer_samples"]])


def _plot(result: dict, path: Path) -> None:
    """Seconds per phase against k, agents and d (log-log), each with its fitted exponent."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2))
    colours = dict(zip((*PHASES, "iteration"), plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax, (axis, rows) in zip(axes, result["sweeps"].items(), strict=True):
        xs = [r["x"] for r in rows]
        fits = result["exponents"][axis]
        for phase in (*PHASES, "iteration"):
            ys = [r["total"] if phase == "iteration" else r["seconds"][phase] for r in rows]
            if not any(y > 0 for y in ys):
                continue
            p = fits[phase]["p"]
            label = f"{phase} (p {p:+.2f})" if p is not None else phase
            ax.plot(xs, [y if y > 0 else np.nan for y in ys], marker="o", markersize=3, color=colours[phase],
                    linestyle="--" if phase == "iteration" else "-", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = xs if len(xs) <= 6 else sorted({x for x in xs if str(x)[0] in "125" and set(str(x)[1:]) <= {"0"}}
                                               | {xs[-1]})
        ax.set_xticks(ticks, [f"{x:,}" for x in ticks], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel(_AXES[axis], fontsize=8)
        ax.set_ylabel("seconds per iteration", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    axes[0].set_title(f"against k ({result['config']['game']})", fontsize=9)
    axes[1].set_title(f"against agents (last of {result['config']['point_iterations']} iterations)", fontsize=9)
    axes[2].set_title("against d (LQ game)", fontsize=9)
    fig.suptitle(result["budgets"], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
