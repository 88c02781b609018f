"""Run folders: training with a checkpoint after every iteration, resuming, and loading results.

A run folder holds::

    config.yaml              the resolved configuration (written first)
    game_source.json         where the game came from (a built-in, a file with its sha256, ...)
    metrics.csv              one row per iteration k = 0..K (namespaced columns)
    checkpoints/iter_NNN.pt  the algorithm's full state after iteration NNN (RNG states included)
    checkpoints/SHA256SUMS   the checkpoints' SHA-256 digests (``sha256sum -c`` format), checked on resume
    average_policy.pt        the latest average policy      (loadable with :func:`load_run`)
    population.pt            the latest population model
    summary.json             final metrics and wall-clock
    tensorboard/             the metrics as TensorBoard scalars (``tensorboard=True``)
    .dedafp.lock(.json)      while a writer works: its lock and who holds it (pid, host, start time)

Guarantees: one writer at a time (a second is refused naming the holder); a fresh start never
writes into a folder that is not empty or an unfinished run of the same config; resume continues the
checkpoint's config exactly (only ``fp.iterations`` may grow) from the newest checkpoint whose SHA-256
matches, moving corrupted ones aside; a refused call writes nothing.

Usage::

    from dedafp import train, load_run, load_config
    run = train(load_config("lq1d"), "runs/lq1d")        # or: dedafp train lq1d --out runs/lq1d
    run = load_run("runs/lq1d")
    actions = run.average_policy.predict(t=3, x=torch.zeros(10, 1))     # [10, 1]
    log_density = run.population.log_prob(torch.zeros(10, 1), t=3)       # [10]
"""

from __future__ import annotations

import json
import logging
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
from dedafp.common.checksums import checksum_problem, read_manifest, record_checksum, sha256_of
from dedafp.common.files import atomic_save, atomic_write, read_csv_rows, write_json
from dedafp.common.lock import LOCK_FILES, RunLock, describe_holder
from dedafp.common.memory import check_fits
from dedafp.common.threads import configure_threads
from dedafp.config import RunConfig, config_differences, read_run_config
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import GameSource, resolve_game
from dedafp.population import PopulationModel, population_from_state_dict

__all__ = ["train", "load_run", "Run", "read_metrics", "read_metrics_file", "write_metrics", "latest_checkpoint",
           "CHECKPOINTS", "load_checkpoint"]

