"""Benchmarks behind ``dedafp bench``: medians over repeats, ratios measured in the same run.

Each benchmark prints a table, and writes JSON and a PNG under its output folder.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

from dedafp.common.files import atomic_write, write_json  # noqa: E402
from dedafp.common.timing import machine_info, timed  # noqa: E402
from dedafp.envs.gym_env import MeanFieldEnv  # noqa: E402
from dedafp.envs.registry import make_game  # noqa: E402
from dedafp.envs.vec_env import BatchedMeanFieldVecEnv  # noqa: E402
from dedafp.population.flow import FlowConfig, FlowPopulation  # noqa: E402


def _steps_per_second(vec_env, steps: int, rng: np.random.Generator) -> float:
    n = vec_env.num_envs
    actions = rng.uniform(-1, 1, size=(max(1, steps // n), n, vec_env.action_space.shape[0])).astype(np.float32)
    vec_env.reset()

    def run() -> None:
        for batch in actions:
            vec_env.step(batch)

    seconds, _ = timed(run)
    return actions.shape[0] * n / seconds


def bench_env(env: str, agent_counts: list[int], steps: int, repeats: int, out: Path,
              print_fn: Callable[[str], None] = print) -> dict:
    """Env steps per second: the batched VecEnv against SB3's DummyVecEnv over the single env."""
    game = make_game(env)
    population = game.uncontrolled_population()
    rng = np.random.default_rng(0)
    rows = []
    print_fn(f"{'agents':>7} {'batched steps/s':>16} {'DummyVecEnv steps/s':>20} {'ratio':>7}")
    for n in agent_counts:
        batched = BatchedMeanFieldVecEnv(game, population, n)
        dummy = DummyVecEnv([lambda: MeanFieldEnv(game, population) for _ in range(n)])
        fast, slow, ratios = [], [], []
        for _ in range(repeats):
            # Measured back to back in one repeat, so machine noise hits both sides alike.
            a = _steps_per_second(batched, steps, rng)
            b = _steps_per_second(dummy, max(steps // 10, n), rng)
            fast.append(a)
            slow.append(b)
            ratios.append(a / b)
        row = {"agents": n, "batched_steps_per_s": statistics.median(fast),
               "dummy_steps_per_s": statistics.median(slow), "ratio_median": statistics.median(ratios),
               "ratio_min": min(ratios), "ratio_max": max(ratios)}
        rows.append(row)
        print_fn(f"{n:>7} {row['batched_steps_per_s']:>16,.0f} {row['dummy_steps_per_s']:>20,.0f} "
                 f"{row['ratio_median']:>6.1f}x")
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "env", "env": env, "repeats": repeats, "machine": machine_info(), "rows": rows}
    write_json(result, out / f"env_{env}.json")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    counts = [r["agents"] for r in rows]
    ax.plot(counts, [r["batched_steps_per_s"] for r in rows], "o-", label="BatchedMeanFieldVecEnv")
    ax.plot(counts, [r["dummy_steps_per_s"] for r in rows], "s--", label="DummyVecEnv(single env)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents (num_envs)")
    ax.set_ylabel("env steps per second (median)")
    ax.set_title(f"{env}: vectorised env throughput, 1 thread")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"env_{env}.png", dpi=110)
    plt.close(fig)
    print_fn(f"written {out / f'env_{env}.json'} and {out / f'env_{env}.png'}")
    return result


def bench_flows(repeats: int, out: Path, print_fn: Callable[[str], None] = print, dim: int = 2,
                horizon: int = 20, batch: int = 1024) -> dict:
    """nflows against zuko at the default flow size: training, log-density and sampling throughput."""
    rows = []
    data_t = torch.arange(horizon + 1).repeat_interleave(2000)
    data_x = torch.randn(data_t.shape[0], dim) + data_t[:, None].float() / horizon
    print_fn(f"{'backend':>8} {'train samples/s':>16} {'log_prob points/s':>18} {'sample points/s':>16}")
    measured: dict[str, dict[str, list[float]]] = {}
    for _ in range(repeats):
        for backend in ("nflows", "zuko"):
            flow = FlowPopulation(FlowConfig(backend=backend, steps=30, batch_size=batch), dim, horizon)
            seconds, _ = timed(lambda flow=flow: flow.fit(data_t, data_x))
            train = 30 * batch / seconds
            with torch.no_grad():
                seconds, _ = timed(lambda flow=flow: flow.log_prob(data_x[:20_000], data_t[:20_000]))
                density = 20_000 / seconds
            seconds, _ = timed(lambda flow=flow: [flow.sample(t, 4_000) for t in range(0, horizon + 1, 4)])
            sample = len(range(0, horizon + 1, 4)) * 4_000 / seconds
            entry = measured.setdefault(backend, {"train": [], "log_prob": [], "sample": []})
            entry["train"].append(train)
            entry["log_prob"].append(density)
            entry["sample"].append(sample)
    for backend, entry in measured.items():
        row = {"backend": backend, **{f"{k}_per_s": statistics.median(v) for k, v in entry.items()}}
        rows.append(row)
        print_fn(f"{backend:>8} {row['train_per_s']:>16,.0f} {row['log_prob_per_s']:>18,.0f} "
                 f"{row['sample_per_s']:>16,.0f}")
    ratios = {k: rows[1][f"{k}_per_s"] / rows[0][f"{k}_per_s"] for k in ("train", "log_prob", "sample")}
    print_fn("zuko / nflows: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "flows", "dim": dim, "config": FlowConfig().__dict__, "repeats": repeats,
              "machine": machine_info(), "rows": rows, "zuko_over_nflows": ratios}
    atomic_write(json.dumps(result, indent=2, default=str) + "\n", out / "flows.json")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    keys = ("train", "log_prob", "sample")
    for i, row in enumerate(rows):
        ax.bar(np.arange(3) + 0.38 * i, [row[f"{k}_per_s"] for k in keys], width=0.38, label=row["backend"])
    ax.set_xticks(np.arange(3) + 0.19, ["train samples/s", "log_prob points/s", "sample points/s"])
    ax.set_yscale("log")
    ax.set_title(f"flow backends, {dim}-D, default size, 1 thread (median of {repeats})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "flows.png", dpi=110)
    plt.close(fig)
    print_fn(f"written {out / 'flows.json'} and {out / 'flows.png'}")
    return result
