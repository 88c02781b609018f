"""Best-response quality inside whole training runs: game x responder, read from committed run folders.

Where :mod:`dedafp.benchmarks.best_response` scores one best response against the iteration-0
population, this table reads what fictitious play itself measured at every iteration of a run
(``metrics.csv``): the shortfall to the exact responder against the same frozen population at
iterations 1, 5 and 10 (LQ: the exact ``theory/br_shortfall``; density games: the paired Monte Carlo
``br/shortfall``), the run's exploitability at its last iteration (LQ: exact ``fp/exploitability``;
density games: ``fp/grid_exploitability`` on the reference grid) and the median seconds of a best
response. Online mirror descent trains no best response: its rows are the greedy policy of each mirror
step's Q-function (:mod:`dedafp.algorithms.mirror_descent`), timed by the whole mirror step that yields it.
It trains nothing: a run not on disk is a row of dashes.

Usage::

    python -m dedafp.benchmarks.responder_runs            # -> results/best_response/runs.md
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from dedafp.common.files import atomic_write
from dedafp.run import read_metrics

__all__ = ["RUNS", "responder_rows", "markdown"]

#: (game, responder, run folder) of the committed runs the table reads.
RUNS: tuple[tuple[str, str, str], ...] = (
    ("lq2d", "PPO", "results/lq2d"),
    ("lq2d", "SAC", "results/lq2d_sac"),
    ("lq2d", "pathwise (default)", "results/lq2d_pathwise"),
    ("lq2d", "exact Riccati", "results/lq2d_riccati"),
    ("beach_bar", "OMD greedy (default loop)", "results/beach_bar"),
    ("beach_bar", "PPO (DEDA-FP's default)", "results/beach_bar_dedafp"),
    ("beach_bar", "PPO, learned spread", "results/beach_bar_learned_spread"),
    ("beach_bar", "pathwise", "results/beach_bar_pathwise"),
    ("beach_bar", "SAC", "results/beach_bar_sac"),
    ("beach_bar", "exact grid", "results/beach_bar_grid"),
    ("four_rooms", "PPO", "results/four_rooms_ppo"),
    ("four_rooms", "PPO, exploring starts 0.7", "results/four_rooms_ppo_exploring"),
    ("four_rooms", "OMD, lookahead of V* (default loop)", "results/four_rooms_omd"),
    ("four_rooms", "OMD, lookahead of V*, nflows flow", "results/omd/four_rooms_omd_nflows"),
    ("four_rooms", "OMD, greedy of Q^pi (former default)", "results/omd/four_rooms_omd_policy_iteration"),
    ("four_rooms", "pathwise (10 iterations)", "results/four_rooms_pathwise"),
    ("four_rooms", "SAC (10 iterations)", "results/four_rooms_sac"),
    ("four_rooms", "backward (DEDA-FP's default)", "results/four_rooms_backward"),
    ("four_rooms", "exact grid", "results/four_rooms"),
)

ITERATIONS = (1, 5, 10)


def _value(row: dict[str, float], *keys: str) -> float:
    for key in keys:
        value = row.get(key, math.nan)
        if isinstance(value, float) and math.isfinite(value):
            return value
    return math.nan


def responder_rows(runs: Sequence[tuple[str, str, str]] = RUNS, root: Path = Path(".")) -> list[dict[str, object]]:
    """One dict per run: game, responder, run, shortfall at :data:`ITERATIONS`, final k and exploitability, s/BR."""
    rows: list[dict[str, object]] = []
    for game, responder, folder in runs:
        row: dict[str, object] = {"game": game, "responder": responder, "run": folder}
        path = root / folder
        if not (path / "metrics.csv").is_file():
            rows.append(row)
            continue
        metrics = read_metrics(path)
        by_k = {int(m["iteration"]): m for m in metrics}
        exact_responder = responder.startswith("exact")
        for k in ITERATIONS:
            shortfall = _value(by_k.get(k, {}), "theory/br_shortfall", "br/shortfall")
            row[f"shortfall_{k}"] = 0.0 if exact_responder and k in by_k else shortfall
        last = metrics[-1]
        row["final_k"] = int(last["iteration"])
        row["final_exploitability"] = _value(last, "fp/exploitability", "fp/grid_exploitability")
        seconds = [_value(m, "time/best_response", "time/mirror_step") for m in metrics[1:]]
        seconds = [s for s in seconds if math.isfinite(s)]
        row["seconds_per_br"] = statistics.median(seconds) if seconds else math.nan
        rows.append(row)
    return rows


def _cell(value: object, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.{digits}g}"


def markdown(rows: Sequence[dict[str, object]]) -> str:
    """The rows as a markdown table."""
    head = ("| game | responder | shortfall k = 1 | k = 5 | k = 10 | final exploitability (k) | s per best response "
            "(median) | run |\n|---|---|---:|---:|---:|---:|---:|---|\n")
    lines = [f"| {r['game']} | {r['responder']} | " + " | ".join(_cell(r.get(f"shortfall_{k}")) for k in ITERATIONS)
             + f" | {_cell(r.get('final_exploitability'))} ({r.get('final_k', '–')}) | "
             f"{_cell(r.get('seconds_per_br'))} | `{r['run']}` |" for r in rows]
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="results/best_response/runs.md", help="markdown file written")
    args = parser.parse_args(argv)
    text = markdown(responder_rows())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(text, Path(args.out))
    print(text, end="")


if __name__ == "__main__":
    main()
