"""Figures of the laboratory: generated samples against fresh data, and learned against exact score fields."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from dedafp.lab.score import PotentialNet  # noqa: E402
from dedafp.lab.sde import VPSDE, GaussianMixture  # noqa: E402

_LIMIT = 3.5


def plot_samples(panels: dict[str, Tensor], fresh: Tensor, path: Path, title: str) -> Path:
    """Scatter of fresh data and of each panel's samples ``[n, 2]``; returns ``path`` (PNG)."""
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.0 * (len(panels) + 1), 3.2), squeeze=False)
    for ax, (label, x) in zip(axes[0], [("fresh data", fresh), *panels.items()], strict=True):
        x = x.detach().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color="black" if label == "fresh data" else "tab:blue")
        ax.set(xlim=(-_LIMIT, _LIMIT), ylim=(-_LIMIT, _LIMIT), title=label, aspect="equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_score_field(nets: dict[str, PotentialNet], data: GaussianMixture, sde: VPSDE, path: Path, title: str,
                     times: tuple[float, ...] = (0.01, 0.1, 0.4), grid: int = 17,
                     device: torch.device | str = "cpu") -> Path:
    """Quiver plots of the exact score and of each net's score at a few diffusion times; returns ``path``."""
    axis = torch.linspace(-_LIMIT, _LIMIT, grid, device=device)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    x = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)
    columns = [("exact", lambda x, t: data.marginal_score(x, t, sde))]
    columns += [(label, net.score) for label, net in nets.items()]
    fig, axes = plt.subplots(len(times), len(columns), figsize=(2.6 * len(columns), 2.6 * len(times)), squeeze=False)
    for i, time in enumerate(times):
        t = torch.full((x.shape[0],), time, device=device)
        exact = data.marginal_score(x, t, sde)
        for j, (label, score) in enumerate(columns):
            s = score(x, t).detach()
            err = float((sde.sigma(t) ** 2 * ((s - exact) ** 2).sum(-1)).mean())
            s = s * sde.sigma(t)[:, None]        # σ·score: comparable lengths at every t
            ax = axes[i][j]
            ax.quiver(x[:, 0].cpu(), x[:, 1].cpu(), s[:, 0].cpu(), s[:, 1].cpu(), angles="xy", scale_units="xy",
                      scale=4.0, width=0.004, color="black" if j == 0 else "tab:red")
            ax.set(xlim=(-_LIMIT, _LIMIT), ylim=(-_LIMIT, _LIMIT), aspect="equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}, t = {time:g}" + ("" if j == 0 else f"\nσ²|err|² = {err:.3f}"), fontsize=8)
    fig.suptitle(title + " (arrows: σ(t)·score)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
