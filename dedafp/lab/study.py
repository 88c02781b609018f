"""The SGM study: plain against HJB-regularised score models, equal steps, over training-set sizes,
seeds and penalty weights γ; one row per run and a mean ± sd table of the three metrics.

Usage::

    summary = run_sgm_study(StudyConfig(sizes=(256, 4096), seeds=(0, 1, 2, 3, 4), gammas=(0.0, 0.1)), out)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dedafp.lab.metrics import evaluation_points, mean_squared_residual, sliced_w2, weighted_score_error
from dedafp.lab.plots import plot_samples, plot_score_field
from dedafp.lab.sampler import reverse_sde_sample
from dedafp.lab.sde import GaussianMixture, ring_mixture
from dedafp.lab.train import SGMConfig, train_sgm

METRICS = ("score_error", "sliced_w2", "residual")


@dataclass(frozen=True)
class StudyConfig:
    """The grid of an SGM study.

    Attributes:
        model: model and training budget shared by every run (its ``gamma`` is replaced by each of ``gammas``).
        sizes: training-set sizes (each >= 1).
        seeds: seeds; seed s draws the training set, the initial weights, the minibatches and the sampler noise.
        gammas: HJB penalty weights (each >= 0; include 0 for the plain model).
        eval_points: exact marginal draws per evaluation time (>= 1).
        eval_times: evaluation times, equally spaced in [t_eps, 1] (>= 1).
        samples: generated and fresh samples for the sliced W2 (>= 2).
        plot_seed: the seed whose models are drawn in the figures.
    """

    model: SGMConfig = field(default_factory=SGMConfig)
    sizes: tuple[int, ...] = (4096,)
    seeds: tuple[int, ...] = (0,)
    gammas: tuple[float, ...] = (0.0, 0.1)
    eval_points: int = 1024
    eval_times: int = 20
    samples: int = 4096
    plot_seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("sizes", "seeds", "gammas"):
            value = tuple(getattr(self, name))
            if not value:
                raise ValueError(f"{name} must not be empty")
            object.__setattr__(self, name, value)
        if any(not isinstance(n, int) or n < 1 for n in self.sizes):
            raise ValueError(f"sizes must be integers >= 1, got {self.sizes}")
        if any(not (math.isfinite(g) and g >= 0) for g in self.gammas):
            raise ValueError(f"gammas must be finite numbers >= 0, got {self.gammas}")
        for name, minimum in (("eval_points", 1), ("eval_times", 1), ("samples", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.plot_seed is not None and self.plot_seed not in self.seeds:
            raise ValueError(f"plot_seed {self.plot_seed} is not one of the seeds {self.seeds}")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, sd


def run_sgm_study(config: StudyConfig, out: Path, data: GaussianMixture | None = None,
                  device: torch.device | str = "cpu",
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run the grid, write ``runs.csv``, ``table.csv``, ``summary.json`` and figures into ``out``.

    ``progress(label, step, steps)`` is called during training (for a progress display).

    Returns:
        The summary (also in ``summary.json``): the table rows, the floors, the figure paths.
    """
    data = ring_mixture() if data is None else data
    out.mkdir(parents=True, exist_ok=True)
    sde, t_eps = config.model.sde, config.model.t_eps
    x_eval, t_eval = evaluation_points(data, sde, config.eval_points, config.eval_times, t_eps, seed=2024,
                                       device=device)
    fresh = data.sample(config.samples, generator=torch.Generator(device=device).manual_seed(77), device=device)
    fresh_b = data.sample(config.samples, generator=torch.Generator(device=device).manual_seed(78), device=device)
    exact_score = lambda x, t: data.marginal_score(x, t, sde)   # noqa: E731
    exact_samples = reverse_sde_sample(exact_score, sde, config.samples, data.dim, config.model.sample_steps, t_eps,
                                       torch.Generator(device=device).manual_seed(79), device)
    floors = {"sliced_w2_fresh_vs_fresh": sliced_w2(fresh_b, fresh),
              "sliced_w2_exact_score_sampler": sliced_w2(exact_samples, fresh)}
    plot_seed = config.seeds[0] if config.plot_seed is None else config.plot_seed
    rows, kept = [], {}
    for size in config.sizes:
        for seed in config.seeds:
            train = data.sample(size, generator=torch.Generator(device=device).manual_seed(10_000 + seed),
                                device=device)
            for gamma in config.gammas:
                model = dataclasses.replace(config.model, gamma=float(gamma))
                label = f"n={size} seed={seed} γ={gamma:g}"
                report = None if progress is None else (
                    lambda step, label=label, steps=model.steps: progress(label, step, steps))
                result = train_sgm(model, train, seed, device, report)
                start = time.perf_counter()
                samples = reverse_sde_sample(result.net.score, sde, config.samples, data.dim, model.sample_steps,
                                             t_eps, torch.Generator(device=device).manual_seed(20_000 + seed), device)
                rows.append({"size": size, "seed": seed, "gamma": float(gamma),
                             "score_error": weighted_score_error(result.net.score, data, sde, x_eval, t_eval),
                             "sliced_w2": sliced_w2(samples, fresh),
                             "residual": mean_squared_residual(result.net, sde, x_eval, t_eval),
                             "train_dsm": result.dsm, "ms_per_step": 1e3 * result.seconds_per_step,
                             "eval_seconds": time.perf_counter() - start})
                if seed == plot_seed:
                    kept[(size, float(gamma))] = (result.net, samples)
    table = []
    for size in config.sizes:
        for gamma in config.gammas:
            chosen = [r for r in rows if r["size"] == size and r["gamma"] == float(gamma)]
            entry: dict = {"size": size, "gamma": float(gamma), "seeds": len(chosen)}
            for key in (*METRICS, "ms_per_step"):
                entry[f"{key}_mean"], entry[f"{key}_sd"] = _mean_sd([r[key] for r in chosen])
            table.append(entry)
    _write_csv(out / "runs.csv", rows)
    _write_csv(out / "table.csv", table)
    figures = []
    for size in config.sizes:
        panels = {f"γ = {g:g}": kept[(size, float(g))][1] for g in config.gammas}
        figures.append(str(plot_samples(panels, fresh, out / f"samples_n{size}.png",
                                        f"reverse-SDE samples, n = {size} training points, seed {plot_seed}")))
        nets = {f"γ = {g:g}": kept[(size, float(g))][0] for g in config.gammas}
        figures.append(str(plot_score_field(nets, data, sde, out / f"score_field_n{size}.png",
                                            f"score fields, n = {size}, seed {plot_seed}", device=device)))
    summary = {"config": _jsonable(dataclasses.asdict(config)), "data": dataclasses.asdict(data), "floors": floors,
               "table": table, "figures": figures}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