CHECKPOINTS = "checkpoints"
GAME_SOURCE = "game_source.json"
_logger = logging.getLogger(__name__)


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
    try:
        recorded = json.loads(recorded_path.read_text()) if recorded_path.exists() else None
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {recorded_path}: {' '.join(str(error).split())}") from None
    if recorded is not None and not isinstance(recorded, dict):
        raise ValueError(f"{recorded_path} must hold a JSON object, got {type(recorded).__name__}")
    if game is not None:
        source = {"reference": config.env, "name": game.name,
                  "python_object": f"{type(game).__module__}.{type(game).__qualname__}"}
        return game, source
    if recorded is not None and "python_object" in recorded:
        raise ValueError(f"{run_dir} was trained on a game passed as a Python object ({recorded['python_object']}); "
                         f"pass it again: game=...")
    try:
        source_record = None if recorded is None else GameSource(**recorded)
    except TypeError as error:
        raise ValueError(f"{recorded_path} is not a game source record: {error}") from None
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
          progress: Callable[[str], None] | None = None, tensorboard: bool = False,
          notify: Callable[[str], None] | None = None) -> Run:
    """Train ``config.algorithm`` for ``config.fp.iterations`` iterations, checkpointing into ``run_dir``.

    Args:
        config: the run's configuration.
        run_dir: the run folder. Without ``resume`` it must not exist, be empty, or hold an unfinished
            run of exactly this config (which is then continued); anything else is refused
            (``FileExistsError``) and left untouched.
        resume: continue from the last good checkpoint. The checkpoint's config is the run's:
            ``config`` may raise ``fp.iterations`` (never below the iterations done) and must match
            it in everything else, as must ``run_dir/config.yaml`` (``ValueError`` naming the fields).
        callback: receives every iteration's record (iteration 0 included).
        game: a game object to train on instead of the one ``config.env`` names (pass it again to
            :func:`load_run` and on resume).
        progress: receives the name of each phase of an iteration as it starts.
        tensorboard: also write the metrics as TensorBoard scalars under ``run_dir/tensorboard``.
        notify: receives one-line notices (a stale lock recovered, a corrupted checkpoint skipped,
            an unfinished run continued); default: the ``dedafp.run`` logger.

    The folder is locked for the whole call (:class:`~dedafp.common.lock.RunLock`): a second writer
    fails at once (``RunLockedError``, a ``RuntimeError``) naming the holder. Every checkpoint's
    SHA-256 is recorded in ``checkpoints/SHA256SUMS``. Everything that can be checked (config, game,
    device, memory, folder) is checked before anything is written: a refused call leaves no folder
    behind. Sets torch's CPU threads (:func:`~dedafp.common.threads.configure_threads`) like the CLI.
    """
    configure_threads()
    run_dir = Path(run_dir)
    say = notify if notify is not None else _logger.info
    _check_device(config.device)
    if resume and not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"cannot resume: {run_dir / 'config.yaml'} does not exist")
    if (run_dir / LOCK_FILES[0]).exists():       # a writer at work is the first thing to say
        RunLock(run_dir).check_free()
    if not resume:
        _check_writable_target(run_dir)
        _continue_or_refuse(run_dir, config, lambda message: None)   # refuse before touching anything
    game, source = _game_of(config, run_dir, game)
    check_fits(estimate_run_bytes(config, game), f"this run ({_largest_population(config)})",
               "lower it or the other fp.*_agents", config.device)
    algorithm = make_algorithm(config, game)
    algorithm.progress = progress
    created = _make_folder(run_dir)
    lock_existed = (run_dir / LOCK_FILES[0]).exists()
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except BaseException:
        _remove_stub(created, run_dir, lock_existed)
        raise
    writer = None
    written = False
    try:
        if lock.recovered is not None:
            say(f"recovered the stale lock of {run_dir} left by {describe_holder(lock.recovered)}, "
                f"which is no longer running")
        if not resume:
            resume = _continue_or_refuse(run_dir, config, say)
        checkpoint, state, damaged = _resume_point(run_dir, config) if resume else (None, None, [])
        if resume:
            _check_resume_config(run_dir, config, checkpoint, state)
        for path, reason in damaged:           # set aside only once the resume is accepted
            path.replace(path.with_name(path.name + ".corrupt"))
            say(f"checkpoint {path} cannot be trusted ({reason}): moved aside to {path.name}.corrupt; "
                f"resuming from {checkpoint.name}")
        (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
        written = True
        atomic_write(yaml.safe_dump(config.to_dict(), sort_keys=False), run_dir / "config.yaml")
        write_json(source, run_dir / GAME_SOURCE)

        started = time.time()
        previous_seconds = 0.0
        if checkpoint is not None:
            try:
                algorithm.load_state_dict(state)
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise ValueError(f"checkpoint {checkpoint} does not fit this run's algorithm: "
                                 f"{type(error).__name__}: {error}") from None
            previous_seconds = state.get("wall_clock", 0.0)
        writer = _tensorboard_writer(run_dir) if tensorboard else None
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
            _save_checkpoint(state, run_dir / CHECKPOINTS / f"iter_{algorithm.completed:03d}.pt")
            _save_outputs(algorithm, run_dir, state["wall_clock"])
    except BaseException:
        if not written:
            lock.release()
            _remove_stub(created, run_dir, lock_existed)
        raise
    finally:
        if writer is not None:
            writer.close()
        lock.release()
    return load_run(run_dir, game=game if "python_object" in source else None)


def _check_device(device: str) -> None:
    if str(device).startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available here; use --device cpu")
        index = torch.device(device).index
        if index is not None and index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def _largest_population(config: RunConfig) -> str:
    name = max(("br_agents", "population_agents", "eval_agents"), key=lambda n: getattr(config.fp, n))
    return f"fp.{name} = {getattr(config.fp, name)}"


def estimate_run_bytes(config: RunConfig, game: MeanFieldGame) -> int:
    """A lower bound of the bytes a run allocates: the largest simulated population's trajectories
    (float32 states, actions, rewards over T+1 steps) and one batch of hidden activations, plus the
    behaviour-cloning buffer of every iteration's ``(t, x, a)`` samples."""
    horizon = int(getattr(game, "horizon", 1))
    per_step = int(getattr(game, "state_dim", 1)) + int(getattr(game, "action_dim", 1)) + 2
    widest = max(config.best_response.hidden, config.average_policy.hidden, config.flow.hidden)
    agents = max(config.fp.br_agents, config.fp.population_agents, config.fp.eval_agents)
    simulation = agents * ((horizon + 1) * per_step + 2 * widest) * 4
    buffer = config.fp.br_agents * horizon * (per_step + 1) * 4 * (config.fp.iterations + 1)
    return simulation + buffer


def _check_writable_target(run_dir: Path) -> None:
    """Refuse, before anything is written, an ``--out`` that is a file or lies under one."""
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == run_dir else f"lies under {parent}, which is a file"
                raise FileExistsError(f"cannot create the run folder {run_dir}: it {where}; choose another --out")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot create the run folder {run_dir}: {parent} is not writable; "
                                      f"choose another --out")
            return


