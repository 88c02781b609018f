"""The rows of ``dedafp bench sampling`` timed at this project's batch sizes, and DEDA-FP's shortcuts.

One :class:`Column` holds the objects timed for one set of network shapes (Algo 1's stored best
responses, the average policy, the flow); :func:`batched_repeat` times every batched task of a column
once; :func:`shortcut_study` fits the shortcut flows and cached density grids once and measures their
error against the exact flow, :func:`shortcut_repeat` times them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dedafp.agents.average_policy import AveragePolicy, AveragePolicyConfig
from dedafp.agents.best_response import MLPPolicy, actor_network
from dedafp.agents.mixture import MixturePolicy
from dedafp.common.timing import timed
from dedafp.config import FictitiousPlayConfig
from dedafp.envs.four_rooms import FourRoomsGame, crowd_term
from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.grid_cache import GridCachedPopulation, reward_table
from dedafp.population.particles import ParticlePopulation
from dedafp.rollout import rollout

if TYPE_CHECKING:
    from dedafp.benchmarks.sampling import SamplingBenchConfig, Shapes


class _RandomPolicy:
    """Gaussian velocities of standard deviation ``action_bound`` (clipped): spreads agents over the rooms."""

    def __init__(self, game: FourRoomsGame) -> None:
        self.action_bound = game.action_bound

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        zeros = x.new_zeros(x.shape[0], 2)
        return zeros, zeros + self.action_bound


# ---- what is benchmarked ----------------------------------------------------------------------

@dataclass
class Column:
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


def build_column(shapes: Shapes, game: FourRoomsGame, env: Any, config: SamplingBenchConfig,
                 device: torch.device) -> Column:
    models = [_ppo(env, shapes.best_response, device, config.seed + i) for i in range(config.stored_best_responses)]
    average_model = _ppo(env, (shapes.average[0],) * shapes.average[1], device, config.seed + 999)
    mixture = MixturePolicy([MLPPolicy(actor_network(m.policy), game) for m in models])
    average = AveragePolicy(game, AveragePolicyConfig(hidden=shapes.average[0], layers=shapes.average[1]),
                            device, config.seed)
    # An untrained average policy plays a ≈ 0: perturb its head so that its agents move, as trained ones do.
    with torch.no_grad():
        average.net[-1].weight.normal_(0.0, 0.1)
    flow = FlowPopulation(shapes.flow, 2, game.horizon, device, config.seed)
    return Column(shapes, models, average_model, mixture, average, flow)


def flow_samples(flow: FlowPopulation, n: int, horizon: int) -> list[Tensor]:
    with torch.no_grad():
        return [flow.sample(t, n) for t in range(horizon + 1)]


def log_density_all_t(model: Any, states: Tensor) -> list[Tensor]:
    """``log μ_t`` at ``states[t]`` (``[T+1, n, d]``) for every t, one call per t."""
    with torch.no_grad():
        return [model.log_prob(states[t], t) for t in range(states.shape[0])]


def reward_query_seconds(model: Any, states: Tensor, batch: int, device: torch.device) -> float:
    """Seconds per ``log_prob`` call at ``batch`` agents (mean over one call per t)."""
    seconds, _ = timed(lambda: log_density_all_t(model, states[:, :batch]), device)
    return seconds / states.shape[0]


def _fit_step_seconds(shapes: Shapes, sim_states: Tensor, config: SamplingBenchConfig,
                      device: torch.device) -> float:
    """Seconds per Adam step of a flow fit on a rollout (a fresh flow, so the timed one stays untrained)."""
    flow = FlowPopulation(shapes.flow, 2, sim_states.shape[0] - 1, device, config.seed)
    times = torch.arange(sim_states.shape[0], device=device).repeat_interleave(sim_states.shape[1])
    seconds, _ = timed(lambda: flow.fit(times, sim_states.reshape(-1, 2), steps=config.fit_steps_measured),
                        device)
    return seconds / config.fit_steps_measured


def batched_repeat(column: Column, game: FourRoomsGame, config: SamplingBenchConfig, device: torch.device,
                   generator: torch.Generator, kde_seconds: float) -> dict[str, float]:
    """One repeat of the batched rows of one column: ``{"task/algorithm": seconds}``.

    ``kde_seconds`` is the kernel density query over all t, timed once per repeat (it depends on the
    particle count only, not on the networks).
    """
    n, T = config.samples, game.horizon
    out: dict[str, float] = {}
    out["marginal_samples/dedafp"], _ = timed(lambda: flow_samples(column.flow, n, T), device)
    out["marginal_samples/algo1"], _ = timed(
        lambda: rollout(game, column.mixture, n, None, generator=generator, device=device, rewards=False), device)
    out["marginal_samples/algo2"], sim2 = timed(
        lambda: rollout(game, column.average, n, None, generator=generator, device=device, rewards=False), device)
    # A rollout *is* the trajectories; the flow has none, so DEDA-FP rolls out its average policy.
    for algorithm, seconds in (("algo1", out["marginal_samples/algo1"]), ("algo2", out["marginal_samples/algo2"]),
                               ("dedafp", out["marginal_samples/algo2"])):
        out[f"trajectories/{algorithm}"] = seconds
    out["density_query/dedafp"], _ = timed(lambda: log_density_all_t(column.flow, sim2.states), device)
    # What the loop's rewards read (fp.reward_density_nodes): a table of the flow, built once per refit.
    nodes = FictitiousPlayConfig().reward_density_nodes
    table_build, table = timed(lambda: reward_table(column.flow, game.domain, nodes), device)
    table_query, _ = timed(lambda: log_density_all_t(table, sim2.states), device)
    out["density_query/dedafp table"] = table_build + table_query
    build, kde = timed(lambda: ParticlePopulation(sim2.states, "scott", device=device), device)
    out["density_query/algo1"] = out["density_query/algo2"] = kde_seconds + build
    # One reward call at every agent (N = M): the per-iteration builds (table, kernel estimate) excluded,
    # as in reward_query, since the loop answers thousands of calls per build.
    calls = sim2.states.shape[0]
    out["reward_query_all/dedafp"] = out["density_query/dedafp"] / calls
    out["reward_query_all/dedafp table"] = table_query / calls
    out["reward_query_all/algo1"] = out["reward_query_all/algo2"] = kde_seconds / calls
    fit_step = _fit_step_seconds(column.shapes, sim2.states, config, device)
    out["population_refresh/dedafp"] = out["marginal_samples/algo2"] + fit_step * config.flow_fit_steps
    out["population_refresh/algo1"] = out["marginal_samples/algo1"] + build
    out["population_refresh/algo2"] = out["marginal_samples/algo2"] + build
    out["reward_query/dedafp"] = reward_query_seconds(column.flow, sim2.states, config.reward_batch, device)
    out["reward_query/dedafp table"] = reward_query_seconds(table, sim2.states, config.reward_batch, device)
    out["reward_query/algo1"] = out["reward_query/algo2"] = reward_query_seconds(
        kde, sim2.states, config.reward_batch, device)
    out["samples_and_density/dedafp"] = out["marginal_samples/dedafp"] + out["density_query/dedafp"]
    for algorithm in ("algo1", "algo2"):
        out[f"samples_and_density/{algorithm}"] = out[f"marginal_samples/{algorithm}"] + out[
            f"density_query/{algorithm}"]
    return out


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


def shortcut_study(game: FourRoomsGame, columns: tuple[Column, Column], config: SamplingBenchConfig,
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
        fit, _ = timed(lambda flow=flow: flow.fit(times, states, steps=config.shortcut_fit_steps,
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


def shortcut_repeat(column: Column, fitted: dict, game: FourRoomsGame, config: SamplingBenchConfig,
                    device: torch.device) -> dict[str, float]:
    """One repeat of the shortcut timings (project-default column): ``{"shortcut/what": seconds}``."""
    n, T = config.samples, game.horizon
    out: dict[str, float] = {}
    zuko = FlowPopulation(dataclasses.replace(column.shapes.flow, backend="zuko"), 2, T, device, config.seed)
    out["marginal_samples/zuko"], _ = timed(lambda: flow_samples(zuko, n, T), device)
    states = fitted["states"]
    out["density_query/zuko"], _ = timed(lambda: log_density_all_t(zuko, states), device)
    times = torch.arange(T + 1, device=device).repeat_interleave(n)
    z = torch.randn(times.shape[0], 2, device=device)
    with torch.no_grad():
        out["marginal_samples/nflows, all t in one call"], _ = timed(lambda: column.flow.from_base(z, times), device)
        out["density_query/nflows, all t in one call"], _ = timed(
            lambda: column.flow.log_prob(states.reshape(-1, 2), times), device)
    for cells, grid in fitted["grids"].items():
        out[f"density_query/grid {cells}"], _ = timed(lambda grid=grid: log_density_all_t(grid, states), device)
        out[f"reward_query/grid {cells}"] = reward_query_seconds(grid, states, config.reward_batch, device)
    out["reward_query/zuko"] = reward_query_seconds(zuko, states, config.reward_batch, device)
    return out
