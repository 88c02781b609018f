"""``dedafp reference``: solve a density-coupled game on a grid and cache its equilibrium.

    dedafp reference four_rooms|beach_bar [--method omd|fp] [--iterations K] [--cells N]
                     [--velocities V] [--learning-rate LR] [--out DIR] [--set key=value ...]

``--set`` overrides a game parameter (``--set sigma=0.3``, ``--set init_high=[0.2,0.2]``) or, with a
``grid.`` prefix, a grid parameter (``--set grid.source_points=3``). Writes ``<game>-<N>c<V>v-<method>``
``.npz``/``.json`` and two figures under ``--out`` (default ``results/reference``). Until the main CLI
wires it in, run it as ``python -m dedafp.reference.cli four_rooms ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from dedafp.envs.registry import game_spec, make_game, registered_games
from dedafp.reference.grid import GridIterate, GridMFG, build_grid, default_grid_config
from dedafp.reference.grid_store import DEFAULT_DIRECTORY, METHODS, GridSolution, save_solution, solve

DEFAULT_ITERATIONS = {"omd": 300, "fp": 50}
#: OMD learning rates that converged fastest without oscillating on the default grids (the beach bar's
#: rewards are ~10x smaller than four-rooms').
DEFAULT_LEARNING_RATES = {"four_rooms": 1.0, "beach_bar": 10.0}


def reference_games() -> tuple[str, ...]:
    """The registered games that declare a reference grid (``GameSpec.grid``)."""
    return tuple(name for name in registered_games() if game_spec(name).grid is not None)


def make_reference_game(name: str, overrides: dict[str, Any] | None = None):
    """The game ``name`` (one with a reference grid) with config ``overrides`` (validated)."""
    if name not in reference_games():
        raise ValueError(f"unknown reference game {name!r}; allowed: {reference_games()}")
    return make_game(name, overrides)

def parse_overrides(items: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``key=value`` strings into game and ``grid.``-prefixed overrides; values are YAML."""
    game, grid = {}, {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        value = yaml.safe_load(raw)
        if isinstance(value, list):
            value = tuple(value)
        if key.startswith("grid."):
            grid[key.removeprefix("grid.")] = value
        else:
            game[key] = value
    return game, grid


def _format(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"


def plot_solution(grid: GridMFG, solution: GridSolution, directory: Path) -> list[Path]:
    """Density snapshots and the exploitability curve of ``solution``; returns the written PNG paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    T = grid.horizon
    density = solution.mass / grid.cell_area
    times = sorted({0, T // 4, T // 2, 3 * T // 4, T})
    if grid.dim == 2:
        n = grid.config.cells
        fig, axes = plt.subplots(1, len(times), figsize=(3.2 * len(times), 3.2), constrained_layout=True)
        for ax, t in zip(axes, times, strict=True):
            image = np.full(n * n, np.nan)
            image[grid.cell_coords[:, 0] + n * grid.cell_coords[:, 1]] = density[t]
            shown = ax.imshow(np.log10(np.maximum(image.reshape(n, n), 1e-3)), origin="lower", extent=(0, 1, 0, 1),
                              cmap="viridis", vmin=-3, vmax=max(1.0, float(np.log10(density.max()))))
            ax.set_title(f"t = {t}")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(shown, ax=axes, shrink=0.8, label="log10 density")
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
        for t in times:
            ax.plot(grid.centres[:, 0], density[t], label=f"t = {t}")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.legend()
    fig.suptitle(f"{solution.game}: flow after {solution.iterations} {solution.method} iterations\n"
                 f"exploitability {_format(solution.exploitability)}, {grid.config.cells} cells", fontsize="medium")
    paths.append(directory / f"{solution.stem}-density.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    values = np.array([record.exploitability for record in solution.history])
    ax.semilogy(np.arange(len(values)), np.maximum(values, 1e-6))
    ax.set_xlabel("iteration")
    ax.set_ylabel("exact grid exploitability")
    ax.set_title(f"{solution.game}: {solution.method}")
    ax.grid(alpha=0.3)
    paths.append(directory / f"{solution.stem}-exploitability.png")
    fig.savefig(paths[-1], dpi=80)
    plt.close(fig)
    return paths


def handler(args: argparse.Namespace) -> int:
    """Run ``dedafp reference``; returns the exit code."""
    torch.set_num_threads(getattr(args, "threads", 1) or 1)
    game_overrides, grid_overrides = parse_overrides(args.set)
    game = make_reference_game(args.game, game_overrides)
    if args.cells is not None:
        grid_overrides["cells"] = args.cells
    if args.velocities is not None:
        grid_overrides["velocities"] = args.velocities
    grid_config = default_grid_config(args.game, **grid_overrides)
    iterations = DEFAULT_ITERATIONS[args.method] if args.iterations is None else args.iterations
    out = Path(args.out)
    print(f"dedafp reference {args.game}: {args.method}, {iterations} iterations, grid "
          f"{dataclasses.asdict(grid_config)}")
    grid = build_grid(game, grid_config)
    print(f"kernel: {grid.num_states} states x {grid.num_actions} velocities, {grid.kernel.nnz} entries, "
          f"built in {grid.build_seconds:.1f} s")
    every = args.every if args.every is not None else (1 if args.method == "fp" else 10)
    started = time.perf_counter()

    def show(record: GridIterate) -> None:
        if record.iteration % every == 0 or record.iteration == iterations:
            print(f"{record.iteration:>5}  exploitability {_format(record.exploitability):>10}  value "
                  f"{_format(record.policy_value):>10}  ({time.perf_counter() - started:.0f} s)", flush=True)

    learning_rate = DEFAULT_LEARNING_RATES.get(args.game, 1.0) if args.learning_rate is None else args.learning_rate
    solution = solve(grid, args.method, iterations, learning_rate, callback=show)
    path = save_solution(solution, out)
    print(f"exploitability {_format(solution.exploitability)} after {iterations} iterations "
          f"({solution.seconds:.0f} s); wrote {path} and {path.with_suffix('.json')}")
    if not args.no_figures:
        for figure in plot_solution(grid, solution, out):
            print(figure)
    return 0


def add_parsers(subparsers: Any) -> None:
    """Add the ``reference`` subcommand to an ``argparse`` subparsers object."""
    parser = subparsers.add_parser("reference", help="solve four_rooms or beach_bar on a grid; cache the equilibrium")
    parser.add_argument("game", help="a game with a reference grid: " + ", ".join(reference_games()))
    parser.add_argument("--method", choices=METHODS, default="omd", help="online mirror descent or fictitious play")
    parser.add_argument("--iterations", type=int, help=f"updates (default {DEFAULT_ITERATIONS})")
    parser.add_argument("--cells", type=int, help="cells per dimension (default 44 four_rooms, 100 beach_bar)")
    parser.add_argument("--velocities", type=int, help="velocity lattice points per dimension (odd)")
    parser.add_argument("--learning-rate", type=float, help=f"OMD learning rate (default {DEFAULT_LEARNING_RATES})")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a game parameter, or a grid one as grid.KEY (repeatable)")
    parser.add_argument("--every", type=int, help="print every N iterations (default 1 for fp, 10 for omd)")
    parser.add_argument("--out", default=str(DEFAULT_DIRECTORY), help=f"output folder (default {DEFAULT_DIRECTORY})")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.set_defaults(func=handler)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dedafp.reference.cli``."""
    parser = argparse.ArgumentParser(prog="dedafp", description="Grid reference solver of dedafp.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    argv = list(sys.argv[1:] if argv is None else argv)
    if "reference" not in argv:                 # `python -m dedafp.reference.cli four_rooms ...`
        argv.insert(0, "reference")
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
