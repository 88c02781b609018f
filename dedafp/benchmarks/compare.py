"""``dedafp bench compare``: DEDA-FP against the paper's two baselines, side by side (the ablation table).

For every game, the three algorithms (``dedafp``, ``algo1``, ``algo2``) are trained with the same seeds,
iterations and settings as one sweep (:mod:`dedafp.experiments.sweep`, grid ``algorithm=dedafp,algo1,algo2``; run
folders ``RUNS/<env>/algorithm=<a>/seed<k>/``; finished runs are skipped, interrupted ones resumed).
With ``best_response="exact"`` every algorithm gets the same exact best response (Riccati on the LQ
games, backward induction on the reference grid for the density games), which isolates what the
algorithms differ in: the average policy (behaviour-cloned, or the episode mixture of all best
responses) and the density model (flow, or kernel estimate). ``"ppo"`` is the paper's setup (slow).

Read back from the run folders, per game and algorithm (mean ± sd over seeds):

* exploitability at every evaluated iteration (exact on LQ, on the reference grid for the density
  games), and that of the exact episode mixture of the run's own best responses;
* the density model's error to the reference at the last evaluated iteration;
* wall-clock per phase (``time/<phase>`` summed over iterations 0..K).

Everything the table needs is stored in ``OUT/<env>.json`` (the run folders are not committed), and
``OUT/table.md``, ``OUT/table.csv`` and ``OUT/compare.png`` are rebuilt from every ``OUT/<env>.json``
present (:mod:`dedafp.benchmarks.compare_report`), so games run by separate commands with their own seeds
and iterations share one table.

Usage::

    from dedafp.benchmarks.compare import CompareConfig, bench_compare
    result = bench_compare(CompareConfig(envs=("lq2d",), seeds="0..2", iterations=10))
    result.paths, result.outcomes             # table.md, table.csv, compare.png; one outcome per run
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dedafp.benchmarks.compare_grid import episode_mixture_exploitability, grid_fictitious_play
from dedafp.common.files import atomic_write
from dedafp.envs.registry import game_spec, registered_games
from dedafp.experiments.sweep import RunOutcome, SweepPlan, exploitability_key, parse_grid, plan_sweep, run_sweep
from dedafp.run import latest_checkpoint, read_metrics

if TYPE_CHECKING:
    from dedafp.reference.grid import GridMFG

__all__ = ["BEST_RESPONSES", "ALGORITHMS", "PHASES", "CompareConfig", "RunRecord", "EnvResult", "CompareResult",
           "comparable_games", "is_lq", "density_metrics", "last_finite", "collect_env", "save_env_result",
           "load_env_results", "bench_compare", "episode_mixture_exploitability", "grid_fictitious_play"]

BEST_RESPONSES = ("exact", "ppo")
#: The paper's three algorithms, compared side by side.
ALGORITHMS = ("dedafp", "algo1", "algo2")
#: ``time/<phase>`` columns of metrics.csv; "bc" includes the best response's buffer rollout.
PHASES = ("best_response", "bc", "rollout", "flow", "evaluation")
PHASE_LABELS = {"best_response": "best response", "bc": "buffer + BC", "rollout": "rollout",
                "flow": "density fit", "evaluation": "evaluation"}
#: Density error to the reference, per kind of game: (metrics.csv column, table label).
LQ_DENSITY = (("flow/w2_to_equilibrium", "W2 to the equilibrium, max over t"),
              ("theory/flow_w2", "W2 to its own policy's population, max over t"),
              ("flow/w2_mean", "W2 to its own policy's population, mean over t"))
GRID_DENSITY = (("ref/tv_max", "total variation to the reference, max over t"),
                ("ref/tv_mean", "total variation to the reference, mean over t"),
                ("ref/region_error_max", "mass-per-room error, max over t"))
#: Keys bench compare sets itself: a --set of them would contradict it.
_OWN_KEYS = {"algorithm": "bench compare runs all three", "best_response.algorithm": "use --best-response",
             "fp.iterations": "use --iterations"}
#: The table's names, in :mod:`dedafp.benchmarks.compare_report`, importable from here as before the split.
_REPORT = ("table_rows", "verdict", "markdown", "plot_compare", "write_table")


def __getattr__(name: str) -> Any:
    # Resolved on first use: the report module imports this one.
    if name in _REPORT:
        return getattr(importlib.import_module("dedafp.benchmarks.compare_report"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def comparable_games() -> tuple[str, ...]:
    """The registered games with an exact best responder (and so an exact or grid reference to compare on)."""
    return tuple(name for name in registered_games() if game_spec(name).exact_responder is not None)


def is_lq(env: str) -> bool:
    """Whether ``env`` has the exact LQ reference (Riccati) rather than a grid reference."""
    return game_spec(env).exact_responder == "riccati"


def density_metrics(env: str) -> tuple[tuple[str, str], ...]:
    """The density-error columns of ``env``'s metrics.csv, with their table labels."""
    return LQ_DENSITY if is_lq(env) else GRID_DENSITY