def _make_folder(run_dir: Path) -> Path | None:
    """Create ``run_dir`` (and parents); the topmost folder this created, or None if it existed."""
    top = None
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists():
            break
        top = parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"cannot create the run folder {run_dir}: {error.strerror or error}; "
                              f"choose another --out") from None
    return top


def _remove_stub(created: Path | None, run_dir: Path, lock_existed: bool) -> None:
    """Remove the lock file (unless it was there before) and the folders this call created, if they
    hold nothing else."""
    if not lock_existed:
        (run_dir / LOCK_FILES[0]).unlink(missing_ok=True)
    if created is None:
        return
    for folder in [run_dir, *run_dir.parents]:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return


def _folder_contents(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name not in LOCK_FILES) if run_dir.is_dir() else []


def _completed(run_dir: Path) -> int:
    """Iterations done: the newest checkpoint's number or ``summary.json``'s count, whichever is
    larger (checkpoints may have been pruned); -1 if neither exists."""
    found = latest_checkpoint(run_dir)
    done = -1 if found is None else int(found.stem.removeprefix("iter_"))
    path = run_dir / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        summary = {}      # damaged or another tool's: the checkpoints tell
    iterations = summary.get("iterations") if isinstance(summary, dict) else None
    if isinstance(iterations, int) and not isinstance(iterations, bool):
        done = max(done, iterations)
    return done


def _continue_or_refuse(run_dir: Path, config: RunConfig, say: Callable[[str], None]) -> bool:
    """Whether a fresh start in ``run_dir`` continues an unfinished run of the same config; raises
    ``FileExistsError`` for any other non-empty folder."""
    contents = _folder_contents(run_dir)
    if not contents:
        return False
    if "config.yaml" not in contents:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise FileExistsError(f"{run_dir} is not empty and holds no dedafp run ({shown}); choose another --out")
    try:
        stored = read_run_config(run_dir)
    except (ValueError, OSError) as error:
        raise FileExistsError(f"{run_dir} already holds a run whose config cannot be read ({error}); "
                              f"choose another --out") from None
    done = _completed(run_dir)
    differences = config_differences(stored.to_dict(), config.to_dict())
    if not differences and done < config.fp.iterations:
        say(f"{run_dir} holds an unfinished run of this config ({max(done, 0)} of {config.fp.iterations} "
            f"iterations done): continuing it")
        return True
    state = "finished" if done >= stored.fp.iterations else f"{max(done, 0)} of {stored.fp.iterations} iterations done"
    why = "" if not differences else f", with another config: {', '.join(d.split(':')[0] for d in differences)}"
    raise FileExistsError(f"{run_dir} already holds a run ({state}{why}); use --resume {run_dir} "
                          f"[--iterations K] to continue it or choose another --out")


