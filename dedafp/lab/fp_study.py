"""The Fokker–Planck-regularised population flow on the LQ games, against their exact Gaussian marginals.

Particles are simulated under a known affine policy (the exact mean-field equilibrium of
:mod:`dedafp.reference.lq`, with its exact mean flow as the field), the flow is fitted to them with
``FlowConfig(fp_penalty=γ)`` and the drift ``b = (step(t, x, K_t x + k_t, m, 0) − x) / dt``, and its
marginals are scored by the Gaussian (Bures) W2 of their moments to the exact ones, averaged over t.

Usage::

    rows = run_fp_study(FPStudyConfig(games=("lq1d",), gammas=(0.0, 0.1)), out)
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dedafp.envs.lq import LQGame, lq_preset
from dedafp.metrics import gaussian_w2, moments
from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.fokker_planck import FokkerPlanckTerm, drift_from_step, fokker_planck_residual
from dedafp.reference import lq


@dataclass(frozen=True)
class FPStudyConfig:
    """Grid of the Fokker–Planck flow study.

    Attributes:
        games: LQ presets (``lq1d``, ``lq2d``).
        particles: simulated particles per time (>= 8; the issue's budget is <= 1,000).
        gammas: Fokker–Planck penalty weights (>= 0; include 0).
        seeds: seeds (particles and flow weights).
        flow: the flow's config (its ``fp_penalty`` is replaced by each γ).
        points: residual points per step.
        eval_samples: flow samples per t for its moments.
    """

    games: tuple[str, ...] = ("lq1d", "lq2d")
    particles: tuple[int, ...] = (200,)
    gammas: tuple[float, ...] = (0.0, 0.01, 0.1)
    seeds: tuple[int, ...] = (0, 1, 2)
    flow: FlowConfig = dataclasses.field(default_factory=lambda: FlowConfig(steps=400))
    points: int = 256
    eval_samples: int = 20_000


def simulate_equilibrium(game: LQGame, equilibrium: lq.Equilibrium, particles: int, seed: int,
                         device: torch.device | str = "cpu") -> Tensor:
    """States ``[T + 1, particles, d]`` of the game under the exact equilibrium policy and mean flow."""
    gen = torch.Generator(device=device).manual_seed(seed)
    field = torch.as_tensor(equilibrium.mean_flow, dtype=torch.float32, device=device)
    mean_action = _mean_action(equilibrium.policy, device)
    x = game.initial_states(particles, generator=gen, device=device)
    states = [x]
    for t in range(game.horizon):
        noise = torch.randn(x.shape, generator=gen, device=device)
        x = game.step(t, x, mean_action(t, x), field, noise)
        states.append(x)
    return torch.stack(states)


def _mean_action(policy: lq.AffinePolicy, device: torch.device | str) -> Callable[[int, Tensor], Tensor]:
    gains = torch.as_tensor(policy.gains, dtype=torch.float32, device=device)
    offsets = torch.as_tensor(policy.offsets, dtype=torch.float32, device=device)
    return lambda t, x: x @ gains[t].T + offsets[t]


def _w2_to_exact(sample_moments: list[tuple[np.ndarray, np.ndarray]], equilibrium: lq.Equilibrium) -> float:
    return float(np.mean([gaussian_w2(m, c, equilibrium.mean_flow[t], equilibrium.cov_flow[t])
                          for t, (m, c) in enumerate(sample_moments)]))


def run_fp_study(config: FPStudyConfig, out: Path, device: torch.device | str = "cpu",
                 progress: Callable[[str], None] | None = None) -> dict:
    """Run the grid; write ``fp_runs.csv``, ``fp_table.csv`` and ``fp_summary.json`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in config.games:
        game_config = lq_preset(name)
        game = LQGame(game_config, name=name)
        eq = lq.equilibrium(game_config)
        field = torch.as_tensor(eq.mean_flow, dtype=torch.float32, device=device)
        term = FokkerPlanckTerm(drift_from_step(game.step, _mean_action(eq.policy, device), field, game.horizon,
                                                game_config.dt), game_config.sigma, game_config.dt, config.points)
        horizon = game.horizon
        for particles in config.particles:
            for seed in config.seeds:
                sim = simulate_equilibrium(game, eq, particles, seed, device)
                times = torch.arange(horizon + 1, device=device).repeat_interleave(particles)
                states = sim.reshape(-1, game.state_dim)
                empirical = _w2_to_exact([moments(sim[t]) for t in range(horizon + 1)], eq)
                for gamma in config.gammas:
                    flow_config = dataclasses.replace(config.flow, fp_penalty=float(gamma))
                    flow = FlowPopulation(flow_config, game.state_dim, horizon, device, seed=seed)
                    start = time.perf_counter()
                    nll = flow.fit(times, states, generator=torch.Generator(device=device).manual_seed(seed),
                                   fokker_planck=term)
                    seconds = time.perf_counter() - start
                    gen = torch.Generator(device=device).manual_seed(99)
                    fitted = [moments(flow.sample(t, config.eval_samples, generator=gen)) for t in range(horizon + 1)]
                    # residual of the fitted flow at fresh exact-equilibrium states, half-integer times
                    check = simulate_equilibrium(game, eq, 256, 10_000 + seed, device)
                    t_mid = torch.arange(horizon, device=device).repeat_interleave(256).float() + 0.5
                    residual = fokker_planck_residual(flow.log_prob_continuous, term,
                                                      check[:-1].reshape(-1, game.state_dim), t_mid)
                    rows.append({"game": name, "particles": particles, "seed": seed, "gamma": float(gamma),
                                 "w2_flow": _w2_to_exact(fitted, eq), "w2_empirical_gaussian": empirical,
                                 "fp_residual": float((residual**2).mean()), "nll": nll,
                                 "ms_per_step": 1e3 * seconds / max(flow_config.steps, 1)})
                    if progress is not None:
                        row = rows[-1]
                        progress(f"{name} n={particles} seed={seed} γ={gamma:g}: W2 {row['w2_flow']:.4f} "
                                 f"(empirical Gaussian {empirical:.4f}), E[R²] {row['fp_residual']:.3g}, "
                                 f"{row['ms_per_step']:.1f} ms/step")
    table = []
    for name in config.games:
        for particles in config.particles:
            for gamma in config.gammas:
                chosen = [r for r in rows if r["game"] == name and r["particles"] == particles
                          and r["gamma"] == float(gamma)]
                entry: dict = {"game": name, "particles": particles, "gamma": float(gamma), "seeds": len(chosen)}
                for key in ("w2_flow", "w2_empirical_gaussian", "fp_residual", "ms_per_step"):
                    values = [r[key] for r in chosen]
                    mean = sum(values) / len(values)
                    entry[f"{key}_mean"] = mean
                    entry[f"{key}_sd"] = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                                          if len(values) > 1 else 0.0)
                table.append(entry)
    for path, data in ((out / "fp_runs.csv", rows), (out / "fp_table.csv", table)):
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(data[0]))
            writer.writeheader()
            for row in data:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    summary = {"config": {**dataclasses.asdict(config), "flow": dataclasses.asdict(config.flow)}, "table": table}
    (out / "fp_summary.json").write_text(json.dumps(summary, indent=2, default=list))
    return summary
