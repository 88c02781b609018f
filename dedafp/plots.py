"""Figures of a run folder (matplotlib, Agg backend): written under ``RUN/figures/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dedafp.envs.lq import LQGame  # noqa: E402
from dedafp.envs.registry import spec_of  # noqa: E402
from dedafp.reference import lq  # noqa: E402
from dedafp.rollout import rollout  # noqa: E402
from dedafp.run import Run, read_metrics_file  # noqa: E402


def _column(rows: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([row.get(key, np.nan) for row in rows])


def _metrics_with_evaluation(run: Run) -> list[dict[str, float]]:
    """The run's metrics, merged with ``evaluation.csv`` (``dedafp evaluate --all-iterations``) if present."""
    rows = run.metrics()
    if (run.path / "evaluation.csv").exists():
        extra = {int(r["iteration"]): r for r in read_metrics_file(run.path / "evaluation.csv")}
        rows = [{**row, **extra.get(int(row["iteration"]), {})} for row in rows]
    return rows


def plot_exploitability(run: Run, path: Path) -> None:
    """Exploitability per iteration (with its standard error where estimated) against the reference."""
    rows = _metrics_with_evaluation(run)
    k = _column(rows, "iteration")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if "fp/grid_exploitability" in rows[-1]:
        ax.plot(k, _column(rows, "fp/grid_exploitability"), marker="o", ms=4,
                label=f"{run.config.algorithm} average policy, projected on the grid")
        ax.axhline(rows[-1]["reference/exploitability"], color="k", ls="--", label="grid reference (OMD)")
    else:
        value, se = _column(rows, "fp/exploitability"), _column(rows, "fp/exploitability_se")
        ax.errorbar(k, value, yerr=2 * se, marker="o", ms=4, capsize=2,
                    label=f"{run.config.algorithm} average policy (±2 s.e.)")
    if "reference/exact_fp_exploitability" in rows[0]:
        ax.plot(k, _column(rows, "reference/exact_fp_exploitability"), "k--", label="exact fictitious play")
    if "theory/mixture_exploitability" in rows[-1]:
        ax.plot(k, _column(rows, "theory/mixture_exploitability"), "s:", ms=3,
                label="mixture of the learned best responses")
    ax.set_yscale("log")
    ax.set_xlabel("iteration k")
    ax.set_ylabel("exploitability")
    ax.set_title(f"{run.config.env}: exploitability")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_error_terms(run: Run, path: Path) -> None:
    """The three error terms of Theorem 1 and the seconds per phase, per iteration."""
    rows = run.metrics()
    k = _column(rows, "iteration")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in (("theory/br_shortfall", "ε_br: best-response shortfall"),
                       ("theory/bc_error", "ε_sl: behaviour-cloning error (exploitability gap)"),
                       ("theory/flow_w2", "ε_cnf: flow W2 to the simulated population (max over t)")):
        if key in rows[-1]:
            left.plot(k, np.abs(_column(rows, key)), marker="o", ms=3, label=label)
    left.set_yscale("log")
    left.set_xlabel("iteration k")
    left.set_title("error terms (absolute values)")
    if left.lines:
        left.legend(fontsize=7)
    left.grid(alpha=0.3, which="both")
    bottom = np.zeros(len(rows))
    for key in ("time/best_response", "time/bc", "time/rollout", "time/flow", "time/evaluation"):
        seconds = np.nan_to_num(_column(rows, key))
        right.bar(k, seconds, bottom=bottom, label=key.split("/")[1])
        bottom += seconds
    right.set_xlabel("iteration k")
    right.set_ylabel("seconds")
    right.set_title("wall-clock per phase")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def plot_lq_moments(run: Run, path: Path, agents: int = 50_000, flow_samples: int = 20_000) -> None:
    """Mean and variance over time per coordinate: flow vs simulated average policy vs exact equilibrium."""
    game = run.game
    assert isinstance(game, LQGame)
    eq = lq.equilibrium(game.config)
    generator = torch.Generator().manual_seed(0)
    sim = rollout(game, run.average_policy, agents, torch.zeros(game.horizon + 1, game.state_dim),
                  consistent=True, generator=generator).states.double()
    flow = torch.stack([run.population.sample(t, flow_samples, generator) for t in range(game.horizon + 1)]).double()
    times = np.arange(game.horizon + 1)
    d = game.state_dim
    fig, axes = plt.subplots(2, d, figsize=(4.5 * d, 6), squeeze=False)
    for i in range(d):
        for row, (stat, exact) in enumerate((("mean", eq.mean_flow[:, i]), ("variance", eq.cov_flow[:, i, i]))):
            ax = axes[row, i]
            reduce = (lambda x: x.mean(1)) if stat == "mean" else (lambda x: x.var(1))
            ax.plot(times, exact, "k-", lw=2, label="exact equilibrium")
            ax.plot(times, reduce(sim[..., i]).numpy(), "C0--", label="average policy (simulated)")
            ax.plot(times, reduce(flow[..., i]).numpy(), "C1:", lw=2, label="flow")
            ax.set_title(f"{stat} of x[{i}]")
            ax.set_xlabel("t")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@torch.no_grad()
