"""Single-agent Gymnasium view of a :class:`MeanFieldGame`: one representative agent.

The agent observes ``(2t/T - 1, normalised state)`` and acts in ``[-1, 1]^action_dim`` (scaled
by the game's ``action_bound``) against a frozen population model. It is the reference the
batched :class:`~dedafp.envs.vec_env.BatchedMeanFieldVecEnv` is tested against, and what
``gymnasium.make("dedafp/LQ-v0")`` returns.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dedafp.envs.base import MeanFieldGame
from dedafp.envs.vec_env import action_space, observation_space
from dedafp.population.base import PopulationModel


class MeanFieldEnv(gym.Env):
    """One representative agent of ``game`` against the frozen ``population``."""

    metadata = {"render_modes": []}

    def __init__(self, game: MeanFieldGame, population: PopulationModel) -> None:
        super().__init__()
        self.game = game
        self.population = population
        self.field = game.bind(population)
        self.observation_space = observation_space(game)
        self.action_space = action_space(game)
        self.generator = torch.Generator()
        self.t = 0
        self.state = torch.zeros(1, game.state_dim)

    def _observe(self) -> np.ndarray:
        return self.game.observation(self.t, self.state)[0].numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.t = 0
        self.state = self.game.initial_states(1, self.generator)
        return self._observe(), {}

    @torch.no_grad()
    def step(self, action: np.ndarray):
        a = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, -1)).clamp(-1, 1)
        a = a * self.game.action_bound
        noise = torch.randn(self.state.shape, generator=self.generator)
        reward = self.game.reward(self.t, self.state, a, self.field)
        self.state = self.game.step(self.t, self.state, a, self.field, noise)
        self.t += 1
        terminated = self.t == self.game.horizon
        if terminated:
            reward = reward + self.game.terminal_reward(self.state, self.field)
        return self._observe(), float(reward[0]), terminated, False, {}


def make_registered_env(game: str, population: PopulationModel | None = None, preset: str | None = None,
                        **overrides: Any) -> gym.Env:
    """Entry point of every registered game's Gymnasium id (``gymnasium.make("dedafp/FourRooms-v0")``).

    ``preset`` names another registered game (``gymnasium.make("dedafp/LQ-v0", preset="lq1d")``);
    ``overrides`` are the game's parameters. Without ``population`` the agent faces the population
    of the uncontrolled game (a = 0): exact where the game provides ``uncontrolled_population()``,
    else particles of 4,000 simulated agents with a Gaussian kernel density.
    """
    from dedafp.agents.policy import ZeroPolicy
    from dedafp.envs.registry import make_game
    from dedafp.population.particles import ParticlePopulation
    from dedafp.rollout import rollout

    instance = make_game(preset or game, overrides)
    if population is None and hasattr(instance, "uncontrolled_population"):
        population = instance.uncontrolled_population()
    if population is None:
        sim = rollout(instance, ZeroPolicy(instance), 4000, None, generator=torch.Generator().manual_seed(0),
                      rewards=False)
        population = ParticlePopulation(sim.states)
    return MeanFieldEnv(instance, population)
