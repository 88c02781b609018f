"""Figures of the MFGAN studies and of the GAN-training SDE comparison (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, NullFormatter  # noqa: E402

from dedafp.mfgan.problems import ErgodicProblem  # noqa: E402
from dedafp.mfgan.residuals import log_mean_exp, torus_grid  # noqa: E402

MODE_STYLE = {"mfgan": ("C0", "MFGAN (alternating)"), "joint": ("C1", "joint (deep Galerkin)")}
SLICE_AT = 0.25  # other coordinates of a d > 1 slice: where sin 2πx = 1, the density's crest


def plot_solutions(problem: ErgodicProblem, nets: dict[str, tuple[torch.nn.Module, torch.nn.Module]],
                   path: Path, points: int = 256) -> Path:
    """u and m against the exact solution along ``x_1`` (for d > 1: the other coordinates at 0.25).

    Args:
        problem: the reference problem.
        nets: ``mode -> (u_net, f_net)``.
        path: PNG to write.
        points: points along the slice.
    """
    first = next(iter(nets.values()))[0]
    device, dtype = next(first.parameters()).device, next(first.parameters()).dtype
    s = (torch.arange(points, device=device, dtype=dtype) + 0.5) / points
    x = torch.full((points, problem.dim), SLICE_AT, device=device, dtype=dtype)
    x[:, 0] = s
    # Z from the same grid the errors use (the slice alone cannot normalise m for d > 1).
    grid = torus_grid(max(4, min(1024, int(round(65536 ** (1 / problem.dim))))), problem.dim, device, dtype)
    fig, (ax_u, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    with torch.no_grad():
        ax_u.plot(s.cpu(), problem.exact_u(x).cpu(), "k-", lw=3, alpha=0.35, label="exact u*")
        ax_m.plot(s.cpu(), torch.exp(problem.exact_log_m(x)).cpu(), "k-", lw=3, alpha=0.35, label="exact m*")
        for mode, (u_net, f_net) in nets.items():
            color, label = MODE_STYLE.get(mode, ("C2", mode))
            log_z = log_mean_exp(f_net(grid))
            ax_u.plot(s.cpu(), u_net(x).cpu(), "--", color=color, label=label)
            ax_m.plot(s.cpu(), torch.exp(f_net(x) - log_z).cpu(), "--", color=color, label=label)
    where = "" if problem.dim == 1 else f" (x_2..x_{problem.dim} = {SLICE_AT})"
    for ax, name in ((ax_u, "u"), (ax_m, "m")):
        ax.set_xlabel("x_1" + where)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{problem.name}, d = {problem.dim}: learned against exact")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(ax, histories: list[list[dict[str, float]]], key: str, color: str, label: str, absolute: bool = False):
    """Median over seeds, with the min–max band."""
    it = np.array([row["iteration"] for row in histories[0]])
    values = np.array([[row[key] for row in h] for h in histories])
    if absolute:
        values = np.abs(values)
    ax.plot(it, np.median(values, axis=0), color=color, label=label)
    ax.fill_between(it, values.min(axis=0), values.max(axis=0), color=color, alpha=0.2)


def plot_training(problem: ErgodicProblem, histories: dict[str, list[list[dict[str, float]]]], path: Path) -> Path:
    """Errors of m, u, H̄ and both residual losses against iterations; median over seeds and band.

    Args:
        problem: the reference problem.
        histories: ``mode -> [history of each seed]``.
        path: PNG to write.
    """
    u_kind = "absolute" if problem.u_is_zero else "relative"
    panels = (("err_m", "relative L² error of m"), ("err_u", f"{u_kind} L² error of u"),
              ("err_hbar", "|H̄ error|"), ("loss_hjb", "HJB residual loss"), ("loss_fp", "FP residual loss"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for mode, runs in histories.items():
            color, label = MODE_STYLE.get(mode, ("C2", mode))
            _band(ax, runs, key, color, label, absolute=key == "err_hbar")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    seeds = len(next(iter(histories.values())))
    fig.suptitle(f"{problem.name}, d = {problem.dim}: median over {seeds} seed(s), band = min..max")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lr_axis(ax, lr: np.ndarray) -> None:
    ax.set_xscale("log")
    ax.set_xticks(lr)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("learning rate η")


def plot_gan_sde(rows: list[dict[str, float]], kappa: float, slope: float, path: Path,
                 slope_label: str = "") -> Path:
    """Relative gap between the SGD and SDE stationary covariances against η, log–log, with κη."""
    lr = np.array([r["lr"] for r in rows])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.9))
    left.plot(lr, [r["gap_exact"] for r in rows], "o-",
              label=f"exact SGD vs SDE (fitted slope {slope:.2f}{slope_label})")
    left.errorbar(lr, [r["gap_empirical"] for r in rows], yerr=[2 * r["sampling_error"] for r in rows],
                  fmt="s", ms=4, capsize=3, label="simulated SGD vs SDE (±2 s.e.)")
    fine = np.geomspace(lr.min(), lr.max(), 50)
    left.plot(fine, kappa * fine, "k:", label=f"κη, κ = {kappa:.3f} (slope 1)")
    _lr_axis(left, lr)
    left.set_yscale("log")
    left.set_ylabel("‖P_SGD − P_SDE‖_F / ‖P_SDE‖_F")
    left.set_title("stationary covariance: SGD against the SDE", fontsize=10)
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=7)
    right.plot(lr, [r["var_b0_sgd"] / r["lr"] for r in rows], "o-", label="SGD, exact (discrete Lyapunov)")
    right.plot(lr, [r["var_b0_sde"] / r["lr"] for r in rows], "k--", label="SDE (continuous Lyapunov)")
    right.plot(lr, [r["var_b0_sim"] / r["lr"] for r in rows], "s", ms=4, label="SGD, simulated")
    _lr_axis(right, lr)
    right.set_ylabel("Var(b_1) / η")
    right.set_title("generator's stationary variance, per unit η", fontsize=10)
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
