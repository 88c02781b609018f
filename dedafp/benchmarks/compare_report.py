"""The ablation table of ``dedafp bench compare``: ``table.md``, ``table.csv`` and ``compare.png`` from the records.

:func:`write_table` rebuilds all three from every ``OUT/<env>.json`` that :mod:`dedafp.benchmarks.compare`
saved; :func:`table_rows`, :func:`markdown` and :func:`plot_compare` are its three parts, :func:`verdict`
the generated ranking of one game (mean ± sd over seeds, then seed by seed).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dedafp.benchmarks.compare import (
    ALGORITHMS,
    PHASE_LABELS,
    PHASES,
    EnvResult,
    RunRecord,
    density_metrics,
    is_lq,
    last_finite,
    load_env_results,
)
from dedafp.common.files import atomic_write
from dedafp.common.stats import format_mean_sd, mean_sd, mean_sd_curve, write_csv

__all__ = ["table_rows", "verdict", "markdown", "plot_compare", "write_table"]

_COLOURS = {"dedafp": "C0", "algo1": "C1", "algo2": "C2"}


def _stat(records: list[RunRecord], value: Callable[[RunRecord], float]) -> tuple[float, float]:
    """Mean and sd over ``records`` of ``value(record)``."""
    return mean_sd([value(r) for r in records])


def _curve(records: list[RunRecord], values: Callable[[RunRecord], list[float]]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations where some run measured ``values``, with the mean and sd (0 for one run) over runs."""
    return mean_sd_curve([r.iterations for r in records], [values(r) for r in records])


def table_rows(results: list[EnvResult]) -> list[dict[str, object]]:
    """One row per (game, algorithm) with runs: the numbers of ``table.csv`` (seconds: means over seeds)."""
    rows = []
    for result in results:
        for algorithm in ALGORITHMS:
            mine = result.of(algorithm)
            if not mine:
                continue
            exploitability, exploitability_sd = _stat(mine, lambda r: r.final)
            mixture, mixture_sd = _stat(mine, lambda r: last_finite(r.mixture))
            row: dict[str, object] = {
                "env": result.env, "algorithm": algorithm, "best_response": result.best_response,
                "seeds": len(mine), "iterations": result.iterations, "reached": min(r.reached for r in mine),
                "exploitability_mean": exploitability, "exploitability_sd": exploitability_sd,
                "evaluator_exploitability_mean": _stat(mine, lambda r: last_finite(r.evaluator))[0],
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
    order = " < ".join(f"{f'**{a}**' if i == 0 else a} ({format_mean_sd(*stats[a])}{unit})"
                       for i, a in enumerate(ranked))
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
        cells = [algorithm, str(len(mine)), str(min(r.reached for r in mine)),
                 format_mean_sd(*_stat(mine, lambda r: r.final)),
                 format_mean_sd(*_stat(mine, lambda r: last_finite(r.mixture)))]
        cells += [format_mean_sd(*_stat(mine, lambda r, key=key: r.density[key])) for key, _ in density]
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
        at = {int(i): format_mean_sd(m, s) for i, m, s in zip(k, mean, spread, strict=True)}
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
    atomic_write(markdown(results), paths[0])
    write_csv(paths[1], table_rows(results))
    plot_compare(results, paths[2])
    return paths
