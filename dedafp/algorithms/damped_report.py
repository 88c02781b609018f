"""The study of ``results/omd/`` (damped fictitious play, online mirror descent): sweeps, table, figure.

* :func:`exact_sweep`: exploitability against iteration of damped fictitious play with exact parts for
  a list of weights α (LQ: :func:`~dedafp.reference.damped.exact_damped_fictitious_play`; a density
  game: :class:`~dedafp.reference.damped.GridDampedFictitiousPlay` on its default grid), beside exact
  fictitious play and, on a grid, online mirror descent for a list of learning rates η. This is what chose
  each game's α, and the candidates for its η.
* :func:`write_report`: from run folders (deep parts), the table (mean ± sd over seeds at given k,
  seconds per iteration) and the figure (exploitability against iteration and against wall-clock,
  every algorithm, the exact-parts curves dashed).

Usage::

    python -m dedafp.algorithms.damped_report sweep --out results/omd
    python -m dedafp.algorithms.damped_report sweep --out results/omd --games four_rooms --weights 0.05 0.1 0.2 \
        --name exact_sweep_four_rooms
    python -m dedafp.algorithms.damped_report report --out results/omd \\
        --runs "lq2d:damped_fp α=1:runs/omd/lq2d_damped1_s*" "lq2d:DEDA-FP:runs/omd/lq2d_dedafp_s*"
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["exact_sweep", "write_sweep", "write_report", "main"]

#: Weights of the exact sweep (α = 1: fixed point).
SWEEP_WEIGHTS = (0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 1.0)
#: Online mirror descent's learning rates swept per grid game (the grid's own reference, results/reference/, used
#: 10 on the beach bar and 1 on four-rooms).
OMD_LEARNING_RATES = {"beach_bar": (3.0, 10.0, 20.0, 30.0, 100.0, 300.0),
                      "four_rooms": (0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 1.0)}
#: The metric each kind of game is scored by.
_METRIC = {"lq": "fp/exploitability", "grid": "fp/grid_exploitability"}


def exact_sweep(game: str, iterations: int = 20, weights: Sequence[float] = SWEEP_WEIGHTS,
                learning_rates: Sequence[float] | None = None) -> dict[str, list[float]]:
    """Exact-parts exploitability ``[iterations + 1]`` per method: ``fp``, ``damped α=...`` and, on a grid,
    ``omd η=...`` for ``learning_rates`` (default :data:`OMD_LEARNING_RATES` of the game)."""
    from dedafp.reference.damped import GridDampedFictitiousPlay, exact_damped_fictitious_play
    curves: dict[str, list[float]] = {}
    if game in ("lq1d", "lq2d"):
        from dedafp.envs.lq import lq_preset
        from dedafp.reference import lq
        config = lq_preset(game)
        curves["fp"] = lq.exact_fictitious_play(config, iterations).exploitability.tolist()
        for w in weights:
            curves[f"damped α={w:g}"] = exact_damped_fictitious_play(config, iterations, w).exploitability.tolist()
        return curves
    from dedafp.envs.registry import make_game
    from dedafp.reference.grid import GridFictitiousPlay, GridMirrorDescent, build_grid, default_grid_config
    grid = build_grid(make_game(game), default_grid_config(game))
    rates = OMD_LEARNING_RATES.get(game, (1.0,)) if learning_rates is None else learning_rates
    solvers = {"fp": GridFictitiousPlay(grid)}
    solvers.update({f"omd η={rate:g}": GridMirrorDescent(grid, rate) for rate in rates})
    solvers.update({f"damped α={w:g}": GridDampedFictitiousPlay(grid, w) for w in weights})
    for name, solver in solvers.items():
        curves[name] = [solver.evaluate().exploitability] + [solver.iteration().exploitability
                                                             for _ in range(iterations)]
    return curves


def write_sweep(out: Path, games: Sequence[str] = ("lq1d", "lq2d", "beach_bar"), iterations: int = 20,
                weights: Sequence[float] = SWEEP_WEIGHTS, name: str = "exact_sweep") -> Path:
    """``out/NAME.csv`` (game, method, k, exploitability) and ``NAME.md`` (k = 5, 10, 20)."""
    out.mkdir(parents=True, exist_ok=True)
    rows, lines = [], ["| game | method (exact parts) | k = 5 | k = 10 | k = 20 |", "|---|---|---:|---:|---:|"]
    for game in games:
        curves = exact_sweep(game, iterations, weights)
        for method, curve in curves.items():
            rows += [(game, method, k, value) for k, value in enumerate(curve)]
            cells = " | ".join(f"{curve[k]:.3g}" for k in (5, 10, 20) if k < len(curve))
            lines.append(f"| {game} | {method} | {cells} |")
    path = out / f"{name}.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["game", "method", "k", "exploitability"])
        writer.writerows(rows)
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return path


def _read(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as f:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def _curve(rows: list[dict[str, float]], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterations, the metric and the cumulative wall-clock (s) of the evaluated rows."""
    k = np.array([r["iteration"] for r in rows])
    wall = np.cumsum([r.get("time/iteration", math.nan) for r in rows])
    value = np.array([r.get(metric, math.nan) for r in rows])
    keep = np.isfinite(value)
    return k[keep], value[keep], wall[keep]


