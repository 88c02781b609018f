"""Tests of the average policy (behavioural cloning), its buffer, and the best responders."""

import dataclasses

import numpy as np
import pytest
import torch

from dedafp import load_config, make_algorithm
from dedafp.agents.average_policy import AveragePolicy, AveragePolicyConfig, FictitiousPlayBuffer
from dedafp.agents.best_response import BestResponseConfig, MLPPolicy, SB3BestResponder
from dedafp.agents.mixture import MixturePolicy
from dedafp.envs.lq import LQGame, lq_preset
from dedafp.population import GaussianPopulation
from dedafp.reference import lq
from dedafp.reference.riccati_responder import AffineTorchPolicy, RiccatiBestResponder
from dedafp.rollout import rollout


def _chunk(n: int, value: float):
    return torch.zeros(n, dtype=torch.long), torch.zeros(n, 1), torch.full((n, 1), value)


def test_buffer_weights_every_iteration_equally_whatever_its_size():
    buffer = FictitiousPlayBuffer(generator=torch.Generator().manual_seed(0))
    buffer.add(*_chunk(100, 0.0))
    buffer.add(*_chunk(5000, 1.0))
    _, _, actions = buffer.sample(200_000)
    # Binomial standard error of a fraction at n = 200,000 is 0.0011; allow 4 of them.
    assert float(actions.mean()) == pytest.approx(0.5, abs=0.0045)


def test_bounded_buffer_keeps_equal_shares_and_weighting():
    buffer = FictitiousPlayBuffer(capacity=300, generator=torch.Generator().manual_seed(0))
    for k in range(3):
        buffer.add(*_chunk(250, float(k)))
    assert buffer.sizes == [100, 100, 100]
    buffer.add(*_chunk(250, 3.0))
    assert buffer.sizes == [75, 75, 75, 75]
    _, _, actions = buffer.sample(200_000)
    counts = np.bincount(actions[:, 0].long().numpy(), minlength=4) / 200_000
    np.testing.assert_allclose(counts, 0.25, atol=0.004)   # 4 binomial standard errors


def test_buffer_draws_the_stored_rows_after_every_change():
    # Draws index one concatenation cached between changes: after an add, a bounded buffer's
    # subsampling or a reload, every drawn row must still be a stored (t, x, a) row of its iteration.
    buffer = FictitiousPlayBuffer(capacity=400, generator=torch.Generator().manual_seed(1))
    for k in range(4):
        times = torch.arange(150) % 7
        buffer.add(times, (times + 100 * k).float().unsqueeze(1), torch.full((150, 1), float(k)))
        times, states, actions = buffer.sample(5000)
        assert torch.equal(states[:, 0], (times + 100 * actions[:, 0]).float())
        assert set(actions[:, 0].long().tolist()) == set(range(k + 1))
    restored = FictitiousPlayBuffer()
    restored.load_state_dict(buffer.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(restored.sample(100), buffer.sample(100), strict=True))


