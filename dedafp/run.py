"""Run folders: training with a checkpoint after every iteration, resuming, and loading results.

A run folder holds::

    config.yaml              the resolved configuration (written first)
    game_source.json         where the game came from (a built-in, a file with its sha256, ...)
    metrics.csv              one row per iteration k = 0..K (namespaced columns)
    checkpoints/iter_NNN.pt  the algorithm's full state after iteration NNN (RNG states included)
    average_policy.pt        the latest average policy      (loadable with :func:`load_run`)
    population.pt            the latest population model
    summary.json             final metrics and wall-clock
    tensorboard/             the metrics as TensorBoard scalars (``tensorboard=True``)

Usage::

    from dedafp import train, load_run, load_config
    run = train(load_config("lq1d"), "runs/lq1d")        # or: dedafp train lq1d --out runs/lq1d
    run = load_run("runs/lq1d")
    actions = run.average_policy.predict(t=3, x=torch.zeros(10, 1))     # [10, 1]
    log_density = run.population.log_prob(torch.zeros(10, 1), t=3)       # [10]
"""

from __future__ import annotations

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
from dedafp.algorithms import Algorithm, IterationRecord, make_algorithm
from dedafp.common import compat_pickle
from dedafp.common.files import atomic_save, atomic_write, read_csv_rows, write_json
from dedafp.common.threads import configure_threads
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import GameSource, resolve_game
from dedafp.population import PopulationModel, population_from_state_dict

__all__ = ["train", "load_run", "Run", "read_metrics", "read_metrics_file", "write_metrics", "latest_checkpoint",
           "CHECKPOINTS", "load_checkpoint"]

CHECKPOINTS = "checkpoints"
GAME_SOURCE = "game_source.json"


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
    atomic_write("\n".join(rows) + "\n", path)


def read_metrics_file(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics CSV as dicts of floats (``iteration`` included)."""
    return read_csv_rows(path)


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``RUN/metrics.csv``."""
    return read_metrics_file(Path(run_dir, "metrics.csv"))


def _game_of(config: RunConfig, run_dir: Path, game: MeanFieldGame | None) -> tuple[MeanFieldGame, dict[str, Any]]:
    """The run's game and its recorded source: the one given, else what ``config.env`` names (checked
    against ``game_source.json`` when the run folder has one)."""
    recorded_path = run_dir / GAME_SOURCE
    recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else None
    if game is not None:
        source = {"reference": config.env, "name": game.name,
                  "python_object": f"{type(game).__module__}.{type(game).__qualname__}"}
        return game, source
    if recorded is not None and "python_object" in recorded:
        raise ValueError(f"{run_dir} was trained on a game passed as a Python object ({recorded['python_object']}); "
                         f"pass it again: game=...")
    source_record = None if recorded is None else GameSource(**recorded)
    spec, source = resolve_game(config.env, source_record)
    return spec.make(config.game), source.to_dict()


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's state dict (``ValueError`` naming the file if it cannot be read)."""
    try:
        return torch.load(path, map_location=device, weights_only=False, pickle_module=compat_pickle)
    except Exception as error:   # torch raises several types for damaged files
        raise ValueError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None


def train(config: RunConfig, run_dir: str | Path, resume: bool = False,
          callback: Callable[[IterationRecord], None] | None = None, game: MeanFieldGame | None = None,
          progress: Callable[[str], None] | None = None, tensorboard: bool = False) -> Run:
    """Train ``config.algorithm`` for ``config.fp.iterations`` iterations, checkpointing into ``run_dir``.

    Args:
        config: the run's configuration.
        run_dir: the run folder (created; refused if it holds a run unless ``resume``).
        resume: continue from the last checkpoint (``config`` may raise ``fp.iterations``;
            everything else must match what the run was started with).
        callback: receives every iteration's record (iteration 0 included).
        game: a game object to train on instead of the one ``config.env`` names (pass it again to
            :func:`load_run` and on resume).
        progress: receives the name of each phase of an iteration as it starts.
        tensorboard: also write the metrics as TensorBoard scalars under ``run_dir/tensorboard``.

    Sets torch's CPU threads (:func:`~dedafp.common.threads.configure_threads`) like the CLI does.
    """
    configure_threads()
    run_dir = Path(run_dir)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if resume and not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"cannot resume: {run_dir / 'config.yaml'} does not exist")
    if not resume and latest_checkpoint(run_dir) is not None:
        raise FileExistsError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    game, source = _game_of(config, run_dir, game)
    algorithm = make_algorithm(config, game)
    algorithm.progress = progress
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    atomic_write(yaml.safe_dump(config.to_dict(), sort_keys=False), run_dir / "config.yaml")
    write_json(source, run_dir / GAME_SOURCE)

    started = time.time()
    previous_seconds = 0.0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, config.device)
        algorithm.load_state_dict(state)
        previous_seconds = state.get("wall_clock", 0.0)
    writer = _tensorboard_writer(run_dir) if tensorboard else None
    try:
        while algorithm.completed < config.fp.iterations or not algorithm.history:
            record = algorithm.initialise() if not algorithm.history else algorithm.iteration()
            if callback is not None:
                callback(record)
            if writer is not None:
                for key, value in record.metrics.items():
                    writer.add_scalar(key, value, record.iteration)
                writer.flush()
            state = algorithm.state_dict()
            state["wall_clock"] = previous_seconds + time.time() - started
            atomic_save(state, run_dir / CHECKPOINTS / f"iter_{algorithm.completed:03d}.pt")
            _save_outputs(algorithm, run_dir, state["wall_clock"])
    finally:
        if writer is not None:
            writer.close()
    return load_run(run_dir, game=game if "python_object" in source else None)


