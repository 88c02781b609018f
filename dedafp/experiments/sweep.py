"""Sweeps: many ordinary training runs over a grid of configurations and seeds, then one summary.

``--set key=v1,v2`` lists are expanded as a cartesian product; every configuration is trained once per
seed by :func:`dedafp.run.train`, each into its ordinary run folder ``OUT/<configuration>/seed<k>/``,
either in this process one after another (``backend="local"``) or as one Ray task per run
(``backend="ray"``). A run whose folder already holds a finished run is skipped and an interrupted one
is resumed from its last checkpoint, so re-running a crashed sweep loses no finished work. Finally
``OUT/summary.csv``, ``OUT/summary.md`` (mean ± sd over seeds of the final exploitability and of the
wall-clock, per configuration), ``OUT/runs.csv`` (one row per run) and ``OUT/curves.png`` are written.

Usage::

    from dedafp.experiments.sweep import plan_sweep, run_sweep, write_summary
    plan = plan_sweep("lq1d", "0..2", ["average_policy.components=1,2"], "runs/sweep")
    outcomes = run_sweep(plan, backend="ray")            # one Ray task per run
    paths = write_summary(plan)                          # summary.csv, summary.md, runs.csv, curves.png
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from dedafp.common.stats import format_mean_sd, mean_sd, mean_sd_curve, write_csv
from dedafp.config import RunConfig, load_config
from dedafp.experiments.distributed import check_address, check_backend, check_workers, ray_session
from dedafp.run import latest_checkpoint, read_metrics, train

_SEED_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")
_SEED_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")
_EXACT_FP = "reference/exact_fp_exploitability"
#: Keys the sweep sets itself: a ``--set`` of them would be silently overwritten.
_RESERVED_KEYS = {"seed": "use --seeds", "env": "give the game as the first argument"}


@dataclass(frozen=True)
class Configuration:
    """One point of the grid.

    Attributes:
        label: the swept assignments, e.g. ``"average_policy.components=2"`` (``"base"`` if nothing varies).
        folder: ``label`` made safe as a folder name.
        overrides: every ``--set`` assignment of this configuration, swept and fixed ones.
    """

    label: str
    folder: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: which configurations and seeds of which game, written under ``out``."""

    env: str
    configurations: tuple[Configuration, ...]
    seeds: tuple[int, ...]
    out: Path
    config_file: str | None = None

    def run_dir(self, configuration: Configuration, seed: int) -> Path:
        """``OUT/<configuration>/seed<k>``: the run folder of one (configuration, seed)."""
        return self.out / configuration.folder / f"seed{seed}"

    def config(self, configuration: Configuration, seed: int) -> RunConfig:
        """The resolved run config of one (configuration, seed) (raises ValueError on a bad one)."""
        return load_config(self.env, self.config_file, list(configuration.overrides), seed=seed)

    def runs(self) -> Iterator[tuple[Configuration, int]]:
        """Every (configuration, seed), configuration-major."""
        return itertools.product(self.configurations, self.seeds)


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run of the sweep.

    Attributes:
        label: its configuration's label.
        seed: its seed.
        run_dir: its run folder.
        status: ``"trained"`` (from scratch), ``"resumed"`` (from a checkpoint), ``"skipped"`` (already
            finished) or ``"failed"``.
        seconds: wall-clock of this attempt, in seconds (process start-up in a Ray worker excluded).
        error: ``"ExceptionType: message"`` when it failed, else None.
    """

    label: str
    seed: int
    run_dir: str
    status: str
    seconds: float
    error: str | None = None


def parse_seeds(text: str) -> tuple[int, ...]:
    """Seeds from ``"A..B"`` (inclusive range), ``"k"`` or ``"k1,k2,..."`` (distinct integers >= 0)."""
    text = str(text)
    matched = _SEED_RANGE.match(text)
    if matched:
        first, last = int(matched.group(1)), int(matched.group(2))
        if first > last:
            raise ValueError(f"seeds range must be A..B with A <= B, got {text!r}")
        return tuple(range(first, last + 1))
    if not _SEED_LIST.match(text):
        raise ValueError(f"seeds must be a range A..B (inclusive) or a comma list of integers >= 0, got {text!r}")
    seeds = tuple(int(part) for part in text.split(","))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {text!r}")
    return seeds


def _split_values(raw: str) -> list[str]:
    """Split at commas outside brackets, so a list value such as ``[1,0]`` stays one value."""
    values, depth, current = [], 0, []
    for char in raw:
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            values.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    values.append("".join(current).strip())
    return values


def parse_grid(assignments: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``["key=v1,v2", ...]`` -> ``[(key, (v1, v2)), ...]``, in the given order (values unparsed YAML)."""
    grid: list[tuple[str, tuple[str, ...]]] = []
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        values = _split_values(raw)
        if not sep or not key or any(not value for value in values):
            raise ValueError(f"--set expects key=v1,v2,... with non-empty values, got {assignment!r}")
        if key in _RESERVED_KEYS:
            raise ValueError(f"--set {key}=... is not allowed in a sweep: {_RESERVED_KEYS[key]}")
        if any(key == seen for seen, _ in grid):
            raise ValueError(f"--set gives {key!r} more than once; list its values in one --set {key}=v1,v2")
        if len(set(values)) != len(values):
            raise ValueError(f"--set {key} lists a value twice, got {assignment!r}")
        grid.append((key, tuple(values)))
    return grid


