"""A natively batched stable-baselines3 ``VecEnv`` over any :class:`MeanFieldGame`.

All ``num_envs`` agents are stepped as one tensor operation; the population's statistics are
computed once per population model (``game.bind``) and the density or mean is queried once per
vector step for the whole batch. Every agent starts and ends its episode together (the horizon is
fixed), so an episode end is a same-step auto-reset of the whole batch, with each agent's
``terminal_observation`` in its info dict, as SB3 expects. Time is part of the observation, so the
horizon is a *termination* (no bootstrapping past T).

Actions arrive in ``[-1, 1]^action_dim`` and are scaled by the game's ``action_bound``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvStepReturn

from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel


def observation_space(game: MeanFieldGame) -> gym.spaces.Box:
    """Observation space shared by the single and batched envs: ``[obs_dim]`` float32."""
    return gym.spaces.Box(-np.inf, np.inf, shape=(game.obs_dim,), dtype=np.float32)


def action_space(game: MeanFieldGame) -> gym.spaces.Box:
    """Normalised action space ``[-1, 1]^action_dim`` (scaled by ``action_bound`` in the game)."""
    return gym.spaces.Box(-1.0, 1.0, shape=(game.action_dim,), dtype=np.float32)


class BatchedMeanFieldVecEnv(VecEnv):
    """``num_envs`` representative agents of ``game`` against a frozen population model.

    Args:
        game: the game.
        population: the frozen population model the agents respond to.
        num_envs: number of agents stepped together.
        seed: seed of the environment's random generator.
        device: where the states are simulated.
        exploring_starts: share of the agents (the last ones) whose episodes start from
            ``game.exploring_states`` instead of μ_0, so that deep RL sees the whole domain.
    """

    render_mode = None

    def __init__(self, game: MeanFieldGame, population: PopulationModel, num_envs: int, seed: int = 0,
                 device: torch.device | str = "cpu", exploring_starts: float = 0.0) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if not 0.0 <= exploring_starts < 1.0:
            raise ValueError(f"exploring_starts must be in [0, 1), got {exploring_starts!r}")
        self.exploring = round(exploring_starts * num_envs)
        self.game = game
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        super().__init__(num_envs, observation_space(game), action_space(game))
        self.set_population(population)
        self.t = 0
        self.states = self._initial_states()
        self.episode_returns = torch.zeros(num_envs, device=self.device)
        self._actions: torch.Tensor | None = None

    def set_population(self, population: PopulationModel) -> None:
        """Respond to a new frozen population from now on (call :meth:`reset` to start afresh)."""
        self.population = population
        self.field = self.game.bind(population)

    def _initial_states(self) -> torch.Tensor:
        n, m = self.num_envs, self.exploring
        states = self.game.initial_states(n - m, self.generator, self.device)
        if m == 0:
            return states
        return torch.cat([states, self.game.exploring_states(m, self.generator, self.device)])

    def _observe(self) -> np.ndarray:
        return self.game.observation(self.t, self.states).cpu().numpy()

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self.generator.manual_seed(int(self._seeds[0]))
        self._reset_seeds()
        self._reset_options()
        self.t = 0
        self.states = self._initial_states()
        self.episode_returns.zero_()
        return self._observe()

    def step_async(self, actions: np.ndarray) -> None:
        actions = torch.as_tensor(np.asarray(actions), dtype=torch.float32, device=self.device)
        self._actions = actions.reshape(self.num_envs, self.game.action_dim).clamp(-1.0, 1.0)

    @torch.no_grad()
    def step_wait(self) -> VecEnvStepReturn:
        assert self._actions is not None, "step_async must be called before step_wait"
        a = self._actions * self.game.action_bound
        noise = torch.randn(self.states.shape, generator=self.generator, device=self.device)
        reward = self.game.reward(self.t, self.states, a, self.field)
        self.states = self.game.step(self.t, self.states, a, self.field, noise)
        self.t += 1
        done = self.t == self.game.horizon
        if done:
            reward = reward + self.game.terminal_reward(self.states, self.field)
        if not torch.isfinite(reward).all():
            raise FloatingPointError(f"non-finite reward at t={self.t - 1} in {self.game.name}")
        self.episode_returns += reward
        rewards = reward.cpu().numpy().astype(np.float32)
        dones = np.full(self.num_envs, done)
        if not done:
            return self._observe(), rewards, dones, [{} for _ in range(self.num_envs)]
        terminal = self._observe()
        returns = self.episode_returns.cpu().numpy()
        infos = [{"terminal_observation": terminal[i], "TimeLimit.truncated": False,
                  "episode": {"r": float(returns[i]), "l": self.game.horizon}} for i in range(self.num_envs)]
        return self.reset(), rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        result = getattr(self, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [None for _ in range(self.num_envs)]
