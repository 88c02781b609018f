"""Solving a grid reference once and caching its equilibrium flow (small npz + json) under ``results/reference``.

The cache holds what learned models are compared with: the equilibrium's flow of cell masses and the
solver's exploitability history. The policy itself (``[T, S, A]``, several MB) is not stored; the
flow fixes the rewards, so a best response to it is one backward pass away.

Usage::

    grid = build_grid(FourRoomsGame(), default_grid_config("four_rooms"))
    solution = cached_solution(grid, "omd") or solve(grid, "omd", iterations=300)
    save_solution(solution, "results/reference")
    flow = solution.population(grid)                     # a PopulationModel (piecewise constant)
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dedafp.reference.grid import GridFictitiousPlay, GridIterate, GridMFG, GridMirrorDescent, GridPopulation

METHODS = ("omd", "fp")
DEFAULT_DIRECTORY = Path("results/reference")


def _jsonable(value: Any) -> Any:
    """Dataclass fields as JSON types (tuples become lists), so saved and live configs compare equal."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class GridSolution:
    """A grid solver's result.

    Attributes:
        game: the game's name.
        game_config: the game's config fields (JSON types).
        grid_config: the grid's config fields.
        method: "omd" or "fp".
        iterations: updates done.
        learning_rate: OMD's learning rate (None for fictitious play).
        mass: the final policy's flow, ``[T+1, S]``.
        cell_coords: integer coordinates of the states' cells, ``[S, d]``.
        history: one :class:`GridIterate` per iteration, the initial policy first.
        seconds: wall time of the solve (kernel build excluded).
    """

    game: str
    game_config: dict[str, Any]
    grid_config: dict[str, Any]
    method: str
    iterations: int
    learning_rate: float | None
    mass: np.ndarray
    cell_coords: np.ndarray
    history: tuple[GridIterate, ...]
    seconds: float

    @property
    def exploitability(self) -> float:
        """Exact exploitability of the final policy."""
        return self.history[-1].exploitability

    @property
    def stem(self) -> str:
        """File name stem: ``<game>-<cells>c<velocities>v-<method>``."""
        return f"{self.game}-{self.grid_config['cells']}c{self.grid_config['velocities']}v-{self.method}"

    def matches(self, grid: GridMFG) -> bool:
        """Whether this solution was computed for exactly this game and grid configuration."""
        return (self.game == grid.game.name
                and self.game_config == _jsonable(dataclasses.asdict(grid.game.config))
                and self.grid_config == _jsonable(dataclasses.asdict(grid.config))
                and np.array_equal(self.cell_coords, grid.cell_coords))

    def population(self, grid: GridMFG) -> GridPopulation:
        """The flow as a population model on ``grid`` (which must match)."""
        if not self.matches(grid):
            raise ValueError(f"solution {self.stem} was computed for another game or grid configuration")
        return grid.population(self.mass)


def solve(grid: GridMFG, method: str = "omd", iterations: int = 300, learning_rate: float = 1.0,
          callback: Callable[[GridIterate], None] | None = None) -> GridSolution:
    """Run fictitious play ("fp") or online mirror descent ("omd") for ``iterations`` updates.

    ``callback`` receives every record, the initial policy's first (for progress display).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    started = time.perf_counter()
    solver = GridMirrorDescent(grid, learning_rate) if method == "omd" else GridFictitiousPlay(grid)
    history = [solver.evaluate()]
    if callback is not None:
        callback(history[-1])
    for _ in range(iterations):
        history.append(solver.iteration())
        if callback is not None:
            callback(history[-1])
    return GridSolution(
        game=grid.game.name, game_config=_jsonable(dataclasses.asdict(grid.game.config)),
        grid_config=_jsonable(dataclasses.asdict(grid.config)), method=method, iterations=iterations,
        learning_rate=float(learning_rate) if method == "omd" else None, mass=solver.mass.copy(),
        cell_coords=grid.cell_coords.copy(), history=tuple(history), seconds=time.perf_counter() - started)


_HISTORY_FIELDS = tuple(f.name for f in dataclasses.fields(GridIterate))


def save_solution(solution: GridSolution, directory: str | Path = DEFAULT_DIRECTORY) -> Path:
    """Write ``<stem>.npz`` (flow, cells, history) and ``<stem>.json`` (configs, summary) under ``directory``.

    Returns the npz path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{solution.stem}.npz"
    history = {f"history_{name}": np.array([getattr(r, name) for r in solution.history]) for name in _HISTORY_FIELDS}
    np.savez_compressed(path, mass=solution.mass, cell_coords=solution.cell_coords.astype(np.int16), **history)
    checkpoints = sorted({0, 10, 20, 50, 100, 200, 300, 500, 1000, solution.iterations} & set(
        range(len(solution.history))))
    meta = {
        "game": solution.game, "game_config": solution.game_config, "grid_config": solution.grid_config,
        "method": solution.method, "iterations": solution.iterations, "learning_rate": solution.learning_rate,
        "exploitability": solution.exploitability, "seconds": solution.seconds,
        "exploitability_at": {str(k): solution.history[k].exploitability for k in checkpoints},
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return path


def load_solution(path: str | Path) -> GridSolution:
    """Read a solution written by :func:`save_solution` (give the npz or json path)."""
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    with np.load(path.with_suffix(".npz")) as arrays:
        mass, cells = arrays["mass"], arrays["cell_coords"].astype(np.int64)
        columns = [arrays[f"history_{name}"].tolist() for name in _HISTORY_FIELDS]
    history = tuple(GridIterate(int(k), *values) for k, *values in zip(*columns, strict=True))
    return GridSolution(
        game=meta["game"], game_config=meta["game_config"], grid_config=meta["grid_config"], method=meta["method"],
        iterations=meta["iterations"], learning_rate=meta["learning_rate"], mass=mass, cell_coords=cells,
        history=history, seconds=meta["seconds"])


def cached_solution(grid: GridMFG, method: str = "omd",
                    directory: str | Path = DEFAULT_DIRECTORY) -> GridSolution | None:
    """The saved solution of ``grid`` by ``method`` if one exists and matches the configs exactly, else None."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    stem = f"{grid.game.name}-{grid.config.cells}c{grid.config.velocities}v-{method}"
    path = Path(directory) / f"{stem}.npz"
    if not path.exists() or not path.with_suffix(".json").exists():
        return None
    solution = load_solution(path)
    return solution if solution.matches(grid) else None
