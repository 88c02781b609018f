"""Studies of the N-player simulator: throughput at scale, and how well the mean field describes the finite game.

    dedafp simulate RUN --study throughput [--agents 1e3,1e4,1e5,1e6] [--backend ray --workers 1,2]
    dedafp simulate RUN --study mean-field [--agents 10,30,100,300,1000,3000] [--seeds 5]
    dedafp simulate RUN --study density-error [--agents 2000]

They write JSON (the first two also CSV and a figure) under ``--out`` (default ``results/simulate/``).

*Throughput*: every measurement runs in a fresh process (spawned), so that its peak resident memory
(``resource.getrusage(...).ru_maxrss``, the whole process: Python, torch and the run included) belongs
to that measurement alone; the machine's 1-minute load average is recorded beside it because the CPU is
shared.

*Mean field against N*: for each N and seed, E episodes of the N-player game are simulated twice with
the same random numbers, once as they are and once with agent 0 deviating to a best response against
the policy's own mean-field flow (the exact Riccati response for LQ; for density games the grid
reference's best response to the projected policy). Reported per N, with standard errors over all
episodes: (a) the sliced W2 between the N agents' empirical distribution and the run's flow, averaged
over t (beside it, the same distance for N independent samples of the flow: the part due to N alone);
(b) the deviation gain J^N_0(deviation) − J^N_0(no deviation), paired episode by episode.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.agents.policy import Policy
from dedafp.common.files import write_json
from dedafp.common.stats import write_csv
from dedafp.envs.base import MeanFieldGame
from dedafp.metrics import sliced_w2_to_sample
from dedafp.nplayer.config import SimulationConfig
from dedafp.nplayer.deviators import GridBestResponse, best_response_deviator
from dedafp.nplayer.simulate import simulate
from dedafp.run import load_run

__all__ = ["single_run", "throughput_study", "density_error_study", "mean_field_study", "plot_mean_field",
           "best_response_deviator", "GridBestResponse", "slice_directions", "sliced_w2_to_sample"]

DEFAULT_OUT = Path("results/simulate")
THROUGHPUT_AGENTS = (1_000, 10_000, 100_000, 1_000_000)
MEAN_FIELD_AGENTS = (10, 30, 100, 300, 1000, 3000)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def single_run(run_path: str | Path, agents: int, steps: int | None = None, seed: int = 0, device: str = "cpu",
               density: bool = True, backend: str = "local", address: str | None = None,
               workers: int = 1) -> dict[str, Any]:
    """One N-player rollout of a run's average policy (``dedafp simulate RUN --agents N``): a summary dict."""
    config = SimulationConfig(agents=agents, workers=workers, seed=seed, device=device, rewards=density, steps=steps)
    run = load_run(run_path, device)
    result = simulate(run.game, run.average_policy, config, backend=backend, address=address)
    summary: dict[str, Any] = {
        "run": str(run_path), "env": run.config.env, "agents": agents, "steps": result.steps, "backend": backend,
        "workers": workers, "seed": seed, "device": device, "density_term": density,
        "seconds": round(result.seconds, 3), "setup_seconds": round(result.setup_seconds, 3),
        "agent_steps_per_second": round(result.agent_steps_per_second),
        "peak_rss_mb": round(_peak_rss_mb(), 1)}
    if result.returns is not None:
        returns = result.returns[0]
        summary["mean_return"] = float(returns.mean())
        summary["mean_return_se"] = _se(returns)
    return summary


# ---- throughput ---------------------------------------------------------------------------------------

def _measure(run_path: str, agents: int, rewards: bool, backend: str, workers: int, device: str, seed: int,
             threads: int) -> dict[str, Any]:
    """One rollout in this (fresh) process: wall-clock, CPU time and peak memory."""
    torch.set_num_threads(threads)
    run = load_run(run_path, device)
    before = _peak_rss_mb()
    cpu = time.process_time()
    config = SimulationConfig(agents=agents, workers=workers, seed=seed, device=device, rewards=rewards)
    result = simulate(run.game, run.average_policy, config, backend=backend)
    row = {"seconds": result.seconds, "setup_seconds": result.setup_seconds, "steps": result.steps,
           "cpu_seconds": time.process_time() - cpu if backend == "local" else None,     # Ray: the actors' CPU
           "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before}
    if torch.device(device).type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return row


def _in_fresh_process(*args: Any) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure, *args).result()


