"""``dedafp bench refresh``: the population refresh at equal density error, flow against kernel estimate.

One iteration's population step of a trained run, done both ways from the same frozen state: the policy
π^k of checkpoint k is rolled out against μ^{k-1} (checkpoint k-1's population model), as the loop does, and

* ``flow``: checkpoint k-1's flow is refitted, warm-started, to ``flow_agents`` agents (the loop's refresh:
  rollout + refit);
* ``kde``: a Gaussian kernel estimate (the baselines' :class:`~dedafp.population.ParticlePopulation`, the
  run's ``fp.kde_bandwidth``) is built on each budget of ``kde_agents`` agents (rollout + build).

The density error is the held-out negative log-likelihood of a separate rollout of π^k, every t: the
difference of two models' NLLs is the difference of their KL divergences to the true marginals, so no
reference density is needed, and the comparison is paired on the same held-out agents. The kernel
estimate matches the flow where its NLL is no more than two paired standard errors above the flow's; the
verdict compares the refresh of the cheapest matching budget with the flow's (or says no budget matched).

Usage::

    result = bench_refresh(RefreshBenchConfig(run=Path("runs/four_rooms_omd")), Path("results/bench"))
    result["verdict"]
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.common.files import write_json
from dedafp.common.timing import machine_info, timed
from dedafp.population.base import PopulationModel
from dedafp.population.particles import ParticlePopulation
from dedafp.rollout import rollout

__all__ = ["RefreshBenchConfig", "bench_refresh", "equal_error_verdict"]


@dataclass(frozen=True)
class RefreshBenchConfig:
    """What ``dedafp bench refresh`` measures.

    Attributes:
        run: a run folder with checkpoints (``dedafp train ... --out DIR``), its population model a flow.
        iteration: the refresh of iteration k (>= 1; checkpoints k-1 and k); None: the last checkpoint.
        flow_agents: agents the flow is refitted to (>= 2); None: the run's ``fp.population_agents``.
        kde_agents: the kernel estimate's budgets (each >= 2).
        heldout_agents: agents of the held-out rollout, every t (>= 2).
        repeats: refreshes per estimator and budget (>= 1), each on a fresh rollout; seconds are medians.
        seed: seeds the rollouts and the flow's minibatches.
    """

    run: Path = Path("runs/four_rooms_omd")
    iteration: int | None = None
    flow_agents: int | None = None
    kde_agents: tuple[int, ...] = (5_000, 20_000, 80_000, 320_000)
    heldout_agents: int = 2_048
    repeats: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        def count(name: str, value: Any, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.iteration is not None:
            count("iteration", self.iteration, 1)
        if self.flow_agents is not None:
            count("flow_agents", self.flow_agents, 2)
        if not self.kde_agents:
            raise ValueError("kde_agents must name at least one budget")
        for value in self.kde_agents:
            count("kde_agents", value, 2)
        count("heldout_agents", self.heldout_agents, 2)
        count("repeats", self.repeats, 1)


def _checkpoint(run_dir: Path, k: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{k:03d}.pt"


def _last_iteration(run_dir: Path) -> int:
    found = [int(m.group(1)) for p in (run_dir / "checkpoints").glob("iter_*.pt")
             if (m := re.fullmatch(r"iter_(\d+)\.pt", p.name))]
    if not found or max(found) < 1:
        raise ValueError(f"{run_dir} has no checkpoint of an iteration k >= 1 in {run_dir / 'checkpoints'}; "
                         f"train it first (dedafp train ... --out {run_dir})")
    return max(found)


def _per_point_nll(model: PopulationModel, heldout: Tensor) -> tuple[Tensor, float]:
    """``-log μ_t(x)`` at every held-out state ``[T+1, n, d]``, flattened, and the seconds the queries took."""
    def query() -> Tensor:
        with torch.no_grad():
            return torch.cat([-model.log_prob(heldout[t], t).double() for t in range(heldout.shape[0])])
    seconds, nll = timed(query, model.device)
    if not bool(torch.isfinite(nll).all()):
        raise FloatingPointError("a population model returned a non-finite log-density on the held-out states")
    return nll, seconds


def equal_error_verdict(flow: dict[str, Any], kde: list[dict[str, Any]]) -> list[str]:
    """The verdict lines: the cheapest kernel budget whose held-out NLL is within two paired standard errors
    of the flow's (or above it: it is better), its refresh against the flow's; or that no budget matched."""
    matching = [r for r in kde if r["nll_minus_flow"] <= 2.0 * r["nll_minus_flow_se"]]
    lines = [f"flow: refresh {flow['refresh_seconds']:.2f} s (rollout of {flow['agents']:,} agents + warm refit), "
             f"held-out NLL {flow['nll']:.4f}"]
    if matching:
        best = min(matching, key=lambda r: r["refresh_seconds"])
        ratio = best["refresh_seconds"] / flow["refresh_seconds"]
        who = "the flow's refresh is faster" if ratio >= 1 else "the kernel estimate's refresh is faster"
        lines.append(f"kernel estimate at equal error: {best['agents']:,} agents (NLL {best['nll_minus_flow']:+.4f} "
                     f"± {2 * best['nll_minus_flow_se']:.4f} of the flow's), refresh {best['refresh_seconds']:.2f} s: "
                     f"{who} ({ratio:.2f}x the flow's time)")
    else:
        top = max(kde, key=lambda r: r["agents"])
        lines.append(f"no kernel budget up to {top['agents']:,} agents reaches the flow's error (there: NLL "
                     f"{top['nll_minus_flow']:+.4f} ± {2 * top['nll_minus_flow_se']:.4f} above it, refresh "
                     f"{top['refresh_seconds']:.2f} s): the flow's refresh is the cheaper at equal error")
    return lines


def bench_refresh(config: RefreshBenchConfig, out_dir: Path,
                  print_fn: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure (see the module docstring); writes ``refresh.json`` and ``refresh.md`` to ``out_dir``."""
    from dedafp.run import load_run
    load_at_start = os.getloadavg()[0]
    run = load_run(config.run)
    k = config.iteration if config.iteration is not None else _last_iteration(run.path)
    for i in (k - 1, k):
        if not _checkpoint(run.path, i).exists():
            raise ValueError(f"{run.path} has no checkpoint {_checkpoint(run.path, i).name} (iteration {k} needs "
                             f"checkpoints {k - 1} and {k})")
    before, after = (run.load_algorithm(_checkpoint(run.path, i)) for i in (k - 1, k))
    frozen, policy, game = before.population, after.average_policy, run.game
    if not hasattr(frozen, "fit"):
        raise ValueError(f"{run.path}'s population model is a {type(frozen).__name__}, not a flow: "
                         "the refresh benchmark refits a flow")
    device = frozen.device
    field = game.bind(frozen)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    def simulate(agents: int) -> tuple[float, Any]:
        return timed(lambda: rollout(game, policy, agents, field, consistent=True, generator=generator,
                                     device=device, rewards=False), device)

    heldout = simulate(config.heldout_agents)[1].states
    flow_agents = config.flow_agents or run.config.fp.population_agents
    print_fn(f"refresh of iteration {k} of {run.path}: flow refit to {flow_agents:,} agents, kernel estimates on "
             f"{', '.join(f'{n:,}' for n in config.kde_agents)}; held-out {config.heldout_agents:,} agents x "
             f"{heldout.shape[0]} t, {config.repeats} repeat(s)")

    def measure(name: str, agents: int, build: Callable[[Any, int], PopulationModel]) -> dict[str, Any]:
        rows, nlls = [], []
        for repeat in range(config.repeats):
            simulate_s, sim = simulate(agents)
            build_s, model = timed(lambda sim=sim, repeat=repeat: build(sim, repeat), device)
            nll, query_s = _per_point_nll(model, heldout)
            nlls.append(nll)
            rows.append({"rollout_seconds": simulate_s, "build_seconds": build_s, "query_seconds": query_s,
                         "refresh_seconds": simulate_s + build_s})
        nll = torch.stack(nlls).mean(0)
        row = {"estimator": name, "agents": agents, "nll": float(nll.mean()), "per_point_nll": nll,
               "repeats": rows, **{key: statistics.median(r[key] for r in rows) for key in rows[0]}}
        return row

    def refit(sim: Any, repeat: int) -> PopulationModel:
        model = copy.deepcopy(frozen)
        times, states = sim.population_samples()
        model.fit(times, states, generator=torch.Generator(device=device).manual_seed(config.seed + repeat))
        return model

    bandwidth = run.config.fp.kde_bandwidth
    flow = measure("flow", flow_agents, refit)
    print_fn(f"  flow {flow_agents:>9,}: refresh {flow['refresh_seconds']:7.2f} s (rollout "
             f"{flow['rollout_seconds']:.2f} + refit {flow['build_seconds']:.2f}), "
             f"held-out NLL {flow['nll']:.4f}")
    kde = []
    for agents in config.kde_agents:
        # Query chunks of 2**26 / agents points keep the kernel's pairwise block near 256 MB.
        row = measure("kde", agents, lambda sim, repeat: ParticlePopulation(
            sim.states, bandwidth, chunk=max(16, 2 ** 26 // sim.states.shape[1]), device=device))
        gap = row["per_point_nll"] - flow["per_point_nll"]
        row["nll_minus_flow"] = float(gap.mean())
        row["nll_minus_flow_se"] = float(gap.std() / np.sqrt(gap.numel()))
        kde.append(row)
        print_fn(f"  kde  {agents:>9,}: refresh {row['refresh_seconds']:7.2f} s (rollout "
                 f"{row['rollout_seconds']:.2f} + build {row['build_seconds']:.2f}), held-out NLL "
                 f"{row['nll']:.4f} ({row['nll_minus_flow']:+.4f} ± {2 * row['nll_minus_flow_se']:.4f} "
                 f"of the flow's), queries {row['query_seconds']:.1f} s")
    verdict = equal_error_verdict(flow, kde)
    for line in verdict:
        print_fn(line)
    public = [{key: value for key, value in r.items() if key != "per_point_nll"} for r in (flow, *kde)]
    result = {"machine": machine_info(load_at_start),
              "config": {**dataclasses.asdict(config), "run": str(config.run), "iteration": k,
                         "flow_agents": flow_agents, "kde_bandwidth": bandwidth, "game": game.name},
              "rows": public, "verdict": verdict}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(result, out_dir / "refresh.json")
    (out_dir / "refresh.md").write_text(_table(public, verdict))
    return result


def _table(rows: list[dict[str, Any]], verdict: list[str]) -> str:
    lines = ["| estimator | agents | rollout s | fit / build s | refresh s | held-out NLL | vs flow (± 2 se) | "
             "query s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gap = (f"{r['nll_minus_flow']:+.4f} ± {2 * r['nll_minus_flow_se']:.4f}" if "nll_minus_flow" in r else "")
        lines.append(f"| {r['estimator']} | {r['agents']:,} | {r['rollout_seconds']:.2f} | {r['build_seconds']:.2f} | "
                     f"{r['refresh_seconds']:.2f} | {r['nll']:.4f} | {gap} | {r['query_seconds']:.1f} |")
    return "\n".join(lines + [""] + [f"- {line}" for line in verdict]) + "\n"