def _folder_name(assignments: list[str]) -> str:
    """The swept assignments joined by ``+``, anything but ``[A-Za-z0-9._=-]`` replaced by ``_``."""
    return "+".join(re.sub(r"[^A-Za-z0-9._=-]+", "_", a) for a in assignments) or "base"


def expand_grid(grid: list[tuple[str, tuple[str, ...]]]) -> list[Configuration]:
    """The cartesian product of the grid's value lists; labels name only the keys that vary."""
    swept = [key for key, values in grid if len(values) > 1]
    configurations = []
    for combination in itertools.product(*(values for _, values in grid)):
        chosen = dict(zip((key for key, _ in grid), combination, strict=True))
        varying = [f"{key}={chosen[key]}" for key in swept]
        overrides = tuple(f"{key}={value}" for key, value in chosen.items())
        configurations.append(Configuration(", ".join(varying) or "base", _folder_name(varying), overrides))
    folders = [c.folder for c in configurations]
    if len(set(folders)) != len(folders):
        raise ValueError(f"two configurations map to the same folder name: {folders}")
    return configurations


def plan_sweep(env: str, seeds: str | list[int] | tuple[int, ...], assignments: list[str] | None, out: str | Path,
               config_file: str | None = None) -> SweepPlan:
    """Parse and validate a sweep: every configuration is resolved once, so a bad key fails before any run."""
    seed_list = parse_seeds(seeds) if isinstance(seeds, str) else parse_seeds(",".join(map(str, seeds)))
    plan = SweepPlan(env, tuple(expand_grid(parse_grid(list(assignments or [])))), seed_list, Path(out), config_file)
    for configuration in plan.configurations:
        plan.config(configuration, seed_list[0])
    return plan


def exploitability_key(env: str) -> str:
    """The metric that ranks runs: the game's first progress column (its reference's exploitability),
    else the best response's return."""
    from dedafp.envs.registry import game_spec
    columns = game_spec(env).progress_columns
    return columns[0] if columns else "br/return"


def _same_config(run_dir: Path, config: RunConfig) -> bool:
    """Whether the run folder was started with ``config`` (``fp.iterations`` may differ: resuming extends)."""
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    wanted = yaml.safe_load(yaml.safe_dump(config.to_dict()))
    for data in (saved, wanted):
        data["fp"].pop("iterations", None)
    return saved == wanted