def test_behavioural_cloning_recovers_the_occupancy_weighted_mixture():
    # Two constant policies a = +1 and a = -1 in the LQ dynamics without mean coupling. Their
    # populations at time t are Gaussians N(±μ_t, v_t) (exact moments), so the occupancy-weighted
    # mixture has E[a | t, x] = tanh(μ_t x / v_t) and Var[a | t, x] = 1 - tanh² — what a
    # Gaussian NLL fit must find.
    config = lq_preset("lq1d").replace(A_bar=[[0.0]], horizon=6, sigma=0.3)
    game = LQGame(config)
    field = torch.zeros(config.horizon + 1, 1)
    T = config.horizon
    policies = [lq.AffinePolicy(np.zeros((T, 1, 1)), np.full((T, 1), s), np.zeros((T, 1, 1))) for s in (1.0, -1.0)]
    buffer = FictitiousPlayBuffer(generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    for p in policies:
        buffer.add(*rollout(game, AffineTorchPolicy(p, game.action_bound), 8000, field, generator=gen).samples())
    policy = AveragePolicy(game, AveragePolicyConfig(steps=3000))
    policy.fit(buffer)
    moments = lq.propagate(config, policies[:1], mean_flow=np.zeros((T + 1, 1)))
    x = torch.tensor([[-1.0], [-0.3], [0.0], [0.4], [1.0]])
    for t in (2, 5):
        mu, var = moments.means[0, t, 0], moments.covs[0, t, 0, 0]
        expected_mean = np.tanh(mu * x[:, 0].numpy() / var)
        mean, std = policy.distribution(t, x)
        # Measured max errors over seeds 0-2: 0.016-0.033 for the mean, 0.019-0.054 for the std.
        np.testing.assert_allclose(mean[:, 0].numpy(), expected_mean, atol=0.05)
        np.testing.assert_allclose(std[:, 0].numpy(), np.sqrt(1 - expected_mean**2), atol=0.08)


def test_fixed_std_clones_the_conditional_mean_and_trades_the_step_variance():
    # The setup above: the occupancy-weighted mixture of a = ±1 has population variance μ_t² + v_t
    # (exact). A learned spread reproduces it (discrete steps carry Var(a | x)·dt²); the mean policy
    # (fixed_std) lacks that part. Measured relative error of the variance, max over t, seeds 0-2:
    # learned 0.003-0.006, fixed 0.048-0.052 (100,000 agents; 50,000 here add ~0.005 of noise).
    config = lq_preset("lq1d").replace(A_bar=[[0.0]], horizon=6, sigma=0.3)
    game = LQGame(config)
    T = config.horizon
    field = torch.zeros(T + 1, 1)
    policies = [lq.AffinePolicy(np.zeros((T, 1, 1)), np.full((T, 1), s), np.zeros((T, 1, 1))) for s in (1.0, -1.0)]
    buffer = FictitiousPlayBuffer(generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    for p in policies:
        buffer.add(*rollout(game, AffineTorchPolicy(p, game.action_bound), 8000, field, generator=gen).samples())
    moments = lq.propagate(config, policies[:1], mean_flow=np.zeros((T + 1, 1)))
    exact = moments.means[0, :, 0] ** 2 + moments.covs[0, :, 0, 0]
    errors = {}
    for name, fixed_std in (("learned", None), ("fixed", 0.01)):
        policy = AveragePolicy(game, AveragePolicyConfig(steps=3000, fixed_std=fixed_std))
        policy.fit(buffer)
        states = rollout(game, policy, 50_000, field, generator=torch.Generator().manual_seed(1), rewards=False).states
        errors[name] = max(abs(float(x.var()) - v) for x, v in zip(states, exact, strict=True)) / exact.max()
    assert errors["learned"] < 0.02 and 0.03 < errors["fixed"] < 0.07, errors
    x = torch.tensor([[-1.0], [0.0], [1.0]])
    mean, std = policy.distribution(4, x)
    torch.testing.assert_close(std, torch.full_like(std, 0.01 * game.action_bound))
    mu, var = moments.means[0, 4, 0], moments.covs[0, 4, 0, 0]
    np.testing.assert_allclose(mean[:, 0].numpy(), np.tanh(mu * x[:, 0].numpy() / var), atol=0.05)


def test_mixture_average_policy_keeps_two_opposite_best_responses_apart():
    # Half the samples act +1, half -1, at the same states: one Gaussian can only average them
    # (mean 0, std 1); two components recover both actions.
    game = LQGame(lq_preset("lq1d").replace(horizon=4))
    gen = torch.Generator().manual_seed(0)
    buffer = FictitiousPlayBuffer(generator=torch.Generator().manual_seed(0))
    for sign in (1.0, -1.0):
        times = torch.randint(4, (4000,), generator=gen)
        buffer.add(times, torch.randn(4000, 1, generator=gen), torch.full((4000, 1), sign))
    x = torch.randn(2000, 1, generator=gen)
    single = AveragePolicy(game, AveragePolicyConfig(steps=600))
    single.fit(buffer)
    mean, std = single.distribution(2, x)
    assert float(mean.abs().max()) < 0.15 and float((std - 1).abs().max()) < 0.15
    double = AveragePolicy(game, AveragePolicyConfig(steps=600, components=2))
    double.fit(buffer)
    actions = double.sample(2, x, gen)
    # Measured: ~99% of the samples within 0.2 of ±1 and the two signs balanced to ~0.02.
    assert float(((actions.abs() - 1).abs() < 0.2).float().mean()) > 0.95
    assert abs(float((actions > 0).float().mean()) - 0.5) < 0.06
    mean, std = double.distribution(2, x)      # moment-matched: the same mean and spread
    assert float(mean.abs().max()) < 0.15 and float((std - 1).abs().max()) < 0.15


def test_average_policy_save_load_round_trip(tmp_path):
    game = LQGame(lq_preset("lq2d"))
    policy = AveragePolicy(game, AveragePolicyConfig(hidden=8))
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.1 * torch.randn_like(p))
    policy.save(str(tmp_path / "p.pt"))
    loaded = AveragePolicy.load(str(tmp_path / "p.pt"), game)
    x = torch.randn(4, 2)
    for a, b in zip(policy.distribution(3, x), loaded.distribution(3, x), strict=True):
        torch.testing.assert_close(a, b)
    actions = loaded.predict(3, x, generator=torch.Generator().manual_seed(0))
    assert actions.shape == (4, 2) and actions.abs().max() <= game.action_bound


def test_riccati_responder_is_the_exact_best_response():
    config = lq_preset("lq2d")
    game = LQGame(config)
    population = game.uncontrolled_population()
    policy = RiccatiBestResponder(game).learn(population)
    mean_flow = game.bind(population).double().numpy()
    shortfall = lq.monte_carlo_exploitability(config, policy.distribution, 20_000, mean_flow=mean_flow)
    assert abs(shortfall.exploitability.exploitability) < 1e-4


def test_sb3_ppo_best_response_improves_on_the_zero_policy():
    config = lq_preset("lq1d")
    game = LQGame(config)
    population = game.uncontrolled_population()
    responder = SB3BestResponder(game, BestResponseConfig(total_steps=20_000, n_steps=64, batch_size=256,
                                                           n_epochs=5, hidden=32))
    policy = responder.learn(population)
    assert isinstance(policy, MLPPolicy)
    mean_flow = game.bind(population).double().numpy()
    zero = lq.AffinePolicy.zero(config)
    zero_gap = lq.monte_carlo_exploitability(config, lq.affine_policy_fn(zero), 20_000, mean_flow=mean_flow)
    learned_gap = lq.monte_carlo_exploitability(config, policy.distribution, 20_000, mean_flow=mean_flow)
    # 20k PPO steps take the shortfall from ~3.3 (zero policy) to below 1 (measured ~0.4-0.7).
    assert learned_gap.exploitability.exploitability < 0.5 * zero_gap.exploitability.exploitability
    # The returned snapshot does not move when the responder keeps training (warm start).
    x = torch.randn(16, 1)
    before = policy.mean_action(3, x).clone()
    responder.learn(population)
    torch.testing.assert_close(policy.mean_action(3, x), before)


def test_sb3_sac_best_response_runs_on_the_batched_env():
    config = lq_preset("lq1d")
    game = LQGame(config)
    population = game.uncontrolled_population()
    responder = SB3BestResponder(game, BestResponseConfig(algorithm="sac", total_steps=3_000, num_envs=8,
                                                           learning_starts=500, batch_size=128, hidden=32))
    policy = responder.learn(population)
    x = torch.randn(32, 1)
    action = policy.mean_action(2, x)
    assert action.shape == (32, 1) and torch.isfinite(action).all()
    assert float(action.abs().max()) <= game.action_bound
    # SAC's deterministic action is tanh-squashed, so the snapshot is the same network's mean.
    assert float(policy.distribution(2, x)[1].abs().max()) == 0.0


def test_a_warm_sac_responder_checkpoints_and_continues_identically(tmp_path):
    # The checkpoint once read policy.optimizer, which SAC has not (one optimizer each on actor, critic and
    # entropy coefficient): every SAC run stopped at its first checkpoint. Its replay buffer travels too.
    game = LQGame(lq_preset("lq1d"))
    population = game.uncontrolled_population()
    config = BestResponseConfig(algorithm="sac", total_steps=600, warm_steps=300, num_envs=8, learning_starts=200,
                                batch_size=64, hidden=16)
    responder = SB3BestResponder(game, config, seed=2)
    responder.learn(population)
    torch.save(responder.state_dict(), tmp_path / "state.pt")
    restored = SB3BestResponder(game, config, seed=2)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=False), population)
    assert restored.model.replay_buffer.size() == responder.model.replay_buffer.size() > 0
    x = torch.randn(32, 1)
    actions = []
    for model in (responder, restored):
        torch.manual_seed(5)
        np.random.seed(5)
        actions.append(model.learn(population).mean_action(3, x))
    torch.testing.assert_close(actions[0], actions[1], rtol=0, atol=0)