def write_report(out: Path, specs: Sequence[str], at: Sequence[int] = (4, 10, 20)) -> dict:
    """Table (``table.md``, ``table.csv``, ``summary.json``) and figure (``curves.png``) from run folders.

    Each spec is ``game:label:glob[|glob...]`` (one run folder per seed). The exact-parts curve of each run's
    loop (``reference/exact_damped_exploitability``, or ``reference/exact_fp_exploitability`` for
    fictitious play) is drawn dashed.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[tuple[str, list[Path]]]] = {}
    for spec in specs:
        game, label, pattern = spec.split(":", 2)
        runs = sorted(Path(p) for part in pattern.split("|") for p in glob.glob(part)
                      if (Path(p) / "metrics.csv").exists())
        if not runs:
            raise FileNotFoundError(f"no run folder with metrics.csv matches {pattern!r}")
        groups.setdefault(game, []).append((label, runs))
    summary: dict = {}
    header = ["game", "algorithm", "seeds", *[f"k={k}" for k in at], "exact parts k=" + "/".join(map(str, at)),
              "s per iteration"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    table_rows = []
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), squeeze=False)
    for row, (game, entries) in enumerate(groups.items()):
        lowest = math.inf
        for index, (label, runs) in enumerate(entries):
            color = f"C{index}"
            data = [_read(r) for r in runs]
            metric = _METRIC["grid"] if "fp/grid_exploitability" in data[0][0] else _METRIC["lq"]
            exact_key = next((key for key in ("reference/exact_damped_exploitability",
                                              "reference/exact_omd_exploitability") if key in data[0][0]),
                             "reference/exact_fp_exploitability")
            values, exact, seconds = {}, {}, []
            lowest = min(lowest, *(v for rows in data for v in _curve(rows, metric)[1]))
            for i, rows in enumerate(data):
                k, v, wall = _curve(rows, metric)
                axes[row, 0].plot(k, v, color=color, alpha=0.8, label=label if i == 0 else None)
                axes[row, 1].plot(wall, v, color=color, alpha=0.8, label=label if i == 0 else None)
                for kk, vv in zip(k, v, strict=True):
                    values.setdefault(int(kk), []).append(vv)
                seconds += [r["time/iteration"] for r in rows[1:] if math.isfinite(r.get("time/iteration", math.nan))]
                if i == 0:
                    ke, ve, we = _curve(rows, exact_key)
                    if ke.size == 0:        # a grid game's evaluator has no exact FP curve: solve it here
                        ke = np.arange(int(k.max()) + 1)
                        ve = np.array(exact_sweep(game, int(k.max()), weights=(), learning_rates=())["fp"])
                    exact = dict(zip(ke.astype(int).tolist(), ve.tolist(), strict=True))
                    axes[row, 0].plot(ke, ve, color=color, ls="--", alpha=0.8, label=f"{label}, exact parts")
            cells = []
            for k in at:
                v = values.get(k, [])
                cells.append(f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else
                             (f"{v[0]:.3f}" if v else "–"))
            exact_cells = "/".join(f"{exact[k]:.3g}" if k in exact else "–" for k in at)
            per_iteration = float(np.mean(seconds)) if seconds else math.nan
            line = [game, label, str(len(runs)), *cells, exact_cells, f"{per_iteration:.0f}"]
            lines.append("| " + " | ".join(line) + " |")
            table_rows.append(line)
            summary.setdefault(game, {})[label] = {
                "seeds": len(runs), "runs": [str(r) for r in runs], "metric": metric,
                "at": {str(k): values.get(k, []) for k in at}, "exact_parts": {str(k): exact.get(k) for k in at},
                "seconds_per_iteration": per_iteration}
        for col, xlabel in ((0, "iteration k"), (1, "wall-clock (s, this 2-core shared CPU)")):
            axes[row, col].set_yscale("log")
            # The exact-parts curves of a contraction fall to round-off: keep the learned curves readable.
            axes[row, col].set_ylim(bottom=0.3 * lowest)
            axes[row, col].set_xlabel(xlabel)
            axes[row, col].set_ylabel(f"{game}: exploitability")
            axes[row, col].grid(alpha=0.3)
        axes[row, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with (out / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table_rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``sweep`` (exact parts) or ``report`` (run folders) into ``--out``."""
    parser = argparse.ArgumentParser(prog="python -m dedafp.algorithms.damped_report")
    parser.add_argument("command", choices=("sweep", "report"))
    parser.add_argument("--out", type=Path, default=Path("results/omd"))
    parser.add_argument("--runs", nargs="*", default=[], help="game:label:glob of run folders (report)")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--games", nargs="*", default=["lq1d", "lq2d", "beach_bar"], help="games (sweep)")
    parser.add_argument("--weights", nargs="*", type=float, default=list(SWEEP_WEIGHTS), help="α values (sweep)")
    parser.add_argument("--name", default="exact_sweep", help="file stem of the sweep's CSV and table")
    parser.add_argument("--at", nargs="*", type=int, default=[4, 10, 20], help="iterations in the table (report)")
    args = parser.parse_args(argv)
    if args.command == "sweep":
        write_sweep(args.out, args.games, args.iterations, args.weights, args.name)
    else:
        write_report(args.out, args.runs, args.at)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