@dataclass(frozen=True)
class CompareConfig:
    """What to compare.

    Attributes:
        envs: games, each one of :func:`comparable_games` (at least one, no repeats).
        seeds: ``"A..B"`` (inclusive) or ``"k1,k2,..."``, the same for every algorithm.
        iterations: fictitious-play iterations K of every run (>= 1), or None for each game's default.
        best_response: ``"exact"`` (Riccati on LQ, grid backward induction on the density games) or
            ``"ppo"`` (deep RL, the paper's setup).
        overrides: ``key=value`` settings applied to every run (one value each; no algorithm,
            best_response.algorithm or fp.iterations: this command sets those).
        device: ``"cpu"`` or ``"cuda"``.
        runs: folder of the run folders (``RUNS/<env>/...``; git-ignored under ``runs/``).
        out: folder of the table, the figure and the per-game records.
    """

    envs: tuple[str, ...] = ("lq2d", "four_rooms")
    seeds: str = "0..2"
    iterations: int | None = None
    best_response: str = "exact"
    overrides: tuple[str, ...] = ()
    device: str = "cpu"
    runs: Path = Path("runs/compare")
    out: Path = Path("results/compare")

    def __post_init__(self) -> None:
        games = comparable_games()
        if not self.envs:
            raise ValueError(f"envs must name at least one game of {games}")
        unknown = [env for env in self.envs if env not in games]
        if unknown:
            raise ValueError(f"envs must be games with an exact reference, {games}; got {unknown}")
        if len(set(self.envs)) != len(self.envs):
            raise ValueError(f"envs must be distinct, got {list(self.envs)}")
        if self.best_response not in BEST_RESPONSES:
            raise ValueError(f"best_response must be one of {BEST_RESPONSES}, got {self.best_response!r}")
        if self.iterations is not None and (isinstance(self.iterations, bool) or not isinstance(self.iterations, int)
                                            or self.iterations < 1):
            raise ValueError(f"iterations must be an integer >= 1 or None, got {self.iterations!r}")
        for key, values in parse_grid(list(self.overrides)):
            if key in _OWN_KEYS:
                raise ValueError(f"--set {key}=... is not allowed in bench compare: {_OWN_KEYS[key]}")
            if len(values) > 1:
                raise ValueError(f"bench compare takes one value per --set key, got {key}={','.join(values)}; "
                                 "use dedafp sweep to compare settings")

    def responder(self, env: str) -> str:
        """The ``best_response.algorithm`` of ``env``'s runs."""
        return game_spec(env).exact_responder if self.best_response == "exact" else "ppo"

    def plan(self, env: str) -> SweepPlan:
        """``env``'s sweep over the three algorithms (validated: a bad setting fails before any run)."""
        assignments = [f"algorithm={','.join(ALGORITHMS)}", f"best_response.algorithm={self.responder(env)}",
                       f"device={self.device}", *self.overrides]
        if self.iterations is not None:
            assignments.append(f"fp.iterations={self.iterations}")
        return plan_sweep(env, self.seeds, assignments, self.runs / env)