def _two_calls(seed: int, warm_start: bool) -> tuple[list[list[float]], list[torch.Tensor]]:
    """Episode returns seen in training and the env's generator state after each of two calls."""
    game = LQGame(lq_preset("lq1d"))
    population = game.uncontrolled_population()
    responder = SB3BestResponder(game, BestResponseConfig(total_steps=320, warm_steps=320, n_steps=40, num_envs=8,
                                                           batch_size=64, n_epochs=1, hidden=8,
                                                           warm_start=warm_start), seed=seed)
    returns, states = [], []
    for _ in range(2):
        responder.learn(population)
        returns.append([info["r"] for info in responder.model.ep_info_buffer])
        states.append(responder.model.get_env().unwrapped.generator.get_state())
    return returns, states


@pytest.mark.parametrize("warm_start", [False, True])
def test_two_calls_of_the_sb3_responder_see_different_noise_and_reproduce(warm_start):
    # SB3 reseeds the env with the model's seed on reset: with the model seeded by the responder's
    # seed, two fresh calls replayed the same noise (bit-identical returns). Each call has its own now.
    returns, states = _two_calls(seed=0, warm_start=warm_start)
    assert len(returns[0]) == 16 and len(returns[1]) == 16      # 2 episodes x 8 agents per call
    assert not torch.equal(states[0], states[1])
    assert all(a != b for a, b in zip(returns[0], returns[1], strict=True))
    again, again_states = _two_calls(seed=0, warm_start=warm_start)
    assert again == returns and all(torch.equal(a, b) for a, b in zip(again_states, states, strict=True))


