"""Per-agent start times in the batched VecEnv: the (t, x) law of starts, episode ends, SB3's contract."""

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger

from dedafp.agents.policy import ZeroPolicy
from dedafp.envs.beach_bar import BeachBarGame
from dedafp.envs.four_rooms import FourRoomsGame
from dedafp.envs.lq import LQGame, lq_preset
from dedafp.envs.vec_env import BatchedMeanFieldVecEnv
from dedafp.population import GaussianPopulation, ParticlePopulation
from dedafp.rollout import rollout


def _moving_population(horizon: int) -> GaussianPopulation:
    """μ_t = N(t / 4, (1 + t / 10)²): every t has its own law, so a start from the wrong t shows."""
    t = np.arange(horizon + 1, dtype=float)
    return GaussianPopulation((t / 4)[:, None], ((1 + t / 10) ** 2)[:, None, None])


def _time_of(obs: np.ndarray, horizon: int) -> np.ndarray:
    return np.rint((obs[:, 0] + 1.0) * horizon / 2).astype(int)


def test_start_times_are_uniform_and_states_follow_the_population_at_that_time():
    game = LQGame(lq_preset("lq1d"))
    T = game.horizon
    population = _moving_population(T)
    n = 20_000
    env = BatchedMeanFieldVecEnv(game, population, n, seed=0, start_times=1.0)
    obs = env.reset()
    times = _time_of(obs, T)
    np.testing.assert_array_equal(times, env.times.numpy())
    np.testing.assert_array_equal(env.start.numpy(), times)
    counts = np.bincount(times, minlength=T + 1)
    assert counts[T] == 0
    # Uniform on 0..T-1: Pearson's statistic with T-1 = 19 degrees of freedom; its 99.9% quantile is 43.8.
    expected = n / T
    assert ((counts[:T] - expected) ** 2 / expected).sum() < 43.8
    x = obs[:, 1] * game.config.state_scale
    for t in range(T):
        sample = x[times == t]
        if t == 0:   # t = 0 starts from the game's μ_0 = N(0, 1)
            mean, std = 0.0, 1.0
        else:
            mean, std = float(population.mean(t)[0]), float(population.cov(t)[0, 0]) ** 0.5
        # 5 standard errors of the mean and of the standard deviation (about 1,000 agents per t).
        assert abs(sample.mean() - mean) < 5 * std / len(sample) ** 0.5
        assert abs(sample.std() - std) < 5 * std / (2 * len(sample)) ** 0.5