def _tensorboard_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard logging needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _save_outputs(algorithm: Algorithm, run_dir: Path, wall_clock: float) -> None:
    # The final outputs are for use, not for resuming (checkpoints are): no optimizer states, a third of the size.
    policy = algorithm.average_policy
    if isinstance(policy, AveragePolicy):
        policy.save(str(run_dir / "average_policy.pt.tmp"), optimizer=False)
        os.replace(run_dir / "average_policy.pt.tmp", run_dir / "average_policy.pt")
    elif isinstance(policy, MixturePolicy):   # Algo 1: the average is the mixture of the stored best responses
        atomic_save({"best_responses": policy.policies}, run_dir / "average_policy.pt")
    else:                                     # any other algorithm's policy object, pickled whole
        atomic_save({"policy": policy}, run_dir / "average_policy.pt")
    population = algorithm.population.state_dict()
    population.pop("optimizer", None)
    atomic_save(population, run_dir / "population.pt")
    write_metrics(algorithm.history, run_dir / "metrics.csv")
    summary = {"algorithm": algorithm.name, "iterations": algorithm.completed, "wall_clock_seconds": wall_clock,
               "final": algorithm.history[-1].metrics, "torch_threads": torch.get_num_threads()}
    write_json(summary, run_dir / "summary.json")


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

    def checkpoints(self) -> list[Path]:
        """The checkpoints of the run, in iteration order."""
        return sorted((self.path / CHECKPOINTS).glob("iter_*.pt"))

    def load_algorithm(self, checkpoint: Path, device: torch.device | str = "cpu") -> Algorithm:
        """The run's algorithm restored from ``checkpoint`` (e.g. to re-evaluate an iteration)."""
        algorithm = make_algorithm(self.config, self.game)
        algorithm.load_state_dict(load_checkpoint(checkpoint, device))
        return algorithm


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", game: MeanFieldGame | None = None) -> Run:
    """Load a run folder's config, game, final average policy and population model.

    ``game``: the game object the run was trained on, when it was passed to :func:`train` as one.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    config = RunConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    game, _ = _game_of(config, run_dir, game)
    if not (run_dir / "average_policy.pt").exists():
        raise FileNotFoundError(f"{run_dir} has no finished iteration yet (no average_policy.pt)")
    saved = load_checkpoint(run_dir / "average_policy.pt", device)
    if "best_responses" in saved:
        policy: Policy = MixturePolicy(saved["best_responses"])
    elif "policy" in saved and not isinstance(saved["policy"], dict):
        policy = saved["policy"]
    else:
        policy = AveragePolicy.load(str(run_dir / "average_policy.pt"), game, device)
    population = population_from_state_dict(load_checkpoint(run_dir / "population.pt", device), str(device))
    return Run(run_dir, config, game, policy, population)