def test_mixture_policy_assigns_agents_uniformly_and_plays_each_member():
    game = LQGame(lq_preset("lq1d"))
    T = game.horizon
    members = [AffineTorchPolicy(lq.AffinePolicy(np.zeros((T, 1, 1)), np.full((T, 1), v), np.zeros((T, 1, 1))),
                                 game.action_bound) for v in (-1.0, 0.0, 2.0)]
    mixture = MixturePolicy(members)
    x = torch.randn(30_001, 1)
    mean, std = mixture.distribution(0, x)
    assert mean[:6, 0].tolist() == [-1.0, 0.0, 2.0, -1.0, 0.0, 2.0]     # agent i plays member i mod 3
    values, counts = torch.unique(mean[:, 0], return_counts=True)
    assert values.tolist() == [-1.0, 0.0, 2.0] and counts.tolist() == [10_001, 10_000, 10_000]
    assert float(std.abs().max()) == 0.0


def test_bad_agent_configs_fail_clearly():
    with pytest.raises(ValueError, match="best_response.algorithm must be one of"):
        BestResponseConfig(algorithm="dqn")
    with pytest.raises(ValueError, match="best_response.gamma must be in"):
        BestResponseConfig(gamma=1.5)
    with pytest.raises(ValueError, match="average_policy.steps must be an integer >= 0"):
        AveragePolicyConfig(steps=-1)
    with pytest.raises(ValueError, match=r"average_policy.fixed_std must be None or in \(0, 1\) or one of \('auto',\), "
                                         r"got 1.5"):
        AveragePolicyConfig(fixed_std=1.5)
    with pytest.raises(ValueError, match="fixed_std needs components = 1"):
        AveragePolicyConfig(fixed_std=0.05, components=2)
    with pytest.raises(ValueError, match="needs an LQ game"):
        RiccatiBestResponder(object())   # type: ignore[arg-type]


@pytest.mark.parametrize(("overrides", "spread"), [
    ([], None),                                                   # lq2d: pathwise responses, a learned spread
    (["best_response.algorithm=ppo"], 0.02),                      # deep RL: the mean-only clone
    (["best_response.algorithm=sac"], 0.02),
    (["best_response.algorithm=sac", "average_policy.components=2"], None),
    (["best_response.algorithm=ppo", "average_policy.fixed_std=null"], None),
    (["best_response.algorithm=ppo", "average_policy.fixed_std=0.1"], 0.1)])
