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
present, so games run by separate commands with their own seeds and iterations share one table.

Usage::

    from dedafp.benchmarks.compare import CompareConfig, bench_compare
    result = bench_compare(CompareConfig(envs=("lq2d",), seeds="0..2", iterations=10))
    result.paths, result.outcomes             # table.md, table.csv, compare.png; one outcome per run
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dedafp.envs.registry import game_spec, registered_games
from dedafp.run import latest_checkpoint, read_metrics
from dedafp.experiments.sweep import RunOutcome, SweepPlan, _mean_sd, _pm, exploitability_key, parse_grid, plan_sweep, run_sweep

if TYPE_CHECKING:
    from dedafp.agents.best_response import DeterministicPolicy
    from dedafp.reference.grid import GridMFG

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
_COLOURS = {"dedafp": "C0", "algo1": "C1", "algo2": "C2"}


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
        return _last_finite(self.exploitability)


def _column(rows: list[dict[str, float]], key: str) -> list[float]:
    return [row.get(key, math.nan) for row in rows]


def _last_finite(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return finite[-1] if finite else math.nan


def episode_mixture_exploitability(grid: GridMFG, policies: Sequence[DeterministicPolicy], ks: Sequence[int],
                                   samples_per_cell: int = 4, seed: int = 0) -> list[float]:
    """Exact grid exploitability of the episode mixture of the first k ``policies``, for every k in ``ks``.

    Members are put on the lattice as :func:`~dedafp.reference.grid_scoring.project_policy` does and
    charged the lattice's action costs (exact for grid best responses, whose actions are lattice points).
    k = 0 gives NaN.
    """
    from dedafp.agents.policy import act
    from dedafp.reference.grid_scoring import mixture_exploitability, project_policy

    generator = torch.Generator().manual_seed(seed)
    needed = max(ks, default=0)
    members = [project_policy(grid, lambda t, x, p=p: act(p, t, x, deterministic=True), samples_per_cell,
                              generator=generator) for p in policies[:needed]]
    flows = [grid.forward(member) for member in members]
    return [mixture_exploitability(grid, members[:k], flows[:k]).exploitability if 1 <= k <= len(members) else math.nan
            for k in ks]


def grid_fictitious_play(grid: GridMFG, iterations: int) -> list[float]:
    """Exact fictitious play on the grid as the loop runs it: exploitability at k = 0..``iterations``.

    Starts from the zero-velocity policy (the loop's initial average policy is a near-zero Gaussian) and
    averages only the best responses, as episode mixtures: the like-for-like reference of the density
    games (``dedafp reference --method fp`` starts from the uniform policy and keeps it in the average).
    """
    from dedafp.reference.grid_scoring import mixture_exploitability

    zero = np.zeros((grid.horizon, grid.num_states, grid.num_actions))
    zero[..., int(np.argmin(np.abs(grid.velocities).sum(-1)))] = 1.0
    score = grid.exploitability(zero)
    values, best_actions = [score.exploitability], score.best_response
    members: list[np.ndarray] = []
    flows: list[np.ndarray] = []
    for _ in range(iterations):
        members.append(grid.one_hot(best_actions))
        flows.append(grid.forward(members[-1]))
        score = mixture_exploitability(grid, members, flows)
        values.append(score.exploitability)
        best_actions = score.best_response
    return values


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
                                 {k: _last_finite(_column(rows, k)) for k, _ in density_metrics(plan.env)},
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
    path.write_text(json.dumps(data, indent=1) + "\n")
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


# ---- the table ----------------------------------------------------------------------------------------

def _stat(records: list[RunRecord], value: Callable[[RunRecord], float]) -> tuple[float, float]:
    return _mean_sd([value(r) for r in records])


def _curve(records: list[RunRecord], values: Callable[[RunRecord], list[float]]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations where some run measured ``values``, with the mean and sd (0 for one run) over runs."""
    k = np.array(sorted({i for r in records for i in r.iterations}), dtype=int)
    table = np.full((len(records), len(k)), np.nan)
    for row, record in enumerate(records):
        table[row, np.searchsorted(k, record.iterations)] = values(record)
    stats = np.array([_mean_sd(list(column)) for column in table.T]).reshape(-1, 2)
    measured = np.isfinite(stats[:, 0])
    return k[measured], stats[measured, 0], np.nan_to_num(stats[measured, 1])


def table_rows(results: list[EnvResult]) -> list[dict[str, object]]:
    """One row per (game, algorithm) with runs: the numbers of ``table.csv`` (seconds: means over seeds)."""
    rows = []
    for result in results:
        for algorithm in ALGORITHMS:
            mine = result.of(algorithm)
            if not mine:
                continue
            exploitability, exploitability_sd = _stat(mine, lambda r: r.final)
            mixture, mixture_sd = _stat(mine, lambda r: _last_finite(r.mixture))
            row: dict[str, object] = {
                "env": result.env, "algorithm": algorithm, "best_response": result.best_response,
                "seeds": len(mine), "iterations": result.iterations, "reached": min(r.reached for r in mine),
                "exploitability_mean": exploitability, "exploitability_sd": exploitability_sd,
                "evaluator_exploitability_mean": _stat(mine, lambda r: _last_finite(r.evaluator))[0],
                "mixture_exploitability_mean": mixture, "mixture_exploitability_sd": mixture_sd}
            for key, _ in density_metrics(result.env):
                name = key.split("/")[1]
                row[f"{name}_mean"], row[f"{name}_sd"] = _stat(mine, lambda r, key=key: r.density[key])
            for phase in (*PHASES, "total"):
                row[f"time_{phase}_s"] = _stat(mine, lambda r, phase=phase: r.phases[phase])[0]
            row["time_training_s"] = row["time_total_s"] - row["time_evaluation_s"]
            row["wall_clock_s"] = _stat(mine, lambda r: r.wall_clock)[0]
            for k, mean, _ in zip(*_curve(mine, lambda r: r.exploitability), strict=True):
                row[f"exploitability_k{k}"] = mean
            rows.append(row)
    return rows


def _paired(result: EnvResult, lower: str, higher: str, value: Callable[[RunRecord], float]) -> str:
    """How ``lower`` compares with ``higher`` seed by seed (the algorithms share their seeds)."""
    mine = {r.seed: value(r) for r in result.of(lower)}
    theirs = {r.seed: value(r) for r in result.of(higher)}
    seeds = [s for s in mine if s in theirs and math.isfinite(mine[s]) and math.isfinite(theirs[s])]
    if all(math.isclose(mine[s], theirs[s], rel_tol=1e-9) for s in seeds):
        # e.g. two kernel estimates of the same initial particles, whose worst t is t = 0
        return f"{lower} and {higher} tied on every seed"
    (low, low_sd), (high, high_sd) = _stat(result.of(lower), value), _stat(result.of(higher), value)
    if len(seeds) < 2:
        spread = "one seed: no spread to judge by"
    else:
        spread = "more than one sd apart" if low + low_sd < high - high_sd else "within one sd"
    wins = sum(mine[s] < theirs[s] for s in seeds)
    return f"{lower} below {higher} on {wins} of {len(seeds)} seed{'s' * (len(seeds) > 1)} ({spread})"


def _ranking(result: EnvResult, label: str, value: Callable[[RunRecord], float], unit: str = "") -> str:
    """``label: best < second < third`` (mean ± sd over seeds), then each neighbouring pair seed by seed."""
    stats = {a: _stat(result.of(a), value) for a in ALGORITHMS if result.of(a)}
    ranked = sorted((a for a, (mean, _) in stats.items() if math.isfinite(mean)), key=lambda a: stats[a][0])
    if len(ranked) < 2:
        return f"{label}: fewer than two algorithms measured"
    order = " < ".join(f"{f'**{a}**' if i == 0 else a} ({_pm(*stats[a])}{unit})" for i, a in enumerate(ranked))
    pairs = [_paired(result, lower, higher, value) for lower, higher in itertools.pairwise(ranked)]
    return f"{label}: {order}; " + "; ".join(pairs)


def verdict(result: EnvResult) -> list[str]:
    """Which algorithm wins on what in one game: exploitability, each density error, training time."""
    lines = [_ranking(result, "final exploitability", lambda r: r.final)]
    lines += [_ranking(result, label, lambda r, key=key: r.density[key]) for key, label in density_metrics(result.env)]
    lines.append(_ranking(result, "training wall-clock (evaluation excluded)",
                          lambda r: r.phases["total"] - r.phases["evaluation"], " s"))
    return lines


def _env_markdown(result: EnvResult) -> list[str]:
    present = [a for a in ALGORITHMS if result.of(a)]
    settings = ", ".join(f"`{o}`" for o in result.overrides) or "the game's defaults"
    lines = [f"## `{result.env}`: seeds {', '.join(map(str, result.seeds))}, K = {result.iterations} iterations, "
             f"best response `{result.best_response}`", "", f"Other settings: {settings}.", ""]
    density = density_metrics(result.env)
    header = ["algorithm", "seeds", "k reached", f"final exploitability (k = {result.iterations})",
              "exact mixture of its best responses", *(label for _, label in density)]
    lines += ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for algorithm in present:
        mine = result.of(algorithm)
        cells = [algorithm, str(len(mine)), str(min(r.reached for r in mine)), _pm(*_stat(mine, lambda r: r.final)),
                 _pm(*_stat(mine, lambda r: _last_finite(r.mixture)))]
        cells += [_pm(*_stat(mine, lambda r, key=key: r.density[key])) for key, _ in density]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Wall-clock per phase, seconds summed over iterations 0..K (mean over seeds):", "",
              "| algorithm | " + " | ".join(PHASE_LABELS[p] for p in PHASES) + " | training (no evaluation) | total |",
              "|---|" + "---:|" * (len(PHASES) + 2)]
    for algorithm in present:
        mine = result.of(algorithm)
        seconds = [_stat(mine, lambda r, p=p: r.phases[p])[0] for p in (*PHASES, "total")]
        cells = [f"{s:.0f}" for s in seconds[:-1]] + [f"{seconds[-1] - seconds[-2]:.0f}", f"{seconds[-1]:.0f}"]
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    curves = {a: _curve(result.of(a), lambda r: r.exploitability) for a in present}
    ks = sorted({int(k) for measured, _, _ in curves.values() for k in measured})
    lines += ["", "Exploitability at every evaluated iteration k (mean ± sd over seeds):", "",
              "| algorithm | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    for algorithm, (k, mean, sd) in curves.items():
        spread = sd if len(result.of(algorithm)) > 1 else np.full_like(sd, math.nan)   # one seed: no "± 0"
        at = {int(i): _pm(m, s) for i, m, s in zip(k, mean, spread, strict=True)}
        lines.append(f"| {algorithm} | " + " | ".join(at.get(i, "") for i in ks) + " |")
    exact = next((r for r in result.records if any(map(math.isfinite, r.exact_fp))), None)
    if exact is not None:
        by_k = dict(zip(exact.iterations, exact.exact_fp, strict=True))
        lines.append("| exact fictitious play | " + " | ".join(f"{by_k.get(k, math.nan):.4g}" for k in ks) + " |")
    lines += ["", "Verdict (generated from the numbers above; lower is better everywhere):", ""]
    lines += [f"- {line}." for line in verdict(result)]
    return lines


def markdown(results: list[EnvResult]) -> str:
    """The whole ``table.md``."""
    lines = ["# DEDA-FP against its baselines (`dedafp bench compare`)", "",
             "Exploitability: exact (LQ) or on the reference grid (density games), of the average policy each "
             "algorithm plays; for Algo 1 on the density games that is the exact episode mixture of its best "
             "responses (the grid evaluator's cell-by-cell score would mix them state by state instead). "
             "'Exact mixture of its best responses': the exploitability fictitious play itself would reach with "
             "the same best responses (LQ: `theory/mixture_exploitability`). Density errors: of the population "
             "model (flow for dedafp, kernel estimate for algo1/algo2) at the last evaluated iteration. "
             "'buffer + BC' includes the best response's rollout into the buffer (Algo 1 has no BC). "
             "'Exact fictitious play': with exact best responses and exact populations; on the density games "
             "computed on the reference grid from the zero-velocity policy, averaging only best responses, as the "
             "loop does.", ""]
    for result in results:
        lines += _env_markdown(result) + [""]
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def plot_compare(results: list[EnvResult], path: Path) -> None:
    """Exploitability per iteration (mean, ±sd band, log scale) and wall-clock per phase, one column per game."""
    # A bare Figure, not pyplot: no global state and no GUI backend to select.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(5.2 * len(results), 7.5))
    axes = figure.subplots(2, len(results), squeeze=False)
    for column, result in enumerate(results):
        top, bottom = axes[0, column], axes[1, column]
        present = [a for a in ALGORITHMS if result.of(a)]
        for algorithm in present:
            k, mean, sd = _curve(result.of(algorithm), lambda r: r.exploitability)
            # k = 0 is the same initial policy for all three and would squash the differences on a log axis.
            k, mean, sd = k[k >= 1], mean[k >= 1], sd[k >= 1]
            colour, seeds = _COLOURS[algorithm], len(result.of(algorithm))
            top.plot(k, mean, marker="o", ms=3, color=colour, label=f"{algorithm} ({seeds} seed{'s' * (seeds > 1)})")
            # On a log axis a band reaching 0 or below is drawn down to a tenth of the curve.
            top.fill_between(k, np.maximum(mean - sd, mean / 10), mean + sd, color=colour, alpha=0.2)
        exact = next((r for r in result.records if any(map(math.isfinite, r.exact_fp))), None)
        if exact is not None:
            label = "exact fictitious play" + ("" if is_lq(result.env) else " (on the grid)")
            top.plot(exact.iterations[1:], exact.exact_fp[1:], "k--", lw=1, label=label)
        top.set_yscale("log")
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.set_xlabel("iteration k (k = 0, the same for all three, in the table)")
        top.set_ylabel("exploitability (exact)" if is_lq(result.env) else "exploitability (reference grid)")
        top.set_title(f"{result.env}: best response {result.best_response}")
        top.grid(alpha=0.3, which="both")
        top.legend(fontsize=7)
        bottom_edge = np.zeros(len(present))
        for index, phase in enumerate(PHASES):
            seconds = np.array([_stat(result.of(a), lambda r, p=phase: r.phases[p])[0] for a in present])
            bottom.bar(present, seconds, bottom=bottom_edge, color=f"C{index + 3}", label=PHASE_LABELS[phase])
            bottom_edge += seconds
        bottom.set_ylabel("wall-clock over all iterations (s, mean over seeds)")
        bottom.legend(fontsize=7)
        bottom.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_table(out: Path) -> list[Path]:
    """Rebuild ``table.md``, ``table.csv`` and ``compare.png`` from every ``OUT/<env>.json``."""
    results = load_env_results(out)
    if not results:
        raise FileNotFoundError(f"no per-game records (<env>.json) under {out}; run dedafp bench compare first")
    paths = [out / "table.md", out / "table.csv", out / "compare.png"]
    paths[0].write_text(markdown(results))
    _write_csv(paths[1], table_rows(results))
    plot_compare(results, paths[2])
    return paths


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
    from dedafp.reference.grid import build_grid, default_grid_config
    config = plan.config(plan.configurations[0], plan.seeds[0])
    return build_grid(make_game(env, config.game), default_grid_config(env))


def bench_compare(config: CompareConfig, backend: str = "local", workers: int | None = None, threads: int = 1,
                  train: bool = True, print_fn: Callable[[str], None] = print) -> CompareResult:
    """Train (or resume) every game's three-algorithm sweep, then write the records, table and figure.

    ``train=False`` only reads back the runs that exist (unfinished ones included) and rebuilds the table.
    ``backend``/``workers``: as in :func:`dedafp.experiments.sweep.run_sweep`. A failed run is reported in the outcomes;
    the table covers the others.
    """
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
