"""A natively batched stable-baselines3 ``VecEnv`` over any :class:`MeanFieldGame`.

All ``num_envs`` agents are stepped as one tensor operation; the population's statistics are
computed once per population model (``game.bind``) and the density or mean is queried once per
vector step for the whole batch. By default every agent starts at t = 0 and all end their
episodes together (the horizon is fixed), so an episode end is a same-step auto-reset of the whole
batch. With ``start_times > 0`` a share of the agents starts each episode at its own time
``t ~ Uniform{0..T-1}`` with ``x`` from the frozen population at that t; each agent carries its own
time, the game's functions receive ``t`` as a tensor ``[n]`` when the agents' times differ, and an
episode end auto-resets only the agents that reached the horizon, in the same step. Either way each
ended agent's ``terminal_observation`` is in its info dict, as SB3 expects. Time is part of the
observation, so the horizon is a *termination* (no bootstrapping past T).

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
        start_times: share of the agents, in [0, 1], whose episodes start at ``t ~ Uniform{0..T-1}``
            (redrawn at every episode start) instead of t = 0: in each of the two groups above, the
            first ``round(start_times · size)`` agents. A late starter's ``x`` is drawn from the frozen
            population at its time (``population.sample(t, n)``), or from ``game.exploring_states``
            if it is exploring; a draw of t = 0 starts it like the others (μ_0 or exploring).
            Its episode runs to the horizon and its ``episode`` info has length ``T - t``.

    Attributes:
        times: ``[num_envs]`` int64, each agent's current time.
        start: ``[num_envs]`` int64, the time each agent's current episode started at.
    """

    render_mode = None

    def __init__(self, game: MeanFieldGame, population: PopulationModel, num_envs: int, seed: int = 0,
                 device: torch.device | str = "cpu", exploring_starts: float = 0.0, start_times: float = 0.0) -> None:
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if not 0.0 <= exploring_starts < 1.0:
            raise ValueError(f"exploring_starts must be in [0, 1), got {exploring_starts!r}")
        if isinstance(start_times, bool) or not isinstance(start_times, (int, float)) or not 0.0 <= start_times <= 1.0:
            raise ValueError(f"start_times must be a number in [0, 1], got {start_times!r}")
        self.exploring = round(exploring_starts * num_envs)
        self.game = game
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        super().__init__(num_envs, observation_space(game), action_space(game))
        self.is_exploring = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self.is_exploring[num_envs - self.exploring:] = True
        self.is_timed = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        for first, size in ((0, num_envs - self.exploring), (num_envs - self.exploring, self.exploring)):
            self.is_timed[first:first + round(start_times * size)] = True
        self.set_population(population)
        self.times = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.start = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.states = torch.zeros(num_envs, game.state_dim, device=self.device)
        self._start_episodes(torch.ones(num_envs, dtype=torch.bool, device=self.device))
        self.episode_returns = torch.zeros(num_envs, device=self.device)
        self._actions: torch.Tensor | None = None

    def set_population(self, population: PopulationModel) -> None:
        """Respond to a new frozen population from now on (call :meth:`reset` to start afresh)."""
        self.population = population
        self.field = self.game.bind(population)

    def _start_episodes(self, mask: torch.Tensor) -> None:
        """Draw start times and states of the agents in ``mask`` (bool ``[n]``); the others keep theirs.

        Draws in a fixed order (times, μ_0, exploring states, then the population at each start time),
        and none for agents without start times, so that ``start_times = 0`` consumes the generator
        exactly as the batch-synchronous env always did.
        """
        game, generator, device = self.game, self.generator, self.device
        timed = mask & self.is_timed
        times = torch.zeros(self.num_envs, dtype=torch.long, device=device)
        count = int(timed.sum())
        if count:
            times[timed] = torch.randint(game.horizon, (count,), generator=generator, device=device)
        late = timed & (times > 0)
        from_initial = mask & ~late & ~self.is_exploring
        from_exploring = mask & self.is_exploring
        states = self.states.clone()
        states[from_initial] = game.initial_states(int(from_initial.sum()), generator, device)
        count = int(from_exploring.sum())
        if count:
            states[from_exploring] = game.exploring_states(count, generator, device)
        from_population = late & ~self.is_exploring
        if bool(from_population.any()):
            for t in times[from_population].unique().tolist():     # at most T draws, never per agent
                rows = from_population & (times == t)
                states[rows] = self.population.sample(t, int(rows.sum()), generator=generator).to(states)
        self.states = states
        self.times = torch.where(mask, times, self.times)
        self.start = torch.where(mask, times, self.start)

    def _time(self) -> int | torch.Tensor:
        """The agents' time: an int when they all share it (the batch-synchronous case), else ``[n]``."""
        low, high = int(self.times.min()), int(self.times.max())
        return low if low == high else self.times

    def _observe(self) -> np.ndarray:
        return self.game.observation(self._time(), self.states).cpu().numpy()

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:
            self.generator.manual_seed(int(self._seeds[0]))
        self._reset_seeds()
        self._reset_options()
        self._start_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
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
        t = self._time()
        reward = self.game.reward(t, self.states, a, self.field)
        self.states = self.game.step(t, self.states, a, self.field, noise)
        self.times = self.times + 1
        done = self.times == self.game.horizon
        all_done = bool(done.all())
        if all_done:
            reward = reward + self.game.terminal_reward(self.states, self.field)
        elif bool(done.any()):
            reward = reward.clone()
            reward[done] = reward[done] + self.game.terminal_reward(self.states[done], self.field)
        if not torch.isfinite(reward).all():
            raise FloatingPointError(f"non-finite reward at t={(self.times - 1).tolist()} in {self.game.name}")
        self.episode_returns += reward
        rewards = reward.cpu().numpy().astype(np.float32)
        dones = done.cpu().numpy()
        if not dones.any():
            return self._observe(), rewards, dones, [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(dones)
        terminal = self.game.observation(self.game.horizon, self.states[done]).cpu().numpy()
        returns = self.episode_returns[done].cpu().numpy()
        lengths = (self.game.horizon - self.start[done]).cpu().numpy()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for j, i in enumerate(ended.tolist()):
            infos[i] = {"terminal_observation": terminal[j], "TimeLimit.truncated": False,
                        "episode": {"r": float(returns[j]), "l": int(lengths[j])}}
        if all_done:
            return self.reset(), rewards, dones, infos
        self._start_episodes(done)
        self.episode_returns[done] = 0.0
        return self._observe(), rewards, dones, infos

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