def test_the_clones_spread_follows_the_best_responder(overrides, spread):
    config = load_config("lq2d", overrides=overrides)
    assert config.average_policy.fixed_std == spread
    assert AveragePolicyConfig().fixed_std == "auto"           # resolved by the run config, not the section
    built = make_algorithm(dataclasses.replace(config, average_policy=AveragePolicyConfig()))
    deep_rl = config.best_response.algorithm in ("ppo", "sac")
    assert built._average_policy.config.fixed_std == (0.02 if deep_rl else None)


def test_gaussian_population_is_accepted_by_the_game():
    game = LQGame(lq_preset("lq1d"))
    eq = lq.equilibrium(game.config)
    field = game.bind(GaussianPopulation(eq.mean_flow, eq.cov_flow))
    np.testing.assert_allclose(field.numpy(), eq.mean_flow, atol=1e-6)


def test_keep_best_replaces_a_failed_best_response_by_a_stored_one():
    from dedafp.algorithms import FictitiousPlay
    from dedafp.config import load_config
    tiny = ["fp.br_agents=500", "fp.population_agents=2000", "fp.initial_flow_steps=40", "average_policy.steps=40",
            "average_policy.hidden=16", "flow.steps=20", "flow.hidden=8", "flow.transforms=1",
            "flow.mean_samples=512", "fp.evaluate_every=100", "fp.iterations=100"]
    loop = FictitiousPlay(load_config("lq1d", None, ["best_response.algorithm=riccati",
                                                      "best_response.keep_best=true", *tiny]))
    first = loop.iteration()
    second = loop.iteration()
    assert "br/kept" not in first.metrics and second.metrics["br/kept"] == -1    # exact responses are kept

    # A "deep RL failure": the third response pushes at full force in one direction.
    class Failed:
        action_bound = loop.game.action_bound

        def distribution(self, t, x):
            return torch.full_like(x, self.action_bound), torch.zeros_like(x)

    loop.responder.learn = lambda population: Failed()
    third = loop.iteration()
    assert third.metrics["br/kept"] in (0.0, 1.0)
    assert loop.best_responses[-1] is loop.best_responses[int(third.metrics["br/kept"])]
    assert third.metrics["br/return"] > third.metrics["br/new_return"]


def test_action_spreads_compare_the_average_with_the_best_responses_disagreement():
    """Two best responses a = ±0.5 everywhere: their weighted spread is exactly 0.5 at equal weights, 0 when
    damping keeps only the newest; a Gaussian clone of both learns about that spread."""
    from dedafp.agents.average_policy import action_spreads
    from dedafp.agents.policy import DeterministicPolicy

    class Constant(DeterministicPolicy):
        def __init__(self, value):
            self.value, self.action_bound = value, 1.0

        def mean_action(self, t, x):
            return torch.full((x.shape[0], 1), self.value)

    game = LQGame(lq_preset("lq1d"))
    generator = torch.Generator().manual_seed(0)
    policies = [Constant(0.5), Constant(-0.5)]
    times = torch.randint(game.horizon, (2000,), generator=generator)
    states = torch.randn(2000, 1, generator=generator)
    buffer = FictitiousPlayBuffer(generator=torch.Generator().manual_seed(1))
    for policy in policies:
        buffer.add(times, states, policy.mean_action(0, states))
    average = AveragePolicy(game, AveragePolicyConfig(steps=300, hidden=16), seed=0)
    untrained = action_spreads(average, policies, buffer)
    assert untrained["bc/br_spread"] == pytest.approx(0.5, abs=1e-6)
    assert untrained["bc/spread"] == pytest.approx(0.01 * game.action_bound, rel=0.5)   # initial_std
    average.fit(buffer)
    assert action_spreads(average, policies, buffer)["bc/spread"] == pytest.approx(0.5, rel=0.2)
    newest = FictitiousPlayBuffer(newest_weight=1.0)
    for policy in policies:
        newest.add(times, states, policy.mean_action(0, states))
    assert action_spreads(average, policies, newest)["bc/br_spread"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="best responses for a buffer"):
        action_spreads(average, policies[:1], buffer)