# ---- reading the runs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunRecord:
    """What the table needs of one run, per metrics row k = 0..K (NaN where not measured).

    Attributes:
        algorithm: ``dedafp``, ``algo1`` or ``algo2``.
        seed: its seed.
        iterations: k of every row.
        exploitability: exploitability of the average policy the algorithm plays (see :func:`collect_env`).
        evaluator: the evaluator's exploitability column of metrics.csv (differs only for Algo 1 on the
            density games).
        mixture: exploitability of the exact episode mixture of the first k best responses.
        exact_fp: exact fictitious play's exploitability (LQ: from metrics.csv; density games: on the grid,
            :func:`grid_fictitious_play`; NaN where not known).
        density: each density-error column at the last iteration that measured it.
        phases: seconds per phase (:data:`PHASES`), summed over the rows, and ``"total"``.
        wall_clock: training wall-clock from ``summary.json``, seconds.
    """

    algorithm: str
    seed: int
    iterations: list[int]
    exploitability: list[float]
    evaluator: list[float]
    mixture: list[float]
    exact_fp: list[float]
    density: dict[str, float]
    phases: dict[str, float]
    wall_clock: float

    @property
    def reached(self) -> int:
        """The last iteration recorded."""
        return self.iterations[-1] if self.iterations else 0

    @property
    def final(self) -> float:
        """The policy's exploitability at the last evaluated iteration."""
        return last_finite(self.exploitability)


def _column(rows: list[dict[str, float]], key: str) -> list[float]:
    return [row.get(key, math.nan) for row in rows]


def last_finite(values: list[float]) -> float:
    """The last finite value of ``values`` (NaN if none)."""
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else math.nan


def _grid_mixture(grid: GridMFG, run_dir: Path, exploitability: list[float], iterations: list[int],
                  seed: int) -> list[float]:
    """The episode mixture's exploitability at every iteration the evaluator measured (NaN elsewhere)."""
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        return [math.nan] * len(iterations)
    policies = torch.load(checkpoint, map_location="cpu", weights_only=False)["best_responses"]
    measured = [k for k, e in zip(iterations, exploitability, strict=True) if math.isfinite(e) and k >= 1]
    values = dict(zip(measured, episode_mixture_exploitability(grid, policies, measured, seed=seed), strict=True))
    return [values.get(k, math.nan) for k in iterations]


def collect_env(plan: SweepPlan, grid: GridMFG | None = None) -> list[RunRecord]:
    """Read every run of ``plan`` that recorded an iteration (unfinished ones too: see ``reached``).

    ``grid``: the density game's reference grid, for the episode mixtures and exact fictitious play
    (:func:`grid_fictitious_play`; None: neither is computed).
    Algo 1 plays the episode mixture of its best responses. The LQ evaluator's rollout keeps each agent
    on one member, which is exact; the grid evaluator scores a policy cell by cell, which mixes the
    members state by state (a different policy), so on the density games Algo 1's exploitability is
    that of the exact episode mixture from k = 1 on.
    """
    key = exploitability_key(plan.env)
    reference_fp = None
    if grid is not None:
        longest = max(plan.config(c, s).fp.iterations for c, s in plan.runs())
        reference_fp = grid_fictitious_play(grid, longest)
    records = []
    for configuration, seed in plan.runs():
        run_dir = plan.run_dir(configuration, seed)
        if not (run_dir / "summary.json").exists():
            continue
        config = plan.config(configuration, seed)
        rows = [row for row in read_metrics(run_dir) if row["iteration"] <= config.fp.iterations]
        iterations = [int(row["iteration"]) for row in rows]
        evaluator = _column(rows, key)
        if is_lq(plan.env):
            mixture = _column(rows, "theory/mixture_exploitability")
        elif grid is not None:
            mixture = _grid_mixture(grid, run_dir, evaluator, iterations, seed)
        else:
            mixture = [math.nan] * len(rows)
        exploitability = evaluator
        if config.algorithm == "algo1" and not is_lq(plan.env) and grid is not None:
            exploitability = [m if k >= 1 else e for k, e, m in zip(iterations, evaluator, mixture, strict=True)]
        phases = {phase: float(np.nansum(_column(rows, f"time/{phase}"))) for phase in PHASES}
        phases["total"] = float(np.nansum(_column(rows, "time/iteration")))
        summary = json.loads((run_dir / "summary.json").read_text())
        exact_fp = _column(rows, "reference/exact_fp_exploitability") if reference_fp is None \
            else [reference_fp[k] for k in iterations]
        records.append(RunRecord(config.algorithm, seed, iterations, exploitability, evaluator, mixture, exact_fp,
                                 {k: last_finite(_column(rows, k)) for k, _ in density_metrics(plan.env)},
                                 phases, float(summary["wall_clock_seconds"])))
    return records


