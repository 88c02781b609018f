"""The grid best responder (exact backward induction on the reference grid) and exploring starts."""

import math

import numpy as np
import pytest
import torch
from test_beach_bar import Triangle  # μ_t(x) = 2x on [0, 1]: crowded at the right end

from dedafp.agents.best_response import BestResponseConfig
from dedafp.agents.policy import ZeroPolicy
from dedafp.envs.beach_bar import BeachBarGame
from dedafp.envs.four_rooms import FourRoomsGame
from dedafp.envs.lq import LQGame, lq_preset
from dedafp.envs.vec_env import BatchedMeanFieldVecEnv
from dedafp.population.base import PopulationModel
from dedafp.reference.grid_responder import GridBestResponder
from dedafp.rollout import rollout


class Shifted:
    """A deterministic policy's actions plus a constant offset (a perturbation of it)."""

    def __init__(self, policy, offset: float) -> None:
        self.policy, self.offset = policy, offset
        self.action_bound = policy.action_bound

    def distribution(self, t, x):
        mean, std = self.policy.distribution(t, x)
        return (mean + self.offset).clamp(-2, 2), std


@pytest.fixture(scope="module")
def bar_response():
    game = BeachBarGame()
    responder = GridBestResponder(game)
    return game, responder, responder.learn(Triangle())


def _mean_return(game, policy, field, seed=3, n=20_000):
    generator = torch.Generator().manual_seed(seed)       # common random numbers across policies
    return rollout(game, policy, n, field, deterministic=True, generator=generator).returns.double().mean().item()


def test_grid_policy_looks_up_the_cell_of_each_point(bar_response):
    game, responder, policy = bar_response
    x = torch.rand(5000, 1, generator=torch.Generator().manual_seed(0))
    states = responder.grid.state_index(x.double().numpy())
    for t in (0, 7, game.horizon - 1):
        expected = policy.table[t, torch.as_tensor(states)]
        assert torch.equal(policy.mean_action(t, x), expected)
    assert torch.equal(policy.mean_action(0, torch.tensor([[1.5]])), torch.zeros(1, 1))


def test_grid_best_response_beats_the_zero_policy_and_perturbations(bar_response):
    game, _, policy = bar_response
    field = game.bind(Triangle())
    best = _mean_return(game, policy, field)
    # Monte Carlo s.e. of a return difference with common noise is < 0.005 at 20k agents (measured
    # spread over seeds 0-4); a perturbation of one lattice step (0.2) costs more than 0.02.
    for other in (ZeroPolicy(game), Shifted(policy, 0.2), Shifted(policy, -0.2)):
        assert best > _mean_return(game, other, field) + 0.01


def test_four_rooms_grid_best_response_leaves_the_crowded_start_room():
    game = FourRoomsGame()

    class StartRoom(PopulationModel):
        """Everyone uniform in the start corner [0, 1/11]² at every t; nobody elsewhere."""

        dim, horizon = 2, game.horizon
        device = torch.device("cpu")

        def sample(self, t, n, generator=None):
            return torch.rand(n, 2, generator=generator) / 11

        def log_prob(self, x, t):
            inside = (x >= 0).all(-1) & (x <= 1 / 11).all(-1)
            return torch.where(inside, torch.full_like(x[:, 0], math.log(121.0)), torch.full_like(x[:, 0], -30.0))

        def mean(self, t):
            return torch.full((2,), 0.5 / 11)

    policy = GridBestResponder(game).learn(StartRoom())
    final = rollout(game, policy, 2000, game.bind(StartRoom()), deterministic=True,
                    generator=torch.Generator().manual_seed(1)).states[-1]
    # Any cell outside the corner pays -log(0.01) instead of -log(121): the response flees the corner.
    corner = (final <= 1 / 11).all(-1).double().mean().item()
    assert corner < 0.05


def test_grid_best_response_needs_a_game_with_a_grid():
    with pytest.raises(ValueError, match="reference grid"):
        GridBestResponder(LQGame(lq_preset("lq2d"), name="lq2d"))


def test_exploring_starts_spread_the_last_agents_over_the_free_space():
    game = FourRoomsGame()
    population = Triangle()
    bar = BeachBarGame()
    env = BatchedMeanFieldVecEnv(bar, population, 400, seed=0, exploring_starts=0.5)
    states = env.states[:, 0].numpy()
    assert states[:200].max() <= bar.config.init_high          # μ_0 agents
    assert states[200:].max() > 0.9 and states[200:].min() >= 0   # exploring agents cover the beach
    spread = game.exploring_states(20_000, torch.Generator().manual_seed(0))
    assert bool(game.in_free_space(spread).all())
    # Uniform on the free space: each of the four rooms holds about a quarter of it (s.e. ~0.003).
    rooms = game.region_index(spread)
    shares = np.array([(rooms == i).double().mean().item() for i in range(4)])
    np.testing.assert_allclose(shares, shares.mean(), atol=0.02)
    with pytest.raises(ValueError, match="exploring_starts"):
        BatchedMeanFieldVecEnv(bar, population, 4, exploring_starts=1.0)
    with pytest.raises(ValueError, match="exploring_starts"):
        BestResponseConfig(exploring_starts=-0.1)
    with pytest.raises(NotImplementedError, match="exploring"):
        LQGame(lq_preset("lq1d"), name="lq1d").exploring_states(3)