def plot_lq_densities(run: Run, path: Path, times: tuple[int, ...] | None = None) -> None:
    """Flow density against the exact equilibrium's Gaussian marginal at several t (1-D curves, 2-D contours)."""
    game = run.game
    assert isinstance(game, LQGame)
    eq = lq.equilibrium(game.config)
    horizon = game.horizon
    times = times or (0, horizon // 4, horizon // 2, horizon)
    from dedafp.population.gaussian import GaussianPopulation
    exact = GaussianPopulation(eq.mean_flow, eq.cov_flow)
    fig, axes = plt.subplots(1, len(times), figsize=(4 * len(times), 3.6), squeeze=False)
    for ax, t in zip(axes[0], times, strict=True):
        centre = eq.mean_flow[t]
        spread = 3.5 * np.sqrt(np.diag(eq.cov_flow[t])).max()
        if game.state_dim == 1:
            grid = torch.linspace(centre[0] - spread, centre[0] + spread, 400).reshape(-1, 1)
            ax.plot(grid[:, 0], exact.log_prob(grid, t).exp(), "k-", lw=2, label="exact equilibrium")
            ax.plot(grid[:, 0], run.population.log_prob(grid, t).exp(), "C1--", lw=2, label="flow")
            ax.set_xlabel("x")
        elif game.state_dim == 2:
            axis = torch.linspace(-spread, spread, 120)
            gx, gy = torch.meshgrid(axis + centre[0], axis + centre[1], indexing="xy")
            points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).float()
            for model, color, style, label in ((exact, "k", "-", "exact equilibrium"),
                                               (run.population, "C1", "--", "flow")):
                density = model.log_prob(points, t).exp().reshape(gx.shape)
                ax.contour(gx, gy, density, levels=5, colors=color, linestyles=style)
                ax.plot([], [], color=color, linestyle=style, label=label)   # legend entry
            ax.set_xlabel("x[0]")
            ax.set_ylabel("x[1]")
            ax.set_aspect("equal")
        ax.set_title(f"t = {t}")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle("population density: flow (dashed) vs exact equilibrium (solid)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run(run: Run) -> list[Path]:
    """Write every figure that applies to ``run``; returns their paths."""
    out = run.path / "figures"
    out.mkdir(exist_ok=True)
    written = []
    for name, plot in (("exploitability.png", plot_exploitability), ("error_terms.png", plot_error_terms)):
        plot(run, out / name)
        written.append(out / name)
    if isinstance(run.game, LQGame):
        for name, plot in (("moments.png", plot_lq_moments), ("densities.png", plot_lq_densities)):
            plot(run, out / name)
            written.append(out / name)
    elif spec_of(run.game) is not None and spec_of(run.game).grid is not None:
        written += plot_density_game(run, out)
    return written


def plot_density_game(run: Run, out: Path) -> list[Path]:
    """Learned population against the grid reference: density maps (or curves), mass per region, a GIF."""
    from dedafp.evaluation.grid import GridEvaluator
    from dedafp.reference.grid import GridPopulation
    from dedafp.reference.grid_scoring import region_masses

    game = run.game
    evaluator = GridEvaluator(game)
    reference = GridPopulation(evaluator.grid, evaluator.reference_mass)
    times = tuple(int(round(f * game.horizon)) for f in (0, 0.25, 0.5, 0.75, 1.0))
    written = []
    if game.state_dim == 2:
        path = out / "density_maps.png"
        plot_density_maps(game, {f"learned ({run.config.algorithm})": run.population,
                                 "grid reference": reference}, path, times)
        written.append(path)
        path = out / "density.gif"
        animate_density(game, run.population, path)
        written.append(path)
    else:
        path = out / "densities.png"
        fig, axes = plt.subplots(1, len(times), figsize=(3.2 * len(times), 3), squeeze=False)
        cells = 200
        centres = (np.arange(cells) + 0.5) / cells
        for ax, t in zip(axes[0], times, strict=True):
            ax.plot(centres, density_on_grid(reference, t, cells, 1), "k-", label="grid reference")
            ax.plot(centres, density_on_grid(run.population, t, cells, 1), "C1--", label="learned")
            ax.set_title(f"t = {t}", fontsize=9)
            ax.set_xlabel("x")
        axes[0, 0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    path = out / "mass_per_region.png"
    plot_mass_per_region(game, {"learned": region_mass(game, run.population),
                                "reference": region_masses(evaluator.grid, evaluator.reference_mass)}, path)
    written.append(path)
    return written


# ---- density games on the unit square or interval -------------------------------------------------

@torch.no_grad()
def density_on_grid(model, t: int, cells: int, dim: int) -> np.ndarray:
    """Density of a population model at cell centres of [0, 1]^dim: ``[cells]`` or ``[cells, cells]``
    (indexed ``[iy, ix]``, y upwards)."""
    centres = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
    if dim == 1:
        return model.log_prob(centres.reshape(-1, 1), t).exp().numpy()
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return model.log_prob(points, t).exp().reshape(cells, cells).numpy()


def _draw_walls(ax, game) -> None:
    from matplotlib.patches import Rectangle
    for x0, y0, x1, y1 in game.walls(torch.zeros(1)).tolist():
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor="0.25", edgecolor="none"))