@dataclass(frozen=True)
class EnvResult:
    """One game's comparison: its settings and one record per run.

    ``config``: the resolved configuration of its first run (the algorithm aside, every run's is the same),
    so the record says what ran even after the game's defaults change.
    """

    env: str
    seeds: list[int]
    iterations: int
    best_response: str
    overrides: list[str]
    records: list[RunRecord] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def of(self, algorithm: str) -> list[RunRecord]:
        """The records of one algorithm."""
        return [r for r in self.records if r.algorithm == algorithm]


def _plain(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _floats(value: Any) -> Any:
    """None -> NaN, recursively (the inverse of :func:`_plain` on numbers)."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value


def save_env_result(result: EnvResult, out: Path) -> Path:
    """Write ``OUT/<env>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result.env}.json"
    data = {"env": result.env, "seeds": result.seeds, "iterations": result.iterations,
            "best_response": result.best_response, "overrides": result.overrides, "config": result.config,
            "records": [_plain(vars(record)) for record in result.records]}
    atomic_write(json.dumps(data, indent=1) + "\n", path)
    return path


def load_env_results(out: Path) -> list[EnvResult]:
    """Every ``OUT/<env>.json``, in the order of :func:`comparable_games`."""
    results = []
    for env in comparable_games():
        path = out / f"{env}.json"
        if path.exists():
            data = json.loads(path.read_text())
            records = [RunRecord(**_floats(record)) for record in data.pop("records")]
            results.append(EnvResult(**data, records=records))
    return results


# ---- the command --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompareResult:
    """What :func:`bench_compare` did: the files written and one outcome per run it trained or skipped."""

    paths: list[Path]
    outcomes: list[RunOutcome]


def _reference_grid(env: str, plan: SweepPlan) -> GridMFG | None:
    """The density game's reference grid (episode mixtures, exact fictitious play), or None for the LQ games."""
    if is_lq(env):
        return None
    from dedafp.envs.registry import make_game
    from dedafp.reference.grid import default_grid_config
    from dedafp.reference.grid_kernel import build_grid
    config = plan.config(plan.configurations[0], plan.seeds[0])
    return build_grid(make_game(env, config.game), default_grid_config(env))


def bench_compare(config: CompareConfig, backend: str = "local", workers: int | None = None, threads: int = 1,
                  train: bool = True, print_fn: Callable[[str], None] = print) -> CompareResult:
    """Train (or resume) every game's three-algorithm sweep, then write the records, table and figure.

    ``train=False`` only reads back the runs that exist (unfinished ones included) and rebuilds the table.
    ``backend``/``workers``: as in :func:`dedafp.experiments.sweep.run_sweep`. A failed run is reported in the outcomes;
    the table covers the others.
    """
    from dedafp.benchmarks.compare_report import write_table

    plans = {env: config.plan(env) for env in config.envs}     # every setting validated before any run
    outcomes: list[RunOutcome] = []
    for env, plan in plans.items():
        if train:
            print_fn(f"{env}: 3 algorithms x {len(plan.seeds)} seed(s), best response {config.responder(env)} "
                     f"-> {plan.out} (re-running the same command resumes it)")

            def show(outcome: RunOutcome, env: str = env) -> None:
                detail = outcome.error or f"{outcome.seconds:.0f} s"
                print_fn(f"  {env} {outcome.label} seed {outcome.seed}: {outcome.status} ({detail})")

            outcomes += run_sweep(plan, backend, workers=workers, threads=threads, callback=show)
        first = plan.config(plan.configurations[0], plan.seeds[0])
        result = EnvResult(env, list(plan.seeds), first.fp.iterations, config.responder(env),
                           [o for o in plan.configurations[0].overrides if o.split("=")[0] not in _OWN_KEYS],
                           collect_env(plan, _reference_grid(env, plan)), first.to_dict())
        print_fn(f"{env}: {len(result.records)} run(s) read back -> {save_env_result(result, config.out)}")
    return CompareResult(write_table(config.out), outcomes)
