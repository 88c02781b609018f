"""Contract tests of the LQ game's Gymnasium env and the natively batched VecEnv."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import dedafp.envs  # noqa: F401  (registers dedafp/LQ-v0)
from dedafp.envs.gym_env import MeanFieldEnv
from dedafp.envs.lq import LQGame, lq_preset
from dedafp.envs.vec_env import BatchedMeanFieldVecEnv


@pytest.mark.parametrize("preset", ["lq1d", "lq2d"])
def test_registered_env_passes_check_env(preset):
    env = gym.make("dedafp/LQ-v0", preset=preset)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1 + lq_preset(preset).dim,) and obs[0] == -1.0


@pytest.mark.parametrize("env_id, dim", [("dedafp/FourRooms-v0", 2), ("dedafp/BeachBar-v0", 1)])
def test_registered_density_envs_pass_check_env(env_id, dim):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (1 + dim,) and obs[0] == -1.0
    # The density reward is finite against the default (uncontrolled) particle population.
    _, reward, *_ = env.step(env.action_space.sample())
    assert np.isfinite(reward)


def test_registered_env_accepts_overrides_and_rejects_bad_ones():
    env = gym.make("dedafp/LQ-v0", preset="lq1d", sigma=0.0, horizon=5)
    assert env.unwrapped.game.horizon == 5
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        gym.make("dedafp/LQ-v0", preset="lq1d", sigma=-1.0)


def _rollout_single(env, actions):
    out = []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(a)
        out.append((obs, reward, terminated))
        if terminated:
            obs, _ = env.reset()
            out[-1] = (*out[-1], obs)
    return out


def test_vec_env_with_one_agent_matches_the_single_env_exactly():
    game = LQGame(lq_preset("lq2d"))
    population = game.uncontrolled_population()
    vec = BatchedMeanFieldVecEnv(game, population, num_envs=1, seed=3)
    single = MeanFieldEnv(game, population)
    vec.seed(11)
    obs_vec = vec.reset()
    obs_single, _ = single.reset(seed=11)
    np.testing.assert_array_equal(obs_vec[0], obs_single)
    rng = np.random.default_rng(0)
    for _ in range(2 * game.horizon):        # two episodes: covers the same-step auto-reset
        action = rng.uniform(-1.2, 1.2, size=(1, 2)).astype(np.float32)
        obs_vec, reward_vec, done_vec, info = vec.step(action)
        obs_single, reward_single, terminated, truncated, _ = single.step(action[0])
        assert reward_vec[0] == pytest.approx(reward_single, rel=1e-6)
        assert bool(done_vec[0]) == terminated and not truncated
        if terminated:
            np.testing.assert_allclose(info[0]["terminal_observation"], obs_single, rtol=1e-6)
            obs_single, _ = single.reset()
            assert obs_vec[0][0] == -1.0
        np.testing.assert_allclose(obs_vec[0], obs_single, rtol=1e-6)


def test_vec_env_agents_each_match_a_single_env_step_for_step():
    # Deterministic dynamics and initial law, so agent i and single env i see the same states.
    config = lq_preset("lq2d").replace(sigma=0.0, init_cov=np.zeros((2, 2)), init_mean=[0.5, -0.3])
    game = LQGame(config)
    population = game.uncontrolled_population()
    n = 8
    vec = BatchedMeanFieldVecEnv(game, population, num_envs=n)
    singles = [MeanFieldEnv(game, population) for _ in range(n)]
    obs = vec.reset()
    for i, env in enumerate(singles):
        np.testing.assert_allclose(env.reset(seed=i)[0], obs[i])
    actions = np.random.default_rng(1).uniform(-1, 1, size=(game.horizon, n, 2)).astype(np.float32)
    for t in range(game.horizon):
        obs, rewards, dones, infos = vec.step(actions[t])
        for i, env in enumerate(singles):
            o, r, terminated, _, _ = env.step(actions[t, i])
            assert rewards[i] == pytest.approx(r, rel=1e-5)
            assert dones[i] == terminated
            expected = infos[i]["terminal_observation"] if terminated else obs[i]
            np.testing.assert_allclose(expected, o, rtol=1e-5, atol=1e-6)
    assert all(info["episode"]["l"] == game.horizon for info in infos)


def test_vec_env_honours_the_sb3_contract():
    game = LQGame(lq_preset("lq1d"))
    vec = BatchedMeanFieldVecEnv(game, game.uncontrolled_population(), num_envs=4)
    assert vec.get_attr("render_mode") == [None] * 4
    assert vec.env_is_wrapped(gym.Wrapper) == [False] * 4
    vec.seed(5)
    first = vec.reset()
    vec.seed(5)
    np.testing.assert_array_equal(vec.reset(), first)
    for t in range(game.horizon):
        obs, rewards, dones, infos = vec.step(np.zeros((4, 1)))
        assert dones.all() == (t == game.horizon - 1)
        assert ("terminal_observation" in infos[0]) == (t == game.horizon - 1)
    assert np.all(obs[:, 0] == -1.0)
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        BatchedMeanFieldVecEnv(game, game.uncontrolled_population(), num_envs=0)


def test_population_is_queried_once_not_per_step():
    game = LQGame(lq_preset("lq2d"))
    population = game.uncontrolled_population()
    calls = {"mean": 0}
    original = population.mean

    def counting_mean(t):
        calls["mean"] += 1
        return original(t)

    population.mean = counting_mean
    vec = BatchedMeanFieldVecEnv(game, population, num_envs=64)
    assert calls["mean"] == game.horizon + 1
    vec.reset()
    for _ in range(3 * game.horizon):
        vec.step(np.zeros((64, 2)))
    assert calls["mean"] == game.horizon + 1


def test_lq_step_and_reward_are_the_stated_formulas():
    config = lq_preset("lq2d")
    game = LQGame(config)
    x = torch.tensor([[1.0, -2.0]])
    a = torch.tensor([[0.5, 0.25]])
    field = torch.arange(2 * (config.horizon + 1), dtype=torch.float32).reshape(-1, 2) / 10
    noise = torch.tensor([[0.3, -0.1]])
    A, B, A_bar = (torch.tensor(config.array(n), dtype=torch.float32) for n in ("A", "B", "A_bar"))
    expected = x @ A.T + a @ B.T + field[3] @ A_bar.T + 0.5 * 0.1**0.5 * noise
    torch.testing.assert_close(game.step(3, x, a, field, noise), expected)
    target = torch.tensor([2.0, 0.0])
    r = -(0.1 * ((x - target) ** 2).sum() + 0.1 * (a**2).sum() + 0.2 * ((x - field[3]) ** 2).sum())
    torch.testing.assert_close(game.reward(3, x, a, field), r.reshape(1))
    g = -(0.1 * ((x - target) ** 2).sum() + 0.2 * ((x - field[20]) ** 2).sum())
    torch.testing.assert_close(game.terminal_reward(x, field), g.reshape(1))
