"""``dedafp bench sampling``: what producing and querying a four-rooms population really costs.

The DEDA-FP paper reports, on four-rooms with one RTX 4090, the time to produce 5,000 population
samples at once: 16.76 ± 1.54 s (Algo 1), 15.14 ± 1.19 s (Algo 2), 1.52 ± 0.33 s (DEDA-FP), a
"10×" advantage of the flow. This benchmark measures, with this project's own code and the paper's
sizes (5,000 agents, every t = 0..T), for each algorithm:

* **marginal samples**: 5,000 states of μ_t for every t. DEDA-FP draws them from the flow
  (``flow.sample(t, 5000)`` for every t); Algo 1 and Algo 2 must simulate 5,000 agents over the
  horizon (Algo 1: each agent follows one stored best response; Algo 2: the average policy).
* **trajectories**: 5,000 whole trajectories. A flow gives marginals only: its samples at different
  t are independent, not paths, so DEDA-FP too must roll out its average policy (the Algo 2 call).
* **density query**: ``log μ_t`` at the population's 5,000 positions for every t, what the reward
  needs. DEDA-FP: ``flow.log_prob``; Algo 1/2: a batched torch Gaussian kernel density
  (:class:`~dedafp.population.ParticlePopulation`) over the 5,000 simulated agents.
* **population refresh**: the work of one fictitious-play iteration's population step. DEDA-FP:
  a rollout and ``flow.fit`` (per-step time measured on a few steps, times the configured steps);
  Algo 1/2: a rollout and the kernel estimate's construction.
* **reward query**: one ``log_prob`` call at 64 agents (one vector step of a best response).

Beside these batched rows, *paper-style* rows run the baselines the way the paper's numbers
suggest: agents stepped one at a time through single Gymnasium envs with SB3's ``model.predict``
per agent (and, second variant, SB3's ``DummyVecEnv`` over single envs with one batched
``predict`` per step), densities by ``scipy.stats.gaussian_kde``. They are measured on a subset of
agents (or of times) and extrapolated linearly; both numbers are reported. Shortcuts on DEDA-FP's
side (zuko, fewer transforms, all t in one call, a cached density grid) are timed and their error
against the exact flow measured. Timings of untrained networks stand for trained ones: nothing
timed here branches on the weights.

Usage::

    result = bench_sampling(SamplingBenchConfig(repeats=3), Path("results/bench"))
    result["ratios"]    # per repeat medians of algo / DEDA-FP, measured in the same run
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.agents.average_policy import AveragePolicy, AveragePolicyConfig
from dedafp.agents.best_response import MLPPolicy, actor_network
from dedafp.agents.mixture import MixturePolicy
from dedafp.benchmarks.env_flows import _machine
from dedafp.envs.four_rooms import FourRoomsGame, crowd_term, four_rooms
from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.grid_cache import GridCachedPopulation
from dedafp.population.particles import ParticlePopulation
from dedafp.rollout import rollout

#: What the paper reports (four-rooms, one RTX 4090, seconds, mean ± sd over runs).
PAPER_SECONDS = {"algo1": (16.76, 1.54), "algo2": (15.14, 1.19), "dedafp": (1.52, 0.33)}
ALGORITHMS = ("algo1", "algo2", "dedafp")
TASKS = ("marginal_samples", "trajectories", "density_query", "samples_and_density", "population_refresh",
         "reward_query")


@dataclass(frozen=True)
class SamplingBenchConfig:
    """Sizes of the sampling benchmark.

    Attributes:
        samples: agents / samples per t (the paper's 5,000; >= 2).
        repeats: repeated measurements of every timed row (>= 1); medians and quartiles reported.
        device: ``"cpu"`` or ``"cuda"``; everything batched runs there (paper-style rows too).
        stored_best_responses: best responses Algo 1 keeps (its k; >= 1).
        paper_agents: agents of the paper-style rollouts (<= samples), extrapolated to ``samples``.
        paper_density_times: times at which scipy's gaussian_kde is timed (>= 1), extrapolated to all t.
        flow_fit_steps: Adam steps of one flow refit (four-rooms default 600; >= 1).
        fit_steps_measured: steps actually timed for the refit's per-step cost (>= 1).
        reward_batch: agents per reward query (the best response's num_envs; >= 1).
        grid_cells: cells per axis of the cached density grids compared (each >= 2).
        shortcut_agents: agents simulated for the data the shortcut flows are fitted to (>= 16).
        shortcut_fit_steps: Adam steps of each shortcut flow's fit (>= 0).
        error_points: random free-space points (per t) at which cached-grid errors are measured (>= 1).
        horizon: four-rooms horizon T (None: the game's 40).
        seed: seeds data, networks and samples.
    """

    samples: int = 5_000
    repeats: int = 3
    device: str = "cpu"
    stored_best_responses: int = 10
    paper_agents: int = 250
    paper_density_times: int = 4
    flow_fit_steps: int = 600
    fit_steps_measured: int = 20
    reward_batch: int = 64
    grid_cells: tuple[int, ...] = (44, 88, 176)
    shortcut_agents: int = 20_000
    shortcut_fit_steps: int = 600
    error_points: int = 5_000
    horizon: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name, minimum in (("samples", 2), ("repeats", 1), ("stored_best_responses", 1), ("paper_agents", 1),
                              ("paper_density_times", 1), ("flow_fit_steps", 1), ("fit_steps_measured", 1),
                              ("reward_batch", 1), ("shortcut_agents", 16), ("shortcut_fit_steps", 0),
                              ("error_points", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        if self.paper_agents > self.samples:
            raise ValueError(f"paper_agents must be <= samples, got {self.paper_agents} > {self.samples}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but torch.cuda.is_available() is False; use --device cpu")
        if not self.grid_cells or any(isinstance(c, bool) or not isinstance(c, int) or c < 2
                                      for c in self.grid_cells):
            raise ValueError(f"grid_cells must be integers >= 2, got {self.grid_cells!r}")
        if self.horizon is not None and (isinstance(self.horizon, bool) or not isinstance(self.horizon, int)
                                         or self.horizon < 1):
            raise ValueError(f"horizon must be None or an integer >= 1, got {self.horizon!r}")


@dataclass(frozen=True)
class Shapes:
    """Network sizes of one column of the benchmark.

    Attributes:
        name: ``"paper"`` or ``"default"``.
        best_response: hidden widths of each stored best response's actor (SB3 PPO, tanh).
        average: hidden width and layers of the behaviour-cloned average policy.
        flow: the population flow's configuration.
    """

    name: str
    best_response: tuple[int, ...]
    average: tuple[int, int]
    flow: FlowConfig

    def describe(self) -> str:
        f = self.flow
        return (f"best responses {'x'.join(map(str, self.best_response))} MLP, average {self.average[1]}x"
                f"{self.average[0]} MLP, flow {f.backend} {f.transforms} RQ-spline transforms "
                f"(hidden {f.hidden}, {f.bins} bins)")


def benchmark_shapes() -> tuple[Shapes, Shapes]:
    """The paper's sizes (2×256 networks, 16 spline transforms) and this project's four-rooms defaults."""
    from dedafp.config import load_config
    config = load_config("four_rooms")
    br, avg = config.best_response, config.average_policy
    default = Shapes("default", (br.hidden,) * br.layers, (avg.hidden, avg.layers), config.flow)
    # The paper: PPO with 2×256 networks, a neural spline flow of 16 autoregressive transforms
    # (its conditioner width and bins are unpublished: ours are kept).
    paper = Shapes("paper", (256, 256), (256, 2), dataclasses.replace(config.flow, transforms=16))
    return paper, default


# ---- timing helpers ---------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Wall-clock seconds of ``fn()`` (device work included) and its result."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def _summary(values: list[float]) -> dict[str, Any]:
    """Median, quartiles and sd of repeated measurements (seconds or ratios)."""
    q25, q50, q75 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"median": q50, "q25": q25, "q75": q75, "sd": sd, "values": [float(v) for v in values]}


class _FreeDensity:
    """A density field of constant ``log μ = 0``: lets the single env step without a density query.

    The paper-style sampling rows step the Gymnasium env only to move agents; what a density
    query costs is measured in the density rows, so it must not be counted twice.
    """

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        return x.new_zeros(x.shape[0])


class _RandomPolicy:
    """Gaussian velocities of standard deviation ``action_bound`` (clipped): spreads agents over the rooms."""

    def __init__(self, game: FourRoomsGame) -> None:
        self.action_bound = game.action_bound

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        zeros = x.new_zeros(x.shape[0], 2)
        return zeros, zeros + self.action_bound


# ---- what is benchmarked ----------------------------------------------------------------------

@dataclass
class _Column:
    """The objects timed for one set of shapes: stored best responses (SB3 models and their actors),
    the average policy (an SB3 model of its shape for the paper-style rows, the project's class for
    the batched ones) and the flow."""

    shapes: Shapes
    models: list[Any]
    average_model: Any
    mixture: MixturePolicy
    average: AveragePolicy
    flow: FlowPopulation


def _ppo(env: Any, hidden: tuple[int, ...], device: torch.device, seed: int) -> Any:
    from stable_baselines3 import PPO
    return PPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=seed, device=device, verbose=0,
               policy_kwargs={"net_arch": {"pi": list(hidden), "vf": list(hidden)}})


def _build_column(shapes: Shapes, game: FourRoomsGame, env: Any, config: SamplingBenchConfig,
                  device: torch.device) -> _Column:
    models = [_ppo(env, shapes.best_response, device, config.seed + i) for i in range(config.stored_best_responses)]
    average_model = _ppo(env, (shapes.average[0],) * shapes.average[1], device, config.seed + 999)
    mixture = MixturePolicy([MLPPolicy(actor_network(m.policy), game) for m in models])
    average = AveragePolicy(game, AveragePolicyConfig(hidden=shapes.average[0], layers=shapes.average[1]),
                            device, config.seed)
    # An untrained average policy plays a ≈ 0: perturb its head so that its agents move, as trained ones do.
    with torch.no_grad():
        average.net[-1].weight.normal_(0.0, 0.1)
    flow = FlowPopulation(shapes.flow, 2, game.horizon, device, config.seed)
    return _Column(shapes, models, average_model, mixture, average, flow)


def _flow_samples(flow: FlowPopulation, n: int, horizon: int) -> list[Tensor]:
    with torch.no_grad():
        return [flow.sample(t, n) for t in range(horizon + 1)]


def _log_density_all_t(model: Any, states: Tensor) -> list[Tensor]:
    """``log μ_t`` at ``states[t]`` (``[T+1, n, d]``) for every t, one call per t."""
    with torch.no_grad():
        return [model.log_prob(states[t], t) for t in range(states.shape[0])]


def _reward_query_seconds(model: Any, states: Tensor, batch: int, device: torch.device) -> float:
    """Seconds per ``log_prob`` call at ``batch`` agents (mean over one call per t)."""
    seconds, _ = _timed(lambda: _log_density_all_t(model, states[:, :batch]), device)
    return seconds / states.shape[0]


def _fit_step_seconds(shapes: Shapes, sim_states: Tensor, config: SamplingBenchConfig,
                      device: torch.device) -> float:
    """Seconds per Adam step of a flow fit on a rollout (a fresh flow, so the timed one stays untrained)."""
    flow = FlowPopulation(shapes.flow, 2, sim_states.shape[0] - 1, device, config.seed)
    times = torch.arange(sim_states.shape[0], device=device).repeat_interleave(sim_states.shape[1])
    seconds, _ = _timed(lambda: flow.fit(times, sim_states.reshape(-1, 2), steps=config.fit_steps_measured),
                        device)
    return seconds / config.fit_steps_measured


def _batched_repeat(column: _Column, game: FourRoomsGame, config: SamplingBenchConfig, device: torch.device,
                    generator: torch.Generator, kde_seconds: float) -> dict[str, float]:
    """One repeat of the batched rows of one column: ``{"task/algorithm": seconds}``.

    ``kde_seconds`` is the kernel density query over all t, timed once per repeat (it depends on the
    particle count only, not on the networks).
    """
    n, T = config.samples, game.horizon
    out: dict[str, float] = {}
    out["marginal_samples/dedafp"], _ = _timed(lambda: _flow_samples(column.flow, n, T), device)
    out["marginal_samples/algo1"], _ = _timed(
        lambda: rollout(game, column.mixture, n, None, generator=generator, device=device, rewards=False), device)
    out["marginal_samples/algo2"], sim2 = _timed(
        lambda: rollout(game, column.average, n, None, generator=generator, device=device, rewards=False), device)
    # A rollout *is* the trajectories; the flow has none, so DEDA-FP rolls out its average policy.
    for algorithm, seconds in (("algo1", out["marginal_samples/algo1"]), ("algo2", out["marginal_samples/algo2"]),
                               ("dedafp", out["marginal_samples/algo2"])):
        out[f"trajectories/{algorithm}"] = seconds
    out["density_query/dedafp"], _ = _timed(lambda: _log_density_all_t(column.flow, sim2.states), device)
    build, kde = _timed(lambda: ParticlePopulation(sim2.states, "scott", device=device), device)
    out["density_query/algo1"] = out["density_query/algo2"] = kde_seconds + build
    fit_step = _fit_step_seconds(column.shapes, sim2.states, config, device)
    out["population_refresh/dedafp"] = out["marginal_samples/algo2"] + fit_step * config.flow_fit_steps
    out["population_refresh/algo1"] = out["marginal_samples/algo1"] + build
    out["population_refresh/algo2"] = out["marginal_samples/algo2"] + build
    out["reward_query/dedafp"] = _reward_query_seconds(column.flow, sim2.states, config.reward_batch, device)
    out["reward_query/algo1"] = out["reward_query/algo2"] = _reward_query_seconds(
        kde, sim2.states, config.reward_batch, device)
    out["samples_and_density/dedafp"] = out["marginal_samples/dedafp"] + out["density_query/dedafp"]
    for algorithm in ("algo1", "algo2"):
        out[f"samples_and_density/{algorithm}"] = out[f"marginal_samples/{algorithm}"] + out[
            f"density_query/{algorithm}"]
    return out


# ---- paper-style rows -------------------------------------------------------------------------

def _single_env(game_overrides: dict[str, Any]) -> Any:
    import gymnasium

    import dedafp.envs  # noqa: F401  (registers the ids)
    return gymnasium.make("dedafp/FourRooms-v0", population=_FreeDensity(), **game_overrides)


def _per_agent_rollout(models: list[Any], agents: int, horizon: int, game_overrides: dict[str, Any]) -> Tensor:
    """Agents one at a time through one Gymnasium env, ``model.predict`` per agent and step.

    Agent i follows ``models[i mod k]`` for its whole episode (Algo 1's mixture; one model: Algo 2).
    Returns the visited states ``[T+1, agents, 2]``.
    """
    env = _single_env(game_overrides)
    states = np.empty((horizon + 1, agents, 2), dtype=np.float32)
    for i in range(agents):
        model = models[i % len(models)]
        obs, _ = env.reset(seed=i)
        states[0, i] = env.unwrapped.state[0].numpy()
        for t in range(horizon):
            action, _ = model.predict(obs, deterministic=False)
            obs, _, _, _, _ = env.step(action)
            states[t + 1, i] = env.unwrapped.state[0].numpy()
    return torch.from_numpy(states)


def _dummy_vec_rollout(models: list[Any], agents: int, horizon: int, game_overrides: dict[str, Any]) -> None:
    """SB3's ``DummyVecEnv`` over ``agents`` single envs; one batched ``predict`` per stored model and step."""
    from stable_baselines3.common.vec_env import DummyVecEnv
    venv = DummyVecEnv([lambda: _single_env(game_overrides) for _ in range(agents)])
    obs = venv.reset()
    k = len(models)
    for _ in range(horizon):
        actions = np.empty((agents, 2), dtype=np.float32)
        for j, model in enumerate(models):
            if obs[j::k].shape[0]:
                actions[j::k] = model.predict(obs[j::k], deterministic=False)[0]
        obs, _, _, _ = venv.step(actions)
    venv.close()


def _scipy_kde_seconds(states: Tensor, times: list[int]) -> float:
    """scipy ``gaussian_kde`` fit + ``logpdf`` at the particles themselves, summed over ``times``."""
    from scipy.stats import gaussian_kde
    start = time.perf_counter()
    for t in times:
        data = states[t].double().cpu().numpy().T
        gaussian_kde(data, bw_method="scott").logpdf(data)
    return time.perf_counter() - start


def _paper_style_repeat(column: _Column, states: Tensor, config: SamplingBenchConfig,
                        game_overrides: dict[str, Any], horizon: int) -> dict[str, float]:
    """One repeat of the paper-style rows (measured on subsets): ``{"row/algorithm": seconds}``."""
    m = config.paper_agents
    out: dict[str, float] = {}
    for algorithm, models in (("algo1", column.models), ("algo2", [column.average_model])):
        start = time.perf_counter()
        _per_agent_rollout(models, m, horizon, game_overrides)
        out[f"per_agent/{algorithm}"] = time.perf_counter() - start
        start = time.perf_counter()
        _dummy_vec_rollout(models, m, horizon, game_overrides)
        out[f"dummy_vec_env/{algorithm}"] = time.perf_counter() - start
    picks = np.linspace(0, horizon, config.paper_density_times).round().astype(int).tolist()
    out["scipy_kde/both"] = _scipy_kde_seconds(states, picks)
    return out


def _env_step_with_kde_reward(states: Tensor, game_overrides: dict[str, Any], steps: int = 200) -> float:
    """Seconds per single-env step when the reward queries a 5,000-particle KDE (the project's class)."""
    import gymnasium
    env = gymnasium.make("dedafp/FourRooms-v0", population=ParticlePopulation(states.cpu()), **game_overrides)
    env.reset(seed=0)
    action = np.zeros(2, dtype=np.float32)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, _, _ = env.step(action)
        if terminated:
            env.reset()
    return (time.perf_counter() - start) / steps


# ---- DEDA-FP's shortcuts: what each costs and how far it is from the exact flow ---------------

def _shortcut_flows(default: FlowConfig, paper: FlowConfig) -> dict[str, FlowConfig]:
    """The flows compared: the paper's depth (the reference), the project default, zuko, a small one."""
    return {"paper nflows x16": paper, "default nflows x5": default,
            "default zuko x5": dataclasses.replace(default, backend="zuko"),
            "small nflows x3 (hidden 32)": dataclasses.replace(default, transforms=3, hidden=32)}


def _crowd(log_density: Tensor, game: FourRoomsGame) -> Tensor:
    return crowd_term(log_density, game.config)


def _grid_errors(flow: FlowPopulation, grid: GridCachedPopulation, game: FourRoomsGame, held_out: Tensor,
                 config: SamplingBenchConfig, generator: torch.Generator) -> dict[str, float]:
    """Errors of the cached grid against the exact flow: ``log μ`` and the crowd term ``-log(μ + ε)``.

    Measured at uniform free-space points and at the population's own (held-out) positions, the
    points the reward is actually asked about, over every t; split into the grid's interior and its
    outer half cell along the box boundary, where it extrapolates (``edge_fraction``: the share of
    points there).
    """
    errors: dict[str, list[Tensor]] = {}
    edges: dict[str, list[Tensor]] = {}
    half_cell = 0.5 / torch.tensor(grid.cells, dtype=torch.float32, device=flow.device)
    with torch.no_grad():
        for t in range(game.horizon + 1):
            free = game.exploring_states(config.error_points, generator, flow.device)
            for name, x in (("free", free), ("population", held_out[t])):
                exact, cached = flow.log_prob(x, t), grid.log_prob(x, t)
                errors.setdefault(name, []).append((cached - exact).abs())
                errors.setdefault(f"crowd_{name}", []).append((_crowd(cached, game) - _crowd(exact, game)).abs())
                edge = ((x < half_cell) | (x > 1.0 - half_cell)).any(-1)
                edges.setdefault(name, []).append(edge)
                edges.setdefault(f"crowd_{name}", []).append(edge)
    out = {}
    for name, pieces in errors.items():
        values, edge = torch.cat(pieces), torch.cat(edges[name])
        out[f"{name}_mean"] = float(values.mean())
        out[f"{name}_max"] = float(values.max())
        inner = values[~edge].double()
        if inner.numel():
            out[f"{name}_interior_mean"] = float(inner.mean())
            out[f"{name}_interior_p99"] = float(torch.quantile(inner[:1_000_000], 0.99))
            out[f"{name}_interior_max"] = float(inner.max())
        out[f"{name}_edge_max"] = float(values[edge].max()) if edge.any() else 0.0
        if not name.startswith("crowd_"):
            out[f"{name}_edge_fraction"] = float(edge.float().mean())
    return out


def _shortcut_study(game: FourRoomsGame, columns: tuple[_Column, _Column], config: SamplingBenchConfig,
                    device: torch.device, print_fn: Callable[[str], None]) -> tuple[dict, dict]:
    """Fit the shortcut flows on the same four-rooms data; measure held-out NLL and the grid caches' errors.

    Returns the JSON section and the objects the timed loop reuses (the fitted default flow and its grids).
    """
    generator = torch.Generator(device=device).manual_seed(config.seed + 7)
    policy = _RandomPolicy(game)
    train = rollout(game, policy, config.shortcut_agents, None, generator=generator, device=device, rewards=False)
    test = rollout(game, policy, config.samples, None, generator=generator, device=device, rewards=False)
    times, states = train.population_samples()
    test_times, test_states = test.population_samples()
    flows, rows = {}, []
    paper, default = columns[0].shapes.flow, columns[1].shapes.flow
    for name, flow_config in _shortcut_flows(default, paper).items():
        flow = FlowPopulation(flow_config, 2, game.horizon, device, config.seed)
        fit, _ = _timed(lambda flow=flow: flow.fit(times, states, steps=config.shortcut_fit_steps,
                                                   generator=generator), device)
        with torch.no_grad():
            nll = flow.nll(test_times, test_states)
        flows[name] = flow
        rows.append({"flow": name, "config": dataclasses.asdict(flow_config), "fit_seconds": fit,
                     "fit_steps": config.shortcut_fit_steps, "held_out_nll": nll})
        print_fn(f"  shortcut flow {name:<28} fit {fit:6.1f} s ({config.shortcut_fit_steps} steps), "
                 f"held-out NLL {nll:.4f} nats")
    reference = rows[0]["held_out_nll"]
    for row in rows:
        row["nll_minus_paper_flow"] = row["held_out_nll"] - reference
    exact = flows["default nflows x5"]
    grids, grid_rows = {}, []
    for cells in config.grid_cells:
        grid = GridCachedPopulation(exact, (0.0, 0.0), (1.0, 1.0), cells)
        grids[cells] = grid
        errors = _grid_errors(exact, grid, game, test.states, config, generator)
        grid_rows.append({"cells": cells, "build_seconds": grid.build_seconds, **errors})
        print_fn(f"  grid {cells:>3}x{cells:<3} build {grid.build_seconds:5.2f} s; |log mu error| at the population: "
                 f"mean {errors['population_mean']:.4f}, interior p99 {errors.get('population_interior_p99', 0):.3f} "
                 f"max {errors.get('population_interior_max', 0):.3f}, outer half cell "
                 f"({errors['population_edge_fraction']:.1%} of points) max {errors['population_edge_max']:.2f}; "
                 f"crowd term interior max {errors.get('crowd_population_interior_max', 0):.3f}")
    section = {"data": f"{config.shortcut_agents} agents of a random Gaussian-velocity policy (std = action bound), "
                       f"held out: {config.samples}",
               "flows": rows, "grid_cache": {"wrapped_flow": "default nflows x5 (fitted)", "rows": grid_rows}}
    return section, {"flow": exact, "grids": grids, "states": test.states}


def _shortcut_repeat(column: _Column, fitted: dict, game: FourRoomsGame, config: SamplingBenchConfig,
                     device: torch.device) -> dict[str, float]:
    """One repeat of the shortcut timings (project-default column): ``{"shortcut/what": seconds}``."""
    n, T = config.samples, game.horizon
    out: dict[str, float] = {}
    zuko = FlowPopulation(dataclasses.replace(column.shapes.flow, backend="zuko"), 2, T, device, config.seed)
    out["marginal_samples/zuko"], _ = _timed(lambda: _flow_samples(zuko, n, T), device)
    states = fitted["states"]
    out["density_query/zuko"], _ = _timed(lambda: _log_density_all_t(zuko, states), device)
    times = torch.arange(T + 1, device=device).repeat_interleave(n)
    z = torch.randn(times.shape[0], 2, device=device)
    with torch.no_grad():
        out["marginal_samples/nflows, all t in one call"], _ = _timed(lambda: column.flow.from_base(z, times), device)
        out["density_query/nflows, all t in one call"], _ = _timed(
            lambda: column.flow.log_prob(states.reshape(-1, 2), times), device)
    for cells, grid in fitted["grids"].items():
        out[f"density_query/grid {cells}"], _ = _timed(lambda grid=grid: _log_density_all_t(grid, states), device)
        out[f"reward_query/grid {cells}"] = _reward_query_seconds(grid, states, config.reward_batch, device)
    out["reward_query/zuko"] = _reward_query_seconds(zuko, states, config.reward_batch, device)
    return out


# ---- the benchmark ----------------------------------------------------------------------------

def _ratio_rows(measured: dict[str, list[float]], pairs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    """Per-repeat ratios ``numerator / denominator`` (both measured in the same repeat), summarised."""
    rows = []
    for label, numerator, denominator in pairs:
        if numerator in measured and denominator in measured:
            values = [a / b for a, b in zip(measured[numerator], measured[denominator], strict=True)]
            rows.append({"ratio": label, "numerator": numerator, "denominator": denominator, **_summary(values)})
    return rows


def _verdict(ratios: list[dict[str, Any]]) -> str:
    by = {r["ratio"]: r["median"] for r in ratios}
    paper = PAPER_SECONDS["algo1"][0] / PAPER_SECONDS["dedafp"][0]
    batched = by.get("paper shapes, batched: Algo 1 / DEDA-FP, marginal samples")
    per_agent = by.get("paper-style per-agent Algo 1 / DEDA-FP flow, marginal samples")
    dummy = by.get("paper-style DummyVecEnv Algo 1 / DEDA-FP flow, marginal samples")
    if batched is None or per_agent is None or dummy is None:
        return "incomplete"
    text = [f"Paper: Algo 1 / DEDA-FP = {paper:.1f}x for 5,000 samples."]
    if batched < 1:
        text.append(f"Batched (this project), Algo 1 produces them {1 / batched:.1f}x FASTER than the paper-size flow "
                    f"(ratio {batched:.2f}): the 10x advantage is refuted against batched baselines.")
    else:
        text.append(f"Batched (this project), Algo 1 / DEDA-FP = {batched:.2f}x.")
    close = [name for name, value in (("per-agent", per_agent), ("DummyVecEnv", dummy))
             if paper / 3 <= value <= paper * 3]
    text.append(f"Paper-style, Algo 1 / DEDA-FP = {per_agent:.1f}x (one agent at a time) and {dummy:.1f}x "
                f"(DummyVecEnv): " + (f"the paper's order of magnitude is reproduced by the unbatched "
                                      f"{' and '.join(close)} baseline(s) only." if close else
                                      "not within 3x of the paper's ratio either."))
    return " ".join(text)


def bench_sampling(config: SamplingBenchConfig, out: Path, print_fn: Callable[[str], None] = print) -> dict:
    """Run the sampling and density benchmark; write ``sampling.json`` and ``sampling.png`` under ``out``.

    Returns the JSON document (seconds throughout; ``rows`` with median, quartiles, sd and the
    per-repeat values; ``ratios`` computed repeat by repeat).
    """
    device = torch.device(config.device)
    load_at_start = os.getloadavg()[0]
    torch.manual_seed(config.seed)
    overrides = {} if config.horizon is None else {"horizon": config.horizon}
    game = FourRoomsGame(four_rooms(**overrides))
    T = game.horizon
    generator = torch.Generator(device=device).manual_seed(config.seed)
    env = _single_env(overrides)
    columns = tuple(_build_column(s, game, env, config, device) for s in benchmark_shapes())
    print_fn(f"four-rooms, {config.samples} samples x {T + 1} times, device {device}, {config.repeats} repeats")
    for column in columns:
        print_fn(f"  {column.shapes.name} shapes: {column.shapes.describe()}")
    shortcut_section, fitted = _shortcut_study(game, columns, config, device, print_fn)

    measured: dict[str, list[float]] = {}

    def record(prefix: str, values: dict[str, float]) -> None:
        for key, value in values.items():
            measured.setdefault(f"{prefix}/{key}", []).append(value)

    kde_states = fitted["states"]
    for repeat in range(config.repeats):
        # Every row of a repeat is measured back to back, so machine noise hits the ratios' two sides alike.
        kde_seconds, _ = _timed(lambda: _log_density_all_t(ParticlePopulation(kde_states, device=device),
                                                           kde_states), device)
        for column in columns:
            record(f"batched/{column.shapes.name}", _batched_repeat(column, game, config, device, generator,
                                                                     kde_seconds))
        record("shortcut/default", _shortcut_repeat(columns[1], fitted, game, config, device))
        record("paper-style/paper", _paper_style_repeat(columns[0], kde_states, config, overrides, T))
        print_fn(f"  repeat {repeat + 1}/{config.repeats} done")

    scale_agents = config.samples / config.paper_agents
    scale_times = (T + 1) / config.paper_density_times
    for key in [k for k in measured if k.startswith("paper-style/")]:
        scale = scale_times if "scipy_kde" in key else scale_agents
        measured[f"{key}/extrapolated"] = [v * scale for v in measured[key]]

    rows = []
    for key, values in measured.items():
        parts = key.split("/")
        row = {"style": parts[0], "shape": parts[1], "task": parts[2], "algorithm": parts[3],
               "extrapolated": key.endswith("/extrapolated"), **_summary(values)}
        rows.append(row)

    pairs = []
    for shape in ("paper", "default"):
        for task in TASKS:
            for algorithm in ("algo1", "algo2"):
                pairs.append((f"{shape} shapes, batched: {algorithm.replace('algo', 'Algo ')} / DEDA-FP, "
                              f"{task.replace('_', ' ')}", f"batched/{shape}/{task}/{algorithm}",
                              f"batched/{shape}/{task}/dedafp"))
    for style, label in (("per_agent", "per-agent"), ("dummy_vec_env", "DummyVecEnv")):
        for algorithm in ("algo1", "algo2"):
            name = algorithm.replace("algo", "Algo ")
            pairs.append((f"paper-style {label} {name} / DEDA-FP flow, marginal samples",
                          f"paper-style/paper/{style}/{algorithm}/extrapolated",
                          "batched/paper/marginal_samples/dedafp"))
            pairs.append((f"paper-style {label} / batched, {name} rollout",
                          f"paper-style/paper/{style}/{algorithm}/extrapolated",
                          f"batched/paper/marginal_samples/{algorithm}"))
    pairs.append(("scipy gaussian_kde / batched torch KDE, density query",
                  "paper-style/paper/scipy_kde/both/extrapolated", "batched/paper/density_query/algo1"))
    pairs.append(("default flow / paper flow, marginal samples", "batched/default/marginal_samples/dedafp",
                  "batched/paper/marginal_samples/dedafp"))
    ratios = _ratio_rows(measured, pairs)
    verdict = _verdict(ratios)

    env_step_kde = _env_step_with_kde_reward(kde_states, overrides)
    result = {
        "benchmark": "sampling", "game": "four_rooms", "horizon": T, "device": str(device),
        "config": dataclasses.asdict(config),
        "machine": {**_machine(), "load_average_1min": {"start": load_at_start, "end": os.getloadavg()[0]}},
        "shapes": {c.shapes.name: c.shapes.describe() for c in columns},
        "paper_seconds": {k: {"mean": v[0], "sd": v[1]} for k, v in PAPER_SECONDS.items()},
        "notes": {
            "trajectories": "a flow gives per-time marginals only (its samples at different t are independent), "
                            "so DEDA-FP's trajectories are a rollout of its average policy: the Algo 2 call",
            "density_query": "Algo 1 and Algo 2 run the same kernel code at the same sizes (timed once per repeat)",
            "population_refresh": f"DEDA-FP: rollout + flow fit of {config.flow_fit_steps} steps (per-step time "
                                  f"measured over {config.fit_steps_measured} steps); Algo 1/2: rollout + KDE build",
            "paper_style": f"rollouts measured on {config.paper_agents} agents and scaled by {scale_agents:g}; "
                           f"scipy KDE measured at {config.paper_density_times} times and scaled by "
                           f"{scale_times:g}; the env's own density reward is answered by a constant so that "
                           "density costs are counted once, in the density rows",
            "untrained": "networks are untrained; nothing timed branches on the weights",
        },
        "single_env_step_with_kde_reward_seconds": env_step_kde,
        "rows": rows, "ratios": ratios, "verdict": verdict, "shortcuts": shortcut_section,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampling.json").write_text(json.dumps(result, indent=2))
    _print_tables(result, print_fn)
    _plot(result, out / "sampling.png")
    print_fn(f"written {out / 'sampling.json'} and {out / 'sampling.png'}")
    return result


# ---- report -----------------------------------------------------------------------------------

def _row(result: dict, style: str, shape: str, task: str, algorithm: str, extrapolated: bool = False) -> dict | None:
    """The row with these labels, or None."""
    for row in result["rows"]:
        if (row["style"], row["shape"], row["task"], row["algorithm"], row["extrapolated"]) == (
                style, shape, task, algorithm, extrapolated):
            return row
    return None


def _print_tables(result: dict, print_fn: Callable[[str], None]) -> None:
    for shape in ("paper", "default"):
        print_fn(f"\nbatched, {shape} shapes (median seconds [IQR])")
        print_fn(f"{'task':>20} " + " ".join(f"{a:>22}" for a in ALGORITHMS))
        for task in TASKS:
            cells = []
            for algorithm in ALGORITHMS:
                row = _row(result, "batched", shape, task, algorithm)
                cells.append(f"{row['median']:>9.4g} [{row['q25']:.3g}-{row['q75']:.3g}]" if row else "-")
            print_fn(f"{task:>20} " + " ".join(f"{c:>22}" for c in cells))
    print_fn("\npaper-style (paper shapes), extrapolated to the full size (measured subset in brackets)")
    for task, algorithm in (("per_agent", "algo1"), ("per_agent", "algo2"), ("dummy_vec_env", "algo1"),
                            ("dummy_vec_env", "algo2"), ("scipy_kde", "both")):
        full = _row(result, "paper-style", "paper", task, algorithm, extrapolated=True)
        part = _row(result, "paper-style", "paper", task, algorithm)
        print_fn(f"{task + ' ' + algorithm:>24} {full['median']:>9.4g} s  (measured {part['median']:.4g} s)")
    print_fn("\nDEDA-FP shortcuts (default shapes, median seconds)")
    for row in result["rows"]:
        if row["style"] == "shortcut":
            print_fn(f"{row['task'] + ' ' + row['algorithm']:>48} {row['median']:>9.4g}")
    print_fn("\nratios (median over repeats [min-max])")
    for ratio in result["ratios"]:
        print_fn(f"{ratio['ratio']:>80} {ratio['median']:>8.3g} [{min(ratio['values']):.3g}-"
                 f"{max(ratio['values']):.3g}]")
    print_fn("\n" + result["verdict"])



def _plot(result: dict, path: Path) -> None:
    """Three panels: batched rows at the paper's and the default shapes (paper-style and the paper's own
    numbers beside them), and the reward query's cost against the cached grid's error."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.25, 1.25, 1]})
    tasks = ("marginal_samples", "trajectories", "density_query", "population_refresh")
    colours = {"algo1": "tab:orange", "algo2": "tab:green", "dedafp": "tab:blue"}
    for ax, shape in zip(axes[:2], ("paper", "default"), strict=True):
        width = 0.26
        for i, algorithm in enumerate(ALGORITHMS):
            rows = [_row(result, "batched", shape, task, algorithm) for task in tasks]
            heights = [r["median"] for r in rows]
            errors = np.array([[r["median"] - r["q25"] for r in rows], [r["q75"] - r["median"] for r in rows]])
            bars = ax.bar(np.arange(len(tasks)) + (i - 1) * width, heights, width, yerr=errors,
                          color=colours[algorithm], label=f"{algorithm} (batched)")
            ax.bar_label(bars, fmt="%.3g", fontsize=5.5, padding=1)
        if shape == "paper":
            extra = [("per_agent", "algo1", "Algo 1 paper-style, per agent"),
                     ("dummy_vec_env", "algo1", "Algo 1 paper-style, DummyVecEnv")]
            for j, (task, algorithm, label) in enumerate(extra):
                row = _row(result, "paper-style", "paper", task, algorithm, extrapolated=True)
                bars = ax.bar(4 + (j - 0.5) * width, row["median"], width, color="tab:orange", alpha=0.45,
                              hatch="//" if j == 0 else "xx", label=label + " (extrapolated)")
                ax.bar_label(bars, fmt="%.3g", fontsize=5.5, padding=1)
            for j, algorithm in enumerate(ALGORITHMS):
                mean, sd = PAPER_SECONDS[algorithm]
                bars = ax.bar(5 + (j - 1) * width, mean, width, yerr=sd, color=colours[algorithm], alpha=0.35,
                              hatch="..", label="paper, RTX 4090" if j == 0 else None)
                ax.bar_label(bars, fmt="%.3g", fontsize=5.5, padding=1)
            ticks = [*tasks, "paper-style\nsamples", "paper's\nreported"]
        else:
            ticks = list(tasks)
        ax.set_xticks(np.arange(len(ticks)), [t.replace("_", "\n") for t in ticks], fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.3 * min(bar.get_height() for bar in ax.patches))
        ax.set_ylabel(f"seconds (median, IQR), {result['device']}")
        ax.set_title(f"{shape} shapes: {result['config']['samples']} agents/samples, every t", fontsize=9)
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=6.5, loc="upper left")
    ax = axes[2]
    grid_rows = result["shortcuts"]["grid_cache"]["rows"]
    labels, seconds, notes = [], [], []
    for name, style, shape, task, algorithm in (("flow, paper", "batched", "paper", "reward_query", "dedafp"),
                                                ("flow, default", "batched", "default", "reward_query", "dedafp"),
                                                ("zuko, default", "shortcut", "default", "reward_query", "zuko"),
                                                ("KDE", "batched", "default", "reward_query", "algo1")):
        labels.append(name)
        seconds.append(_row(result, style, shape, task, algorithm)["median"])
        notes.append("exact")
    for grid in grid_rows:
        labels.append(f"grid {grid['cells']}")
        seconds.append(_row(result, "shortcut", "default", "reward_query", f"grid {grid['cells']}")["median"])
        notes.append(f"crowd-term err: interior max {grid.get('crowd_population_interior_max', 0):.2g}, "
                     f"edge max {grid['crowd_population_edge_max']:.2g}")
    ax.barh(np.arange(len(labels)), np.array(seconds) * 1e3, color=["tab:blue"] * 3 + ["tab:orange"]
            + ["tab:purple"] * len(grid_rows))
    for i, note in enumerate(notes):
        ax.text(seconds[i] * 1e3 * 1.1, i, note, va="center", fontsize=7)
    ax.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per reward query ({result['config']['reward_batch']} agents)")
    ax.set_title("reward query: exact models vs cached grids of the default flow", fontsize=9)
    ax.grid(alpha=0.3, axis="x", which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
