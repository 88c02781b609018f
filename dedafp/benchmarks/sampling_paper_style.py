"""The paper-style rows of ``dedafp bench sampling``: the baselines run the way the paper's numbers suggest.

Agents are stepped one at a time through single Gymnasium envs with SB3's ``model.predict`` per agent
(``_per_agent_rollout``), or through SB3's ``DummyVecEnv`` with one batched ``predict`` per step
(``_dummy_vec_rollout``); densities come from ``scipy.stats.gaussian_kde``. :func:`paper_style_repeat`
times them on a subset of agents (or of times), to be extrapolated by the caller.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from dedafp.common.timing import timed
from dedafp.population.particles import ParticlePopulation

if TYPE_CHECKING:
    from dedafp.benchmarks.sampling import SamplingBenchConfig
    from dedafp.benchmarks.sampling_rows import Column


class _FreeDensity:
    """A density field of constant ``log μ = 0``: lets the single env step without a density query.

    The paper-style sampling rows step the Gymnasium env only to move agents; what a density
    query costs is measured in the density rows, so it must not be counted twice.
    """

    def log_prob(self, x: Tensor, t: int | Tensor) -> Tensor:
        return x.new_zeros(x.shape[0])


def single_env(game_overrides: dict[str, Any]) -> Any:
    import gymnasium

    import dedafp.envs  # noqa: F401  (registers the ids)
    return gymnasium.make("dedafp/FourRooms-v0", population=_FreeDensity(), **game_overrides)


def _per_agent_rollout(models: list[Any], agents: int, horizon: int, game_overrides: dict[str, Any]) -> Tensor:
    """Agents one at a time through one Gymnasium env, ``model.predict`` per agent and step.

    Agent i follows ``models[i mod k]`` for its whole episode (Algo 1's mixture; one model: Algo 2).
    Returns the visited states ``[T+1, agents, 2]``.
    """
    env = single_env(game_overrides)
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
    venv = DummyVecEnv([lambda: single_env(game_overrides) for _ in range(agents)])
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


def paper_style_repeat(column: Column, states: Tensor, config: SamplingBenchConfig,
                       game_overrides: dict[str, Any], horizon: int) -> dict[str, float]:
    """One repeat of the paper-style rows (measured on subsets): ``{"row/algorithm": seconds}``."""
    m = config.paper_agents
    out: dict[str, float] = {}
    for algorithm, models in (("algo1", column.models), ("algo2", [column.average_model])):
        out[f"per_agent/{algorithm}"], _ = timed(lambda models=models: _per_agent_rollout(models, m, horizon,
                                                                                         game_overrides))
        out[f"dummy_vec_env/{algorithm}"], _ = timed(lambda models=models: _dummy_vec_rollout(models, m, horizon,
                                                                                              game_overrides))
    picks = np.linspace(0, horizon, config.paper_density_times).round().astype(int).tolist()
    out["scipy_kde/both"] = _scipy_kde_seconds(states, picks)
    return out


def env_step_with_kde_reward(states: Tensor, game_overrides: dict[str, Any], steps: int = 200) -> float:
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