def throughput_study(run_path: str | Path, agents: tuple[int, ...] = THROUGHPUT_AGENTS, repeats: int = 2,
                     device: str = "cpu", ray_workers: tuple[int, ...] = (), seed: int = 0, threads: int = 1,
                     out: str | Path = DEFAULT_OUT, print_fn: Any = None) -> Path:
    """Agent-steps per second of ``dedafp simulate`` for each N, with and without the density term.

    Local rows for every N (rewards with the density term, and states only); with ``ray_workers``, Ray
    rows (density term on) for each worker count. Writes ``throughput.json``, ``.csv`` and ``.png``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = [("local", 1, n, density) for n in agents for density in (True, False)]
    plans += [("ray", w, n, True) for w in ray_workers for n in agents]
    rows = []
    for backend, workers, n, density in plans:
        runs = []
        for repeat in range(repeats):
            load = os.getloadavg()[0]
            measured = _in_fresh_process(str(run_path), n, density, backend, workers, device, seed + repeat, threads)
            runs.append({**measured, "load_average": load})
        seconds = [r["seconds"] for r in runs]
        row = {"backend": backend, "workers": workers, "agents": n, "density": density, "device": device,
               "steps": runs[0]["steps"], "seconds_median": statistics.median(seconds), "seconds": seconds,
               "cpu_seconds": [r["cpu_seconds"] for r in runs],
               "cpu_seconds_median": (statistics.median(r["cpu_seconds"] for r in runs)
                                      if backend == "local" else None),
               "agent_steps_per_second": n * runs[0]["steps"] / statistics.median(seconds),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
               "rss_before_mb": max(r["rss_before_mb"] for r in runs),
               "setup_seconds": statistics.median(r["setup_seconds"] for r in runs),
               "load_average": [r["load_average"] for r in runs]}
        if "peak_gpu_mb" in runs[0]:
            row["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in runs)
        rows.append(row)
        if print_fn is not None:
            print_fn(f"{backend:>5} W={workers} N={n:>9,} density={'on ' if density else 'off'}: "
                     f"{row['seconds_median']:8.2f} s, {row['agent_steps_per_second']:12,.0f} agent-steps/s, "
                     f"peak RSS {row['peak_rss_mb']:.0f} MiB (load {row['load_average']})")
    run = load_run(run_path)
    summary = {"run": str(run_path), "env": run.config.env, "torch_threads": threads, "repeats": repeats,
               "memory": "peak resident set size of the measuring process (ru_maxrss), MiB", "rows": rows}
    write_json(summary, out / "throughput.json")
    write_csv(out / "throughput.csv", rows, ("backend", "workers", "agents", "density", "device", "steps",
                                              "seconds_median", "cpu_seconds_median", "agent_steps_per_second",
                                              "peak_rss_mb",
                                              "rss_before_mb", "setup_seconds"))
    _plot_throughput(summary, out / "throughput.png")
    return out / "throughput.json"


def _plot_throughput(summary: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    rows = summary["rows"]
    series = sorted({(r["backend"], r["workers"], r["density"]) for r in rows})
    for backend, workers, density in series:
        chosen = sorted((r for r in rows if (r["backend"], r["workers"], r["density"]) == (backend, workers, density)),
                        key=lambda r: r["agents"])
        where = f"ray, {workers} workers" if backend == "ray" else backend
        label = f"{where}, density term {'on' if density else 'off'}"
        ax.plot([r["agents"] for r in chosen], [r["agent_steps_per_second"] for r in chosen],
                marker="o" if backend == "local" else "s", ls="-" if density else "--", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents N")
    ax.set_ylabel("agent-steps per second")
    ax.set_title(f"dedafp simulate on {summary['env']} ({summary['torch_threads']} torch thread)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the density term's error --------------------------------------------------------------------------

def density_error_study(run_path: str | Path, agents: int = 2000, resolutions: tuple[float, ...] = (2.0, 4.0, 8.0),
                        seed: int = 0, out: str | Path = DEFAULT_OUT, print_fn: Any = None) -> Path:
    """The binned density term against the exact pairwise kernel sum, on the N-player game's own states.

    One N-agent game of the run's policy is simulated; at a few times t its states get both estimates of
    every agent's log μ^{-i}. Reported per t and grid resolution (nodes per bandwidth): the relative error
    of μ^{-i} (median, 99th percentile, max) and the absolute error of c_M log(μ^{-i} + ε), the reward's
    density term. Writes ``density_error_<env>.json``.
    """
    from dedafp.nplayer.density import empirical_log_density, exact_others_log_density

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_path)
    game = run.game
    d, horizon = game.state_dim, game.horizon
    states = simulate(game, run.average_policy, SimulationConfig(agents=agents, seed=seed, rewards=False,
                                                                 record_states=True)).states
    floor = torch.tensor(math.log(game.config.density_floor), dtype=torch.float64)
    rows = []
    for t in sorted({0, horizon // 4, horizon // 2, horizon}):
        for resolution in resolutions:
            config = SimulationConfig(agents=agents, nodes_per_bandwidth=resolution)
            binned, spec = empirical_log_density(states[t], config, [0.0] * d, [1.0] * d)
            exact = exact_others_log_density(states[t, 0], spec.bandwidth[0])
            relative = (binned[0] - exact).exp().sub(1.0).abs()
            error = torch.logaddexp(binned[0], floor) - torch.logaddexp(exact, floor)
            reward = game.config.crowd_cost * error.abs()
            rows.append({"t": t, "nodes_per_bandwidth": resolution, "nodes": list(spec.nodes),
                         "bandwidth": spec.bandwidth[0].tolist(), "relative_median": float(relative.median()),
                         "relative_p99": float(relative.quantile(0.99)), "relative_max": float(relative.max()),
                         "reward_term_mean": float(reward.mean()), "reward_term_max": float(reward.max())})
            if print_fn is not None:
                r = rows[-1]
                print_fn(f"{run.config.env} t={t:>2} nodes/bandwidth {resolution:g} grid {r['nodes']}: relative "
                         f"error median {r['relative_median']:.2e}, p99 {r['relative_p99']:.2e}, max "
                         f"{r['relative_max']:.2e}; reward term mean {r['reward_term_mean']:.1e}, max "
                         f"{r['reward_term_max']:.1e}")
    summary = {"run": str(run_path), "env": run.config.env, "agents": agents, "seed": seed,
               "bandwidth_rule": "scott: (N - 1)^(-1/(d+4)) x per-coordinate standard deviation", "rows": rows}
    path = out / f"density_error_{run.config.env}.json"
    write_json(summary, path)
    return path


# ---- distances to the flow -----------------------------------------------------------------------------

def slice_directions(dim: int, count: int = 16, seed: int = 0) -> Tensor:
    """Unit directions ``[P, d]`` of the sliced W2: one in 1-D (exact W2), even angles in 2-D, random beyond."""
    if dim == 1:
        return torch.ones(1, 1)
    if dim == 2:
        angles = torch.arange(count, dtype=torch.float64) * math.pi / count
        return torch.stack([angles.cos(), angles.sin()], 1).float()
    directions = torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))
    return directions / directions.norm(dim=1, keepdim=True)


def _time_averaged_distance(states: Tensor, references: list[Tensor], directions: Tensor) -> Tensor:
    """Mean over t of the sliced W2 of ``states`` ``[T+1, E, N, d]`` to ``references[t]``. Returns ``[E]``."""
    return torch.stack([sliced_w2_to_sample(states[t].float(), references[t].float(), directions)
                        for t in range(len(references))]).mean(0)


# ---- mean field against N ------------------------------------------------------------------------------

def _se(values: Tensor) -> float:
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else float("nan")


def _episode_pair(game: MeanFieldGame, policy: Policy, deviator: Policy, agents: int, episodes: int,
                  seed: int, density: str) -> tuple[Tensor, Tensor]:
    """States ``[T+1, E, N, d]`` of E games and agent 0's paired gain ``[E]`` (same random numbers)."""
    config = SimulationConfig(agents=agents, episodes=episodes, seed=seed, density=density, record_states=True)
    plain = simulate(game, policy, config)
    deviated = simulate(game, policy, config, deviator=deviator)
    return plain.states, deviated.returns[:, 0] - plain.returns[:, 0]