def _resume_point(run_dir: Path, config: RunConfig
                  ) -> tuple[Path | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    """The newest checkpoint that passes its checksum and loads, its state, and the newer ones that
    failed with the reason; ``(None, None, [])`` if the run has no checkpoint yet, ``ValueError`` if
    none can be trusted."""
    folder = run_dir / CHECKPOINTS
    found = sorted(folder.glob("iter_*.pt"))
    if not found:
        return None, None, []
    manifest = read_manifest(folder)
    bad: list[tuple[Path, str]] = []
    for path in reversed(found):
        problem = checksum_problem(path, manifest)
        if problem is None:
            try:
                state = load_checkpoint(path, config.device)
            except ValueError as error:
                problem = str(error).removeprefix(f"cannot read checkpoint {path}: ")
            else:
                if not (isinstance(state, dict) and "history" in state and "config" in state):
                    problem = "not a dedafp checkpoint"
        if problem is not None:
            bad.append((path, problem))
            continue
        return path, state, bad
    reasons = "; ".join(f"{p.name}: {r}" for p, r in bad)
    raise ValueError(f"cannot resume {run_dir}: no checkpoint can be trusted ({reasons}); "
                     f"start a new run in another --out")


def _without_iterations(tree: dict[str, Any]) -> dict[str, Any]:
    return {**tree, "fp": {k: v for k, v in tree.get("fp", {}).items() if k != "iterations"}}


def _check_resume_config(run_dir: Path, config: RunConfig, checkpoint: Path | None,
                         state: dict[str, Any] | None) -> None:
    """The checkpoint's config is the run's: ``config.yaml`` and ``config`` must agree with it (only
    ``fp.iterations`` may grow)."""
    on_disk = read_run_config(run_dir)
    if checkpoint is None or state is None:
        truth, where = on_disk, run_dir / "config.yaml"
    else:
        try:
            truth = RunConfig.from_dict(state["config"])
        except (ValueError, TypeError) as error:
            raise ValueError(f"checkpoint {checkpoint} holds a config this version cannot read: {error}") from None
        where = checkpoint
        differences = config_differences(_without_iterations(on_disk.to_dict()), _without_iterations(truth.to_dict()))
        if differences:
            raise ValueError(f"{run_dir / 'config.yaml'} disagrees with checkpoint {checkpoint.name} "
                             f"({'; '.join(differences)}, config.yaml first): the checkpoint's config is the run's; "
                             f"restore config.yaml or start a new run")
    differences = config_differences(_without_iterations(config.to_dict()), _without_iterations(truth.to_dict()))
    if differences:
        raise ValueError(f"resuming cannot change the run's config ({'; '.join(differences)}, requested first; "
                         f"from {where}); only fp.iterations may grow: start a new run to change it")
    # Iterations the run had done, a corrupted newest checkpoint included: never shrink the run.
    done = max(0 if state is None else len(state["history"]) - 1, _completed(run_dir))
    if config.fp.iterations < done:
        raise ValueError(f"fp.iterations = {config.fp.iterations} is below the {done} iterations {run_dir} has "
                         f"completed; give --iterations >= {done}")


def _save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint: to a temporary file, its checksum into SHA256SUMS, then the final name."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    record_checksum(path.parent, path.name, sha256_of(tmp))
    os.replace(tmp, path)


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
        """The run's algorithm restored from ``checkpoint`` (e.g. to re-evaluate an iteration);
        ``ValueError`` naming the file if it fails its recorded SHA-256 or cannot be restored."""
        checkpoint = Path(checkpoint)
        problem = checksum_problem(checkpoint, read_manifest(checkpoint.parent))
        if problem is not None:
            raise ValueError(f"checkpoint {checkpoint} cannot be trusted: {problem}")
        state = load_checkpoint(checkpoint, device)
        algorithm = make_algorithm(self.config, self.game)
        try:
            algorithm.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"checkpoint {checkpoint} does not fit this run: "
                             f"{type(error).__name__}: {error}") from None
        return algorithm


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", game: MeanFieldGame | None = None) -> Run:
    """Load a run folder's config, game, final average policy and population model.

    ``game``: the game object the run was trained on, when it was passed to :func:`train` as one.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    game, _ = _game_of(config, run_dir, game)
    if not (run_dir / "average_policy.pt").exists():
        raise FileNotFoundError(f"{run_dir} has no finished iteration yet (no average_policy.pt)")
    saved = load_checkpoint(run_dir / "average_policy.pt", device)
    try:
        if not isinstance(saved, dict):
            raise TypeError(f"a {type(saved).__name__}, not a dict")
        if "best_responses" in saved:
            policy: Policy = MixturePolicy(saved["best_responses"])
        elif "policy" in saved and not isinstance(saved["policy"], dict):
            policy = saved["policy"]
        else:
            policy = AveragePolicy.load(str(run_dir / "average_policy.pt"), game, device)
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{run_dir / 'average_policy.pt'} is not a policy this run can load: "
                         f"{type(error).__name__}: {error}") from None
    saved = load_checkpoint(run_dir / "population.pt", device)
    try:
        population = population_from_state_dict(saved, str(device))
    except (KeyError, TypeError, AttributeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{run_dir / 'population.pt'} is not a population model: "
                         f"{type(error).__name__}: {error}") from None
    return Run(run_dir, config, game, policy, population)