def _finished_iterations(run_dir: Path) -> int:
    """Iterations recorded in ``summary.json`` (written after every checkpoint), 0 if none."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text())["iterations"] if path.exists() else 0


def run_one(env: str, config_file: str | None, overrides: tuple[str, ...], seed: int, run_dir: str,
            label: str = "", threads: int = 1) -> RunOutcome:
    """Train one run into ``run_dir``: skip it if finished, resume it if interrupted, else start it.

    Runs in the caller's process or inside a Ray task (hence plain arguments and the thread count).
    """
    torch.set_num_threads(threads)
    started = time.time()
    config = load_config(env, config_file, list(overrides), seed=seed)
    path = Path(run_dir)
    if (path / "config.yaml").exists() and not _same_config(path, config):
        raise ValueError(f"{path} holds a run with a different configuration; choose another --out")
    if _finished_iterations(path) >= config.fp.iterations:
        return RunOutcome(label, seed, run_dir, "skipped", time.time() - started)
    resume = latest_checkpoint(path) is not None
    train(config, path, resume=resume)
    return RunOutcome(label, seed, run_dir, "resumed" if resume else "trained", time.time() - started)


def _failed(label: str, seed: int, run_dir: str, error: BaseException, started: float) -> RunOutcome:
    message = " ".join(str(error).split()) or "no message"
    return RunOutcome(label, seed, run_dir, "failed", time.time() - started, f"{type(error).__name__}: {message}")


def _jobs(plan: SweepPlan) -> list[tuple[str, int, str, tuple[str, ...]]]:
    # Absolute paths: Ray workers do not share the driver's working directory.
    return [(c.label, seed, str(plan.run_dir(c, seed).resolve()), c.overrides) for c, seed in plan.runs()]


def _run_local(plan: SweepPlan, threads: int, callback: Callable[[RunOutcome], None]) -> list[RunOutcome]:
    outcomes = []
    for label, seed, run_dir, overrides in _jobs(plan):
        started = time.time()
        try:
            outcome = run_one(plan.env, plan.config_file, overrides, seed, run_dir, label, threads)
        except Exception as error:   # recorded and reported; the other runs go on
            outcome = _failed(label, seed, run_dir, error, started)
        callback(outcome)
        outcomes.append(outcome)
    return outcomes


def _run_ray(plan: SweepPlan, address: str | None, workers: int | None, threads: int,
             callback: Callable[[RunOutcome], None]) -> list[RunOutcome]:
    outcomes = []
    with ray_session(address, num_cpus=workers) as ray:
        task = ray.remote(num_cpus=1)(run_one)
        pending = list(reversed(_jobs(plan)))
        in_flight: dict = {}
        while pending or in_flight:
            # A local instance is capped by its CPUs; on a cluster, --workers caps the tasks in flight.
            while pending and (workers is None or len(in_flight) < workers):
                label, seed, run_dir, overrides = pending.pop()
                ref = task.remote(plan.env, plan.config_file, overrides, seed, run_dir, label, threads)
                in_flight[ref] = (label, seed, run_dir, time.time())
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            label, seed, run_dir, started = in_flight.pop(done)
            try:
                outcome = ray.get(done)
            except Exception as error:   # a RayTaskError wraps the run's own exception as .cause
                outcome = _failed(label, seed, run_dir, getattr(error, "cause", None) or error, started)
            callback(outcome)
            outcomes.append(outcome)
    return outcomes


def run_sweep(plan: SweepPlan, backend: str = "local", address: str | None = None, workers: int | None = None,
              threads: int = 1, callback: Callable[[RunOutcome], None] | None = None) -> list[RunOutcome]:
    """Train every run of ``plan`` (skipping finished ones); one outcome per run, failures included.

    ``backend="local"`` trains in this process, one run after another. ``backend="ray"`` submits one
    task per run (1 CPU each) to a local Ray instance of ``workers`` CPUs (default: all), or, with
    ``address``, to that cluster with at most ``workers`` runs in flight; there ``OUT`` must be on a
    file system every node writes to. ``callback`` receives each outcome as it arrives.
    """
    check_backend(backend)
    check_address(address)
    if workers is not None:
        check_workers(workers)
    if backend == "local" and (address is not None or workers is not None):
        raise ValueError("address and workers are only used with --backend ray")
    report = callback or (lambda outcome: None)
    plan.out.mkdir(parents=True, exist_ok=True)
    if backend == "local":
        return _run_local(plan, threads, report)
    return _run_ray(plan, address, workers, threads, report)


@dataclass(frozen=True)
class RunResult:
    """One finished run's exploitability per iteration (NaN where not measured), training wall-clock (s)
    and exact fictitious play's exploitability per iteration (LQ games; NaN elsewhere)."""

    label: str
    seed: int
    iterations: list[int]
    exploitability: list[float]
    wall_clock: float
    exact_fp: list[float]

    @property
    def final(self) -> float:
        finite = [value for value in self.exploitability if math.isfinite(value)]
        return finite[-1] if finite else math.nan


def collect(plan: SweepPlan) -> list[RunResult]:
    """Read every finished run of ``plan`` back from its folder (runs without results are left out)."""
    key = exploitability_key(plan.env)
    results = []
    for configuration, seed in plan.runs():
        run_dir = plan.run_dir(configuration, seed)
        if not (run_dir / "summary.json").exists():
            continue
        iterations = plan.config(configuration, seed).fp.iterations
        rows = [row for row in read_metrics(run_dir) if row["iteration"] <= iterations]
        wall_clock = json.loads((run_dir / "summary.json").read_text())["wall_clock_seconds"]
        results.append(RunResult(configuration.label, seed, [int(row["iteration"]) for row in rows],
                                 [row.get(key, math.nan) for row in rows], wall_clock,
                                 [row.get(_EXACT_FP, math.nan) for row in rows]))
    return results


