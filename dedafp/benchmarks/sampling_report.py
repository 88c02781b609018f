"""The report of ``dedafp bench sampling``: the printed tables and ``sampling.png``, from the result document."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from dedafp.benchmarks.sampling import ALGORITHMS, PAPER_SECONDS, TASKS

__all__ = ["print_tables", "plot_sampling"]


def _row(result: dict, style: str, shape: str, task: str, algorithm: str, extrapolated: bool = False) -> dict | None:
    """The row with these labels, or None."""
    for row in result["rows"]:
        if (row["style"], row["shape"], row["task"], row["algorithm"], row["extrapolated"]) == (
                style, shape, task, algorithm, extrapolated):
            return row
    return None


def print_tables(result: dict, print_fn: Callable[[str], None]) -> None:
    for shape in ("paper", "default"):
        print_fn(f"\nbatched, {shape} shapes (median seconds [IQR])")
        print_fn(f"{'task':>20} " + " ".join(f"{a:>22}" for a in ALGORITHMS))
        for task in TASKS:
            cells = []
            for algorithm in ALGORITHMS:
                row = _row(result, "batched", shape, task, algorithm)
                cells.append(f"{row['median']:>9.4g} [{row['q25']:.3g}-{row['q75']:.3g}]" if row else "-")
            print_fn(f"{task:>20} " + " ".join(f"{c:>22}" for c in cells))
        for task in ("density_query", "reward_query", "reward_query_all"):
            row = _row(result, "batched", shape, task, "dedafp table")
            if row:
                print_fn(f"{task:>20} dedafp, the loop's table (built from the flow + queried): "
                         f"{row['median']:.4g} s [{row['q25']:.3g}-{row['q75']:.3g}]")
    print_fn("\npaper-style (paper shapes), extrapolated to the full size (measured subset in brackets)")
    for task, algorithm in (("per_agent", "algo1"), ("per_agent", "algo2"), ("dummy_vec_env", "algo1"),
                            ("dummy_vec_env", "algo2"), ("scipy_kde", "both")):
        full = _row(result, "paper-style", "paper", task, algorithm, extrapolated=True)
        part = _row(result, "paper-style", "paper", task, algorithm)
        print_fn(f"{task + ' ' + algorithm:>24} {full['median']:>9.4g} s  (measured {part['median']:.4g} s)")
    print_fn("\nDEDA-FP shortcuts (default shapes, median seconds)")
    for row in result["rows"]:
        if row["style"] == "shortcut":
            print_fn(f"{row['task'] + ' ' + row['algorithm']:>48} {row['median']:>9.4g}")
    print_fn("\nratios (median over repeats [min-max])")
    for ratio in result["ratios"]:
        print_fn(f"{ratio['ratio']:>80} {ratio['median']:>8.3g} [{min(ratio['values']):.3g}-"
                 f"{max(ratio['values']):.3g}]")
    print_fn("\n" + result["verdict"])



def plot_sampling(result: dict, path: Path) -> None:
    """Three panels: batched rows at the paper's and the default shapes (paper-style and the paper's own
    numbers beside them), and the reward query's cost against the cached grid's error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.25, 1.25, 1]})
    tasks = ("marginal_samples", "trajectories", "density_query", "population_refresh")
    colours = {"algo1": "tab:orange", "algo2": "tab:green", "dedafp": "tab:blue"}
    for ax, shape in zip(axes[:2], ("paper", "default"), strict=True):
        width = 0.26
        for i, algorithm in enumerate(ALGORITHMS):
            rows = [_row(result, "batched", shape, task, algorithm) for task in tasks]
            heights = [r["median"] for r in rows]
            errors = np.array([[r["median"] - r["q25"] for r in rows], [r["q75"] - r["median"] for r in rows]])
            bars = ax.bar(np.arange(len(tasks)) + (i - 1) * width, heights, width, yerr=errors,
                          color=colours[algorithm], label=f"{algorithm} (batched)")
            ax.bar_label(bars, fmt="%.3g", fontsize=5.5, padding=1)
        if shape == "paper":
            extra = [("per_agent", "algo1", "Algo 1 paper-style, per agent"),
                     ("dummy_vec_env", "algo1", "Algo 1 paper-style, DummyVecEnv")]
            for j, (task, algorithm, label) in enumerate(extra):
                row = _row(result, "paper-style", "paper", task, algorithm, extrapolated=True)
                bars = ax.bar(4 + (j - 0.5) * width, row["median"], width, color="tab:orange", alpha=0.45,
                              hatch="//" if j == 0 else "xx", label=label + " (extrapolated)")
                ax.bar_label(bars, fmt="%.3g", fontsize=5.5, padding=1)
            for j, algorithm in enumerate(ALGORITHMS):
                mean, sd = PAPER_SECONDS[algorithm]
                bars = ax.bar(5 + (j - 1) * width, mean, width, yerr=sd, color=colours[algorithm], alpha=0.35,
                              hatch="..", label="paper, RTX 4090" if j == 0 else None)
                ax.bar_label(bars, fmt="%.3g", fontsize=5.5, padding=1)
            ticks = [*tasks, "paper-style\nsamples", "paper's\nreported"]
        else:
            ticks = list(tasks)
        ax.set_xticks(np.arange(len(ticks)), [t.replace("_", "\n") for t in ticks], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.3 * min(bar.get_height() for bar in ax.patches))
        ax.set_ylabel(f"seconds (median, IQR), {result['device']}")
        ax.set_title(f"{shape} shapes: {result['config']['samples']} agents/samples, every t", fontsize=9)
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=6.5, loc="upper left")
    ax = axes[2]
    grid_rows = result["shortcuts"]["grid_cache"]["rows"]
    labels, seconds, notes = [], [], []
    for name, style, shape, task, algorithm in (("flow, paper", "batched", "paper", "reward_query", "dedafp"),
                                                ("flow, default", "batched", "default", "reward_query", "dedafp"),
                                                ("zuko, default", "shortcut", "default", "reward_query", "zuko"),
                                                ("KDE", "batched", "default", "reward_query", "algo1"),
                                                ("loop table, default", "batched", "default", "reward_query",
                                                 "dedafp table")):
        labels.append(name)
        seconds.append(_row(result, style, shape, task, algorithm)["median"])
        notes.append("built once per refit" if algorithm == "dedafp table" else "exact")
    for grid in grid_rows:
        labels.append(f"grid {grid['cells']}")
        seconds.append(_row(result, "shortcut", "default", "reward_query", f"grid {grid['cells']}")["median"])
        notes.append(f"crowd-term err: interior max {grid.get('crowd_population_interior_max', 0):.2g}, "
                     f"edge max {grid['crowd_population_edge_max']:.2g}")
    ax.barh(np.arange(len(labels)), np.array(seconds) * 1e3, color=["tab:blue"] * 3 + ["tab:orange"]
            + ["tab:purple"] * (len(grid_rows) + 1))
    for i, note in enumerate(notes):
        ax.text(seconds[i] * 1e3 * 1.1, i, note, va="center", fontsize=7)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per reward query ({result['config']['reward_batch']} agents)")
    ax.set_title("reward query: exact models vs cached grids of the default flow", fontsize=9)
    ax.grid(alpha=0.3, axis="x", which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