def plot_density_maps(game, panels: dict[str, object], path: Path, times: tuple[int, ...],
                      cells: int = 88) -> None:
    """Heat maps of several density sources (rows) at several times (columns), walls drawn.

    ``panels`` maps a row label to a population model or to a function ``t -> [cells, cells]`` array.
    """
    rows = list(panels.items())
    fig, axes = plt.subplots(len(rows), len(times), figsize=(2.6 * len(times), 2.6 * len(rows)), squeeze=False)
    for r, (label, source) in enumerate(rows):
        for c, t in enumerate(times):
            grid = source(t) if callable(source) and not hasattr(source, "log_prob") else density_on_grid(
                source, t, cells, 2)
            ax = axes[r, c]
            ax.imshow(grid, origin="lower", extent=(0, 1, 0, 1), cmap="viridis",
                      vmax=np.quantile(grid, 0.99) + 1e-12)
            _draw_walls(ax, game)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"t = {t}", fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def animate_density(game, model, path: Path, cells: int = 66, fps: int = 6) -> None:
    """Animated GIF of a population model's density over t = 0..T (walls drawn)."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    grids = [density_on_grid(model, t, cells, 2) for t in range(game.horizon + 1)]
    vmax = float(np.quantile(np.stack(grids[game.horizon // 4:]), 0.99))
    fig, ax = plt.subplots(figsize=(3.4, 3.4))
    image = ax.imshow(grids[0], origin="lower", extent=(0, 1, 0, 1), cmap="viridis", vmax=vmax)
    _draw_walls(ax, game)
    ax.set_xticks([])
    ax.set_yticks([])
    title = ax.set_title("t = 0")

    def update(t: int):
        image.set_data(grids[t])
        title.set_text(f"t = {t}")
        return image, title

    FuncAnimation(fig, update, frames=len(grids), blit=False).save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)


def plot_mass_per_region(game, curves: dict[str, np.ndarray], path: Path) -> None:
    """Mass per region (columns of each ``[T+1, regions]`` array) over time, one line style per source."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    styles = ["-", "--", ":", "-."]
    for (label, mass), style in zip(curves.items(), styles, strict=False):
        for region, name in enumerate(game.region_names):
            ax.plot(mass[:, region], linestyle=style, color=f"C{region}",
                    label=f"{name} ({label})" if style == "-" or region == 0 else None)
    ax.set_xlabel("t")
    ax.set_ylabel("mass")
    ax.set_title("mass per room: " + ", ".join(f"{s} {label}" for label, s in zip(curves, styles, strict=False)))
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def region_mass(game, model, n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Monte Carlo mass of a population model per region of ``game``: ``[T+1, len(region_names)]``."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for t in range(game.horizon + 1):
        index = game.region_index(model.sample(t, n, generator))
        counts = torch.bincount(index[index >= 0], minlength=len(game.region_names)).double()
        rows.append((counts / n).numpy())
    return np.stack(rows)