def summarise(plan: SweepPlan, results: list[RunResult]) -> list[dict[str, object]]:
    """One row per configuration: seeds finished, mean ± sd of final exploitability and wall-clock."""
    rows = []
    for configuration in plan.configurations:
        mine = [r for r in results if r.label == configuration.label]
        exploitability, exploitability_sd = mean_sd([r.final for r in mine])
        seconds, seconds_sd = mean_sd([r.wall_clock for r in mine])
        rows.append({"configuration": configuration.label, "seeds": len(mine),
                     "exploitability_mean": exploitability, "exploitability_sd": exploitability_sd,
                     "wall_clock_mean_s": seconds, "wall_clock_sd_s": seconds_sd})
    return rows


def _markdown(plan: SweepPlan, rows: list[dict[str, object]]) -> str:
    fixed = [o for c in plan.configurations[:1] for o in c.overrides
             if all(o in other.overrides for other in plan.configurations)]
    lines = [f"# Sweep of `{plan.env}` over seeds {', '.join(map(str, plan.seeds))}", "",
             f"Final `{exploitability_key(plan.env)}` and training wall-clock per run: mean ± sd over seeds.",
             f"Common settings: {', '.join(f'`{o}`' for o in fixed) or 'the defaults'}"
             + (f" (config file `{plan.config_file}`)" if plan.config_file else "") + ".", "",
             "| configuration | seeds | final exploitability | wall-clock (s) |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['configuration']} | {row['seeds']} "
                     f"| {format_mean_sd(row['exploitability_mean'], row['exploitability_sd'])} "
                     f"| {format_mean_sd(row['wall_clock_mean_s'], row['wall_clock_sd_s'])} |")
    return "\n".join(lines) + "\n"


def plot_curves(plan: SweepPlan, results: list[RunResult], path: Path) -> None:
    """Exploitability per iteration (log scale): per configuration the mean over seeds, ±sd shaded."""
    # A bare Figure, not pyplot: no global state and no GUI backend to select.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6, 4))
    ax = figure.add_subplot()
    lowest = math.inf
    for configuration in plan.configurations:
        mine = [r for r in results if r.label == configuration.label]
        if not mine:
            continue
        k, mean, sd = mean_sd_curve([r.iterations for r in mine], [r.exploitability for r in mine])
        line, = ax.plot(k, mean, marker="o", ms=3, label=f"{configuration.label} ({len(mine)} seeds)")
        lowest = min(lowest, np.nanmin(np.where(mean > 0, mean, np.nan), initial=math.inf))
        # On a log axis a band reaching 0 or below is drawn down to the bottom of the plot.
        ax.fill_between(k, np.maximum(mean - sd, lowest / 2), mean + sd, color=line.get_color(), alpha=0.2)
    longest = max(results, key=lambda r: len(r.iterations), default=None)
    if longest is not None and any(math.isfinite(v) for v in longest.exact_fp):
        ax.plot(longest.iterations, longest.exact_fp, "k--", lw=1, label="exact fictitious play")
    ax.set_yscale("log")
    if math.isfinite(lowest):
        ax.set_ylim(bottom=lowest / 2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration k")
    ax.set_ylabel(f"exploitability ({exploitability_key(plan.env)})")
    ax.set_title(f"{plan.env}: mean ± sd over seeds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_summary(plan: SweepPlan) -> list[Path]:
    """Write ``summary.csv``, ``summary.md``, ``runs.csv`` and ``curves.png`` under ``plan.out``."""
    results = collect(plan)
    rows = summarise(plan, results)
    plan.out.mkdir(parents=True, exist_ok=True)
    paths = [plan.out / name for name in ("summary.csv", "summary.md", "runs.csv", "curves.png")]
    write_csv(paths[0], rows)
    paths[1].write_text(_markdown(plan, rows))
    write_csv(paths[2], [{"configuration": r.label, "seed": r.seed, "final_exploitability": r.final,
                           "wall_clock_s": r.wall_clock, "iterations": r.iterations[-1] if r.iterations else 0}
                          for r in results])
    plot_curves(plan, results, paths[3])
    return paths