def test_shares_of_timed_and_exploring_agents_and_the_exploring_law():
    game = BeachBarGame()
    population = _uniform_particles(game, centre=0.2)
    n = 8_000
    env = BatchedMeanFieldVecEnv(game, population, n, seed=1, exploring_starts=0.5, start_times=0.5)
    obs = env.reset()
    times = _time_of(obs, game.horizon)
    x = (obs[:, 1] + 1.0) / 2
    half = n // 2
    # The first half starts from μ_0 or the population, the second explores; the first half of each is timed.
    assert (times[half // 2:half] == 0).all() and (times[half + half // 2:] == 0).all()
    assert (times[:half // 2] > 0).mean() > 0.9 and (times[half:half + half // 2] > 0).mean() > 0.9
    low, high = game.config.init_low, game.config.init_high
    assert ((x[half // 2:half] >= low) & (x[half // 2:half] <= high)).all()            # μ_0
    late = x[:half // 2][times[:half // 2] > 0]                                        # the population: 0.2 ± 0.05
    assert abs(late.mean() - 0.2) < 0.01 and late.max() < 0.26 and late.min() > 0.14
    exploring = x[half:]                                                                # uniform on [0, 1]
    assert abs(exploring.mean() - 0.5) < 5 * (1 / 12) ** 0.5 / len(exploring) ** 0.5
    assert abs(exploring.var() - 1 / 12) < 0.005


def _uniform_particles(game, centre: float) -> ParticlePopulation:
    """A population uniform on [centre - 0.05, centre + 0.05] at every t (particles, 1-D)."""
    generator = torch.Generator().manual_seed(0)
    states = centre - 0.05 + 0.1 * torch.rand(game.horizon + 1, 4000, 1, generator=generator)
    return ParticlePopulation(states)


def test_every_agent_ends_its_episode_exactly_at_the_horizon_and_only_it_restarts():
    game = LQGame(lq_preset("lq1d"))
    T = game.horizon
    n = 64
    env = BatchedMeanFieldVecEnv(game, _moving_population(T), n, seed=2, start_times=0.5)
    obs = env.reset()
    clock = _time_of(obs, T)
    steps = np.zeros(n, dtype=int)
    returns = np.zeros(n)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(3 * T):
        obs, rewards, dones, infos = env.step(rng.uniform(-1, 1, (n, 1)).astype(np.float32))
        clock += 1
        steps += 1
        returns += rewards
        assert (dones == (clock == T)).all()
        for i in np.flatnonzero(dones):
            info = infos[i]
            assert info["terminal_observation"][0] == 1.0 and info["TimeLimit.truncated"] is False
            assert info["episode"]["l"] == steps[i]
            assert info["episode"]["r"] == pytest.approx(returns[i], rel=1e-5, abs=1e-4)
        assert all(infos[i] == {} for i in np.flatnonzero(~dones))
        ended += int(dones.sum())
        # Agents that did not end moved on one step; those that did restart at a fresh start time.
        new_times = _time_of(obs, T)
        np.testing.assert_array_equal(new_times[~dones], clock[~dones])
        assert (new_times[dones] < T).all()
        clock[dones] = new_times[dones]
        steps[dones] = 0
        returns[dones] = 0.0
    # Episodes of different lengths end at different steps.
    assert ended > 3 * n // 2
    assert len({int(c) for c in clock}) > 5


def test_without_start_times_all_agents_still_end_together():
    game = LQGame(lq_preset("lq1d"))
    env = BatchedMeanFieldVecEnv(game, game.uncontrolled_population(), 8, start_times=0.0)
    env.reset()
    for t in range(game.horizon):
        _, _, dones, infos = env.step(np.zeros((8, 1)))
        assert dones.all() == (t == game.horizon - 1) and dones.any() == dones.all()
    assert all(info["episode"]["l"] == game.horizon for info in infos)


@pytest.mark.parametrize("name", ["lq2d", "beach_bar", "four_rooms"])
def test_game_functions_take_per_agent_times_and_match_int_times_row_by_row(name):
    generator = torch.Generator().manual_seed(0)
    if name == "lq2d":
        game = LQGame(lq_preset("lq2d"))
        means = np.random.default_rng(0).normal(size=(game.horizon + 1, 2))
        field = game.bind(GaussianPopulation(means, np.tile(np.eye(2), (game.horizon + 1, 1, 1))))
    else:
        game = BeachBarGame() if name == "beach_bar" else FourRoomsGame()
        sim = rollout(game, ZeroPolicy(game), 500, None, rewards=False, generator=generator)
        field = game.bind(ParticlePopulation(sim.states))
    n = 3 * game.horizon
    times = torch.arange(game.horizon).repeat(3)
    x = game.initial_states(n, generator)
    a = game.action_bound * (2 * torch.rand(n, game.action_dim, generator=generator) - 1)
    noise = torch.randn(n, game.state_dim, generator=generator)
    reward, step = game.reward(times, x, a, field), game.step(times, x, a, field, noise)
    obs = game.observation(times, x)
    for t in range(game.horizon):
        rows = times == t
        torch.testing.assert_close(reward[rows], game.reward(t, x[rows], a[rows], field), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(step[rows], game.step(t, x[rows], a[rows], field, noise[rows]), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(obs[rows], game.observation(t, x[rows]))


def test_ppo_learns_on_the_env_with_start_times():
    game = LQGame(lq_preset("lq1d"))
    env = BatchedMeanFieldVecEnv(game, game.uncontrolled_population(), 16, seed=0, start_times=0.5)
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=256, n_epochs=1, seed=0, verbose=0,
                policy_kwargs={"net_arch": [16]})
    model.set_logger(Logger(folder=None, output_formats=[]))
    model.learn(total_timesteps=3 * 16 * 64)
    lengths = {info["l"] for info in model.ep_info_buffer}
    assert max(lengths) == game.horizon and min(lengths) < game.horizon


def test_bad_start_times_fail_clearly():
    game = LQGame(lq_preset("lq1d"))
    for value in (-0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="start_times must be a number in"):
            BatchedMeanFieldVecEnv(game, game.uncontrolled_population(), 4, start_times=value)