def mean_field_study(run_path: str | Path, agents: tuple[int, ...] = MEAN_FIELD_AGENTS, seeds: int = 5,
                     budget: int = 50_000, min_episodes: int = 16, distance_episodes: int = 32,
                     reference_samples: int = 16_384, large_agents: int = 100_000, exact_agents: int = 300,
                     out: str | Path = DEFAULT_OUT, print_fn: Any = None) -> Path:
    """The distance to the flow and the deviation gain of the N-player game, for each N in ``agents``.

    Each (N, seed) simulates E = max(⌈budget / N⌉, min_episodes) paired episodes; distances use the first
    ``distance_episodes`` of them against ``reference_samples`` flow samples per t. One extra game of
    ``large_agents`` agents gives the distance's floor (the flow's own error). Density games use the exact
    pairwise kernel sum up to ``exact_agents`` agents: with thousands of small games side by side, the
    binned grid per game would be too coarse for their narrow kernels (capped by ``max_grid_nodes``). Writes
    ``mean_field_<env>.json`` and ``.csv`` and redraws ``mean_field.png`` from every such JSON in ``out``.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_path)
    game, policy, flow = run.game, run.average_policy, run.population
    deviator, limit = best_response_deviator(run)
    generator = torch.Generator().manual_seed(12345)
    T = game.horizon
    references = [flow.sample(t, reference_samples, generator).cpu() for t in range(T + 1)]
    pool = [flow.sample(t, 20_000, generator).cpu() for t in range(T + 1)]
    directions = slice_directions(game.state_dim)
    rows = []
    for n in agents:
        episodes = max(math.ceil(budget / n), min_episodes)
        density = "exact" if n <= exact_agents else "binned"
        gains, distances, iid = [], [], []
        for seed in range(seeds):
            states, gain = _episode_pair(game, policy, deviator, n, episodes, seed, density)
            gains.append(gain)
            kept = min(episodes, distance_episodes)
            distances.append(_time_averaged_distance(states[:, :kept], references, directions))
            draws = [p[torch.randint(p.shape[0], (kept, n), generator=generator)] for p in pool]
            iid.append(_time_averaged_distance(torch.stack(draws), references, directions))
        gain, distance, independent = torch.cat(gains), torch.cat(distances), torch.cat(iid)
        row = {"agents": n, "episodes_per_seed": episodes, "seeds": seeds, "density": density,
               "distance_mean": float(distance.mean()), "distance_se": _se(distance),
               "iid_distance_mean": float(independent.mean()), "iid_distance_se": _se(independent),
               "gain_mean": float(gain.mean()), "gain_se": _se(gain),
               "gain_per_seed": [float(g.mean()) for g in gains]}
        rows.append(row)
        if print_fn is not None:
            print_fn(f"{run.config.env} N={n:>6}: W2 to the flow {row['distance_mean']:.4f} ± "
                     f"{row['distance_se']:.4f} (iid {row['iid_distance_mean']:.4f}), deviation gain "
                     f"{row['gain_mean']:.4f} ± {row['gain_se']:.4f}")
    large = simulate(game, policy, SimulationConfig(agents=large_agents, rewards=False, record_states=True))
    floor = float(_time_averaged_distance(large.states, references, directions)[0])
    summary = {"run": str(run_path), "env": run.config.env, "deviator": type(deviator).__name__,
               "gain_limit": limit, "distance": "sliced W2 (16 directions; exact W2 in 1-D) to "
               f"{reference_samples} flow samples, averaged over t = 0..{T}",
               "large_agents": large_agents, "large_agents_distance": floor, "budget": budget, "rows": rows,
               "seconds": time.perf_counter() - started}
    write_json(summary, out / f"mean_field_{run.config.env}.json")
    write_csv(out / f"mean_field_{run.config.env}.csv", rows,
               ("agents", "episodes_per_seed", "seeds", "distance_mean", "distance_se", "iid_distance_mean",
                "iid_distance_se", "gain_mean", "gain_se"))
    plot_mean_field(out)
    return out / f"mean_field_{run.config.env}.json"


def plot_mean_field(out: str | Path) -> Path:
    """One row per ``mean_field_<env>.json`` in ``out``: distance to the flow and deviation gain against N."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("mean_field_*.json"))]
    fig, axes = plt.subplots(len(summaries), 2, figsize=(10, 3.3 * len(summaries)), squeeze=False)
    for (left, right), summary in zip(axes, summaries, strict=True):
        rows = summary["rows"]
        n = np.array([r["agents"] for r in rows])
        left.errorbar(n, [r["distance_mean"] for r in rows], yerr=[2 * r["distance_se"] for r in rows], marker="o",
                      capsize=3, label="N-player game")
        left.errorbar(n, [r["iid_distance_mean"] for r in rows], yerr=[2 * r["iid_distance_se"] for r in rows],
                      marker="s", ls="--", capsize=3, label="N independent flow samples")
        left.axhline(summary["large_agents_distance"], color="k", ls=":",
                     label=f"N = {summary['large_agents']:,} (the flow's own error)")
        left.set_xscale("log")
        left.set_yscale("log")
        left.set_ylabel("sliced W2 to the flow, mean over t")
        left.set_title(f"{summary['env']}: empirical distribution vs flow")
        right.errorbar(n, [r["gain_mean"] for r in rows], yerr=[2 * r["gain_se"] for r in rows], marker="o",
                       capsize=3, label="agent 0 deviates (paired, ±2 s.e.)")
        limit = summary["gain_limit"]
        right.axhline(limit["value"], color="k", ls="--", label=limit["label"])
        right.set_xscale("log")
        right.set_ylabel("deviation gain")
        right.set_title(f"{summary['env']}: gain of a best-response deviation")
        for ax in (left, right):
            ax.set_xlabel("agents N")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "mean_field.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
