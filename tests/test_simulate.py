"""`dedafp simulate`: the N-player simulator, its binned empirical density, the Ray backend and the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch

from dedafp.agents.average_policy import AveragePolicy, AveragePolicyConfig
from dedafp.agents.policy import ZeroPolicy
from dedafp.cli import main
from dedafp.envs.beach_bar import BeachBarGame
from dedafp.envs.four_rooms import FourRoomsGame
from dedafp.envs.lq import LQGame, lq_preset
from dedafp.nplayer.simulate import (
    AgentSums,
    SimulationConfig,
    empirical_log_density,
    exact_others_log_density,
    fast_policy,
    grid_spec,
    parse_count,
    shard_seed,
    shard_sizes,
    simulate,
)
from dedafp.population.particles import ParticlePopulation
from dedafp.rollout import rollout

ROOT = Path(__file__).resolve().parents[1]
GAMES = {"lq1d": lambda: LQGame(lq_preset("lq1d").replace(horizon=5), name="lq1d"),
         "beach_bar": lambda: BeachBarGame(), "four_rooms": lambda: FourRoomsGame()}


def _tiny_policy(game, components=2):
    """An untrained stochastic average policy (random head, so actions depend on the state)."""
    policy = AveragePolicy(game, AveragePolicyConfig(hidden=8, components=components, initial_std=0.3), seed=1)
    with torch.no_grad():
        torch.nn.init.normal_(policy.net[-1].weight, std=0.3, generator=torch.Generator().manual_seed(2))
    return policy


def _external_field(game):
    if isinstance(game, LQGame):
        return game.bind(game.uncontrolled_population())
    states = torch.rand(game.horizon + 1, 64, game.state_dim, generator=torch.Generator().manual_seed(3))
    return game.bind(ParticlePopulation(states))


def _clustered_states(n, d, seed):
    """Half uniform in [0, 0.2]^d, half a Gaussian blob at 0.6 clipped to the box: [1, n, d]."""
    generator = torch.Generator().manual_seed(seed)
    corner = 0.2 * torch.rand(n // 2, d, generator=generator)
    blob = (0.6 + 0.1 * torch.randn(n - n // 2, d, generator=generator)).clamp(0.0, 1.0)
    return torch.cat([corner, blob]).unsqueeze(0)


# ---- the empirical density term ------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_binned_density_matches_the_exact_pairwise_kernel_sum(dim, seed):
    x = _clustered_states(2000, dim, seed)
    config = SimulationConfig(agents=2000)
    binned, spec = empirical_log_density(x, config, [0.0] * dim, [1.0] * dim)
    exact = exact_others_log_density(x[0], spec.bandwidth[0])
    relative = (binned[0] - exact).exp().sub(1.0).abs()
    floor = torch.tensor(math.log(0.01), dtype=torch.float64)
    reward_error = (torch.logaddexp(binned[0], floor) - torch.logaddexp(exact, floor)).abs()
    # Measured on these states (4 nodes per bandwidth, seeds 0-2): median relative error 0.25-0.28% (1-D),
    # 0.62-0.66% (2-D); 99th percentile <= 1.3%; worst |Δ log(μ + 0.01)| 0.034. Tolerances: about 1.5-2×.
    assert relative.median() < 0.01
    assert relative.quantile(0.99) < 0.02
    assert reward_error.max() < 0.06
    # Linear binning and lookup are second order in the spacing: twice the nodes, about a quarter of the
    # error (measured 3.9-4.2×).
    finer, spec = empirical_log_density(x, SimulationConfig(agents=2000, nodes_per_bandwidth=8.0),
                                        [0.0] * dim, [1.0] * dim)
    assert (finer[0] - exact).exp().sub(1.0).abs().median() < relative.median() / 3


def test_own_kernel_is_removed_exactly():
    # Two agents: each one's density of "the others" is the kernel at the other, nothing of itself (its own
    # kernel would more than double it: log K(0) - log K(x_1 - x_2) = 0.5 here).
    x = torch.tensor([[[0.30, 0.40], [0.33, 0.41]]])
    config = SimulationConfig(agents=2, nodes_per_bandwidth=16.0, bandwidth=2.0)
    binned, spec = empirical_log_density(x, config, [0.0, 0.0], [1.0, 1.0])
    exact = exact_others_log_density(x[0], spec.bandwidth[0])
    assert torch.allclose(binned[0], exact, rtol=0, atol=2e-3)          # measured 7e-4


def test_grid_spec_follows_the_bandwidth_rule():
    x = torch.rand(3, 500, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.5, 1.0])
    sums = AgentSums.of(x)
    spec = grid_spec(sums, [0.0, 0.0], [1.0, 1.0], SimulationConfig(agents=500))
    factor = 499 ** (-1 / 6)                                   # Scott with n = N - 1 others, d = 2
    assert torch.allclose(spec.bandwidth, factor * x.double().std(1), rtol=1e-9)
    assert min(spec.spacing) <= spec.bandwidth.min() / 4 + 1e-12
    assert all(k.shape[0] == 3 for k in spec.kernels)
    capped = grid_spec(sums, [0.0, 0.0], [1.0, 1.0], SimulationConfig(agents=500, max_grid_nodes=300))
    assert 3 * math.prod(capped.nodes) <= 300


# ---- the simulator against the single-agent environment --------------------------------------------------

@pytest.mark.parametrize("name", sorted(GAMES))
@pytest.mark.parametrize("policy_kind", ["zero", "average"])
def test_one_agent_with_an_external_field_is_the_single_agent_environment(name, policy_kind):
    game = GAMES[name]()
    policy = ZeroPolicy(game) if policy_kind == "zero" else _tiny_policy(game)
    field = _external_field(game)
    config = SimulationConfig(agents=1, seed=4, exact_policy=True, record_states=True)
    result = simulate(game, policy, config, field=field)
    reference = rollout(game, policy, 1, field, generator=torch.Generator().manual_seed(shard_seed(4, 0)))
    assert torch.equal(result.states[:, 0], reference.states)
    # rollout adds the terminal reward to the last step's in float32; the simulator sums in float64.
    assert torch.allclose(result.returns[0], reference.rewards.double().sum(0), rtol=1e-6, atol=1e-6)


def test_fast_policy_is_the_same_distribution():
    game = FourRoomsGame()
    policy = _tiny_policy(game, components=3)
    fast = fast_policy(policy)
    x = torch.rand(500, 2, generator=torch.Generator().manual_seed(0))
    for t in (0, 17):
        for mine, theirs in zip(fast.distribution(t, x), policy.distribution(t, x), strict=True):
            assert torch.allclose(mine, theirs, atol=1e-5)
    a = torch.stack([fast.sample(3, x[:1].expand(20_000, 2), torch.Generator().manual_seed(s)) for s in (0, 1)])
    b = policy.sample(3, x[:1].expand(40_000, 2), torch.Generator().manual_seed(9))
    assert torch.allclose(a.reshape(-1, 2).mean(0), b.mean(0), atol=0.05)
    assert torch.allclose(a.reshape(-1, 2).std(0), b.std(0), rtol=0.05)


# ---- the N-player game ------------------------------------------------------------------------------------

@pytest.mark.parametrize("density", ["binned", "exact"])
def test_density_rewards_use_the_other_agents_kernel_density(density):
    game = BeachBarGame()
    result = simulate(game, ZeroPolicy(game), SimulationConfig(agents=60, episodes=2, seed=1, record_states=True,
                                                                 nodes_per_bandwidth=16.0, density=density))
    expected = torch.zeros(2, 60, dtype=torch.float64)
    for t in range(game.horizon + 1):
        for e in range(2):
            x = result.states[t, e]
            bandwidth = grid_spec(AgentSums.of(x[None]), [0.0], [1.0], result.config).bandwidth[0]
            log_density = exact_others_log_density(x, bandwidth).float()
            paid = (game.terminal_reward_given_log_density(x, log_density) if t == game.horizon
                    else game.reward_given_log_density(x, torch.zeros_like(x), log_density))
            expected[e] += paid.double()
    # Binned at 16 nodes per bandwidth, c_M = 0.1: per-step reward errors ~1e-4, over 21 payments.
    assert torch.allclose(result.returns, expected, atol=5e-3 if density == "binned" else 1e-4)


def test_lq_agents_feel_the_mean_of_the_others():
    game = GAMES["lq1d"]()
    result = simulate(game, ZeroPolicy(game), SimulationConfig(agents=5, seed=2, record_states=True))
    x = result.states[:, 0]                                                    # [T+1, 5, 1]
    others = (x.sum(1, keepdim=True) - x) / 4                                  # [T+1, 5, 1]
    expected = sum(game.reward(t, x[t], torch.zeros_like(x[t]), others) for t in range(game.horizon))
    expected = expected + game.terminal_reward(x[-1], others)
    assert torch.allclose(result.returns[0].float(), expected, rtol=1e-5, atol=1e-5)


def test_a_deviator_shares_every_random_number():
    # Beach-bar dynamics ignore the density: only agent 0's own path may change when it deviates.
    game = BeachBarGame()
    policy = _tiny_policy(game)
    config = SimulationConfig(agents=50, episodes=3, seed=5, record_states=True)
    plain = simulate(game, policy, config)
    deviated = simulate(game, policy, config, deviator=ZeroPolicy(game))
    assert torch.equal(plain.states[:, :, 1:], deviated.states[:, :, 1:])
    assert not torch.equal(plain.states[:, :, 0], deviated.states[:, :, 0])


def test_shards_partition_the_agents_and_have_their_own_streams():
    assert shard_sizes(10, 3) == [4, 3, 3] and sum(shard_sizes(1_000_003, 7)) == 1_000_003
    assert len({shard_seed(0, s) for s in range(8)} | {shard_seed(1, s) for s in range(8)}) == 16
    game = GAMES["lq1d"]()
    one = simulate(game, ZeroPolicy(game), SimulationConfig(agents=40, workers=1, seed=0))
    four = simulate(game, ZeroPolicy(game), SimulationConfig(agents=40, workers=4, seed=0))
    assert one.returns.shape == four.returns.shape == (1, 40)


def test_non_finite_values_are_detected():
    class Broken:
        action_bound = 2.0

        def distribution(self, t, x):
            mean = torch.full((x.shape[0], 1), float("nan"))
            return mean, torch.zeros_like(mean)

    with pytest.raises(FloatingPointError, match="non-finite"):
        simulate(BeachBarGame(), Broken(), SimulationConfig(agents=20, steps=2))


# ---- Ray ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


# Each Ray simulation starts its actors' processes (several seconds on a loaded 2-core box): one test per
# coupling, the density one through the command line.

def test_ray_backend_matches_the_in_process_backend(ray_instance):
    game = GAMES["lq1d"]()
    policy = _tiny_policy(game)
    config = SimulationConfig(agents=301, episodes=2, workers=2, seed=7, record_states=True)
    local = simulate(game, policy, config)
    remote = simulate(game, policy, config, backend="ray")
    # Same shards, same generators, same order of additions: equal (measured bit for bit).
    assert torch.allclose(local.states, remote.states, rtol=0, atol=1e-6)
    assert torch.allclose(local.returns, remote.returns, rtol=0, atol=1e-6)


def test_cli_on_ray_matches_the_in_process_density_game(ray_instance, tmp_path, capsys):
    summaries = []
    for backend in ("local", "ray"):
        out = tmp_path / backend
        code = main(["simulate", str(ROOT / "results" / "beach_bar"), "--agents", "400", "--steps", "4",
                     "--backend", backend, "--workers", "2", "--seed", "3", "--out", str(out)])
        assert code == 0
        summaries.append(json.loads((out / "simulate.json").read_text()))
    assert "agent_steps_per_second" in capsys.readouterr().out
    assert summaries[0]["mean_return"] == pytest.approx(summaries[1]["mean_return"], abs=1e-9)


# ---- validation ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, message", [
    (["--agents", "0"], "agents must be a positive integer"),
    (["--agents", "1.5"], "agents must be a positive integer"),
    (["--agents", "many"], "agents must be a positive integer"),
    (["--agents", "10", "--workers", "0"], "workers must be a positive integer"),
    (["--agents", "10", "--workers", "two"], "workers must be a positive integer"),
    (["--agents", "10", "--workers", "11"], "workers must be <= agents"),
    (["--agents", "10", "--backend", "ray", "--address", "no port"], "address must be 'auto', HOST:PORT"),
    (["--agents", "10", "--backend", "mpi"], "backend must be one of local, ray"),
    (["--agents", "10", "--address", "auto"], "only used by the ray backend"),
])
def test_bad_values_fail_with_one_clear_line(arguments, message, capsys):
    assert main(["simulate", str(ROOT / "results" / "beach_bar"), *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and error.startswith("error: ") and "\n" not in error


def test_config_validation():
    assert parse_count("1e6") == 1_000_000 and parse_count("1_000") == 1000
    for bad in ({"agents": 0}, {"agents": 5, "workers": 6}, {"agents": 5, "episodes": 0}, {"agents": 5, "chunk": 0},
                {"agents": 5, "bandwidth": "wide"}, {"agents": 5, "nodes_per_bandwidth": -1.0},
                {"agents": 5, "density": "kde"}, {"agents": 5, "workers": 2, "density": "exact"}):
        with pytest.raises(ValueError):
            SimulationConfig(**bad)
    with pytest.raises(ValueError, match="agents must be >= 2"):
        simulate(BeachBarGame(), ZeroPolicy(BeachBarGame()), SimulationConfig(agents=1))
