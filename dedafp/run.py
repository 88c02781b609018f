"""Run folders: training with a checkpoint after every iteration, resuming, and loading results.

A run folder holds::

    config.yaml              the resolved configuration (written first)
    metrics.csv              one row per iteration k = 0..K (namespaced columns)
    checkpoints/iter_NNN.pt  the loop's full state after iteration NNN (RNG states included)
    average_policy.pt        the latest average policy      (loadable with :func:`load_run`)
    population.pt            the latest population flow
    summary.json             final metrics and wall-clock

Usage::

    from dedafp.run import train, load_run
    run = train(load_config("lq1d"), "runs/lq1d")        # or: dedafp train lq1d --out runs/lq1d
    run = load_run("runs/lq1d")
    actions = run.average_policy.predict(t=3, x=torch.zeros(10, 1))     # [10, 1]
    log_density = run.population.log_prob(torch.zeros(10, 1), t=3)       # [10]
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from dedafp.agents.average_policy import AveragePolicy
from dedafp.agents.mixture import MixturePolicy
from dedafp.agents.policy import Policy
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.fictitious_play import FictitiousPlay, IterationRecord
from dedafp.games import make_game
from dedafp.population import PopulationModel, population_from_state_dict

CHECKPOINTS = "checkpoints"


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save through a temporary file, so a crash never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _atomic_write(text: str, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of the last finished iteration, or None."""
    found = sorted(Path(run_dir, CHECKPOINTS).glob("iter_*.pt"))
    return found[-1] if found else None


def write_metrics(history: list[IterationRecord], path: Path) -> None:
    """Write one CSV row per iteration (columns: ``iteration`` then the sorted metric names)."""
    columns = sorted({key for record in history for key in record.metrics})
    rows = [",".join(["iteration", *columns])]
    for record in history:
        rows.append(",".join([str(record.iteration)] + [repr(record.metrics.get(c, float("nan")))
                                                         for c in columns]))
    _atomic_write("\n".join(rows) + "\n", path)


def read_metrics_file(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV as dicts of floats (``iteration`` included)."""
    with open(path) as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.csv``."""
    return read_metrics_file(Path(run_dir, "metrics.csv"))


def train(config: RunConfig, run_dir: str | Path, resume: bool = False,
          callback: Callable[[IterationRecord], None] | None = None) -> Run:
    """Train DEDA-FP for ``config.fp.iterations`` iterations, checkpointing into ``run_dir``.

    With ``resume=True`` the run continues from its last checkpoint (``config`` may raise
    ``fp.iterations``; everything else must match what the run was started with).
    ``callback`` receives every iteration's record (including iteration 0).
    """
    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"cannot resume: {run_dir / 'config.yaml'} does not exist")
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    _atomic_write(yaml.safe_dump(config.to_dict(), sort_keys=False), run_dir / "config.yaml")

    loop = FictitiousPlay(config)
    started = time.time()
    previous_seconds = 0.0
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location=config.device, weights_only=False)
        loop.load_state_dict(state)
        previous_seconds = state.get("wall_clock", 0.0)
    while loop.completed < config.fp.iterations:
        record = loop.initialise() if not loop.history else loop.iteration()
        if callback is not None:
            callback(record)
        state = loop.state_dict()
        state["wall_clock"] = previous_seconds + time.time() - started
        _atomic_save(state, run_dir / CHECKPOINTS / f"iter_{loop.completed:03d}.pt")
        _save_outputs(loop, run_dir, state["wall_clock"])
    return load_run(run_dir)


def _save_outputs(loop: FictitiousPlay, run_dir: Path, wall_clock: float) -> None:
    # The final outputs are for use, not for resuming (checkpoints are): no optimizer states, a third of the size.
    policy = loop.average_policy
    if isinstance(policy, AveragePolicy):
        policy.save(str(run_dir / "average_policy.pt.tmp"), optimizer=False)
        os.replace(run_dir / "average_policy.pt.tmp", run_dir / "average_policy.pt")
    else:   # Algo 1: the average is the mixture of the stored best responses
        _atomic_save({"best_responses": policy.policies}, run_dir / "average_policy.pt")
    population = loop.population.state_dict()
    population.pop("optimizer", None)
    _atomic_save(population, run_dir / "population.pt")
    write_metrics(loop.history, run_dir / "metrics.csv")
    summary = {"iterations": loop.completed, "wall_clock_seconds": wall_clock,
               "final": loop.history[-1].metrics, "torch_threads": torch.get_num_threads()}
    _atomic_write(json.dumps(summary, indent=2), run_dir / "summary.json")


class Run:
    """A finished (or interrupted) run folder, loaded for use.

    Attributes:
        path: the folder.
        config: its resolved :class:`RunConfig`.
        game: the game it was trained on.
        average_policy: the final average policy (``distribution(t, x)``; an :class:`AveragePolicy`
            also has ``predict(t, x)``; Algo 1 runs give a :class:`MixturePolicy`).
        population: the final population model (``sample``, ``log_prob``, ``mean``).
    """

    def __init__(self, path: Path, config: RunConfig, game: MeanFieldGame, average_policy: Policy,
                 population: PopulationModel) -> None:
        self.path = path
        self.config = config
        self.game = game
        self.average_policy = average_policy
        self.population = population

    def metrics(self) -> list[dict[str, float]]:
        """Per-iteration metrics (rows of ``metrics.csv``)."""
        return read_metrics(self.path)


def load_run(run_dir: str | Path, device: torch.device | str = "cpu") -> Run:
    """Load a run folder's config, game, final average policy and population model."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    config = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    game = make_game(config.env, config.game)
    if not (run_dir / "average_policy.pt").exists():
        raise FileNotFoundError(f"{run_dir} has no finished iteration yet (no average_policy.pt)")
    saved = torch.load(run_dir / "average_policy.pt", map_location=device, weights_only=False)
    policy = (MixturePolicy(saved["best_responses"]) if "best_responses" in saved
              else AveragePolicy.load(str(run_dir / "average_policy.pt"), game, device))
    population = population_from_state_dict(
        torch.load(run_dir / "population.pt", map_location=device, weights_only=False), str(device))
    return Run(run_dir, config, game, policy, population)
