"""The four-rooms game: geometry, the wall rule (property-based), rewards, binding, config validation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dedafp.envs.four_rooms import (
    FOUR_ROOMS_MAP,
    FourRoomsConfig,
    FourRoomsGame,
    four_rooms,
    region_index,
    running_reward,
    segment_hits_rectangles,
    wall_cells,
    wall_rectangles,
)
from dedafp.population.base import PopulationModel

UNIT = 1.0 / 11.0
GAME = FourRoomsGame()
RECTS = wall_rectangles(FOUR_ROOMS_MAP)


class UniformBox(PopulationModel):
    """Uniform law on a box, the same at every t; counts its log_prob calls."""

    def __init__(self, low, high, horizon=40):
        self.low, self.high = torch.tensor(low, dtype=torch.float64), torch.tensor(high, dtype=torch.float64)
        self.dim, self.horizon, self.calls = len(low), horizon, 0

    @property
    def device(self):
        return torch.device("cpu")

    def sample(self, t, n, generator=None):
        return (self.low + (self.high - self.low) * torch.rand(n, self.dim, generator=generator,
                                                               dtype=torch.float64)).float()

    def log_prob(self, x, t):
        self.calls += 1
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        value = -torch.log(self.high - self.low).sum()
        return torch.where(inside, value, torch.tensor(-math.inf, dtype=torch.float64)).to(x.dtype)

    def mean(self, t):
        return ((self.low + self.high) / 2).float()


# ---- independent oracle: exact segment/rectangle distance by orientation tests ------------------------

def _point_segment(p, a, b):
    ab, ap = b - a, p - a
    s = 0.0 if not ab.any() else float(np.clip(ap @ ab / (ab @ ab), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + s * ab)))


def _segments_cross(a, b, c, d):
    def orient(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))
    return orient(a, b, c) * orient(a, b, d) < 0 and orient(c, d, a) * orient(c, d, b) < 0


def clearance(a, b):
    """Distance from segment [a, b] to the nearest wall (0 if it touches one), in float64."""
    best = math.inf
    for x0, y0, x1, y1 in RECTS.numpy():
        if x0 <= a[0] <= x1 and y0 <= a[1] <= y1:
            return 0.0
        corners = [np.array(c) for c in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        for c, d in zip(corners, corners[1:] + corners[:1], strict=True):
            if _segments_cross(a, b, c, d):
                return 0.0
            best = min(best, _point_segment(c, a, b), _point_segment(a, c, d), _point_segment(b, c, d))
    return best


def deep_inside_wall(points, margin=1e-9):
    """Points strictly inside a wall by more than ``margin`` (by the ASCII map, not the rectangles)."""
    walls = wall_cells(FOUR_ROOMS_MAP)
    cells = np.floor(points * 11).astype(int).clip(0, 10)
    inside = walls[cells[:, 1], cells[:, 0]]
    frac = points * 11 - cells
    return inside & np.all((frac > margin * 11) & (frac < 1 - margin * 11), axis=1)


# ---- geometry --------------------------------------------------------------------------------------

def test_walls_match_the_issue_description():
    # In units of 1/11: x in [5,6] for y in [0,2] u [3,8] u [9,11]; y in [5,6] for x in [0,2] u [3,8] u [9,11].
    centres = (np.stack(np.meshgrid(np.arange(11), np.arange(11), indexing="xy"), -1).reshape(-1, 2) + 0.5)
    spec = [((5 <= x <= 6) and (y < 2 or 3 < y < 8 or y > 9)) or ((5 <= y <= 6) and (x < 2 or 3 < x < 8 or x > 9))
            for x, y in centres]
    got = GAME.in_free_space(torch.as_tensor(centres * UNIT)).numpy()
    np.testing.assert_array_equal(~got, np.array(spec))
    assert (~got).sum() == 17                                    # 9 + 8 wall cells, centre shared
    # Merged rectangles cover exactly the wall cells (area 17 / 121).
    area = ((RECTS[:, 2] - RECTS[:, 0]) * (RECTS[:, 3] - RECTS[:, 1])).sum().item()
    assert area == pytest.approx(17 / 121, abs=1e-12)


def test_region_index_names_rooms_and_doors():
    points = torch.tensor([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9], [2.5 * UNIT, 5.5 * UNIT],
                           [5.5 * UNIT, 8.5 * UNIT], [5.5 * UNIT, 5.5 * UNIT], [1.2, 0.5]])
    assert region_index(points).tolist() == [0, 1, 2, 3, 4, 4, -1, -1]


@pytest.mark.parametrize(("start", "end", "hits"), [
    ((4.5, 2.5), (6.5, 2.5), False),        # straight through the bottom door of the vertical wall
    ((4.5, 1.5), (6.5, 1.5), True),         # through the wall below it
    ((2.5, 4.5), (2.5, 6.5), False),        # through the left door of the horizontal wall
    ((4.5, 2.2), (6.5, 2.8), False),        # diagonally through the door
    ((4.5, 2.5), (6.5, 3.5), True),         # clips the wall above the door
    ((4.9, 1.0), (4.9, 4.0), False),        # alongside the wall, never touching
    ((5.0, 1.0), (5.0, 1.5), True),         # sliding on the wall's face touches it (closed walls)
    ((3.0, 3.0), (3.0, 3.0), False),        # no motion in free space
])
def test_segment_test_on_hand_picked_cases(start, end, hits):
    for dtype in (torch.float32, torch.float64):
        a = torch.tensor([start], dtype=dtype) * UNIT
        b = torch.tensor([end], dtype=dtype) * UNIT
        assert segment_hits_rectangles(a, b, RECTS).item() is hits


# ---- the wall rule, property-based --------------------------------------------------------------

free_points = st.tuples(st.floats(0, 1), st.floats(0, 1)).filter(
    lambda p: not deep_inside_wall(np.array([p]), margin=0.0)[0])
# States close to a door or a wall face, and proposals aimed across it.
features = st.sampled_from([(5.0, 2.5), (6.0, 2.5), (5.0, 8.5), (6.0, 8.5), (2.5, 5.0), (2.5, 6.0), (8.5, 5.0),
                            (8.5, 6.0), (5.0, 1.0), (6.0, 4.0), (1.0, 5.0), (7.0, 6.0), (5.0, 3.0), (3.0, 5.0)])


@st.composite
def near_walls(draw):
    fx, fy = draw(features)
    dx, dy = draw(st.floats(-0.6, 0.6)), draw(st.floats(-0.6, 0.6))
    return tuple(np.clip(np.array([fx + dx, fy + dy]) * UNIT, 0.0, 1.0))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(start=st.one_of(free_points, near_walls().filter(lambda p: not deep_inside_wall(np.array([p]), 0.0)[0])),
       velocity=st.tuples(st.floats(-3, 3), st.floats(-3, 3)),
       noise=st.tuples(st.floats(-8, 8), st.floats(-8, 8)))
def test_a_step_never_crosses_a_wall_or_leaves_the_square(start, velocity, noise):
    x = torch.tensor([start], dtype=torch.float64)
    if not GAME.in_free_space(x).item():
        return                                              # a start on a wall's face: nothing to check
    a = torch.tensor([velocity], dtype=torch.float64)
    xi = torch.tensor([noise], dtype=torch.float64)
    proposal = (x + a.clamp(-2, 2) * GAME.config.dt + GAME.config.noise_scale * xi)[0].numpy()
    out = GAME.step(0, x, a, None, xi)[0].numpy()
    moved = not np.array_equal(out, x[0].numpy())
    assert np.array_equal(out, proposal) or not moved         # either the proposal or no move at all
    assert np.all((out >= 0) & (out <= 1)) and not deep_inside_wall(out[None], margin=0.0)[0]
    gap = clearance(x[0].numpy(), proposal)
    in_square = bool(np.all((proposal >= 0) & (proposal <= 1)))
    if moved:
        line = x[0].numpy() + np.linspace(0, 1, 2001)[:, None] * (proposal - x[0].numpy())
        assert not deep_inside_wall(line).any() and in_square
    elif not np.array_equal(proposal, x[0].numpy()):
        # Refused: the segment touches a wall (up to rounding) or the proposal leaves the square.
        assert gap < 1e-9 or not in_square


def test_trajectories_stay_in_the_free_space_and_use_the_doors():
    generator = torch.Generator().manual_seed(0)
    game = GAME
    x = torch.rand(4000, 2, generator=generator) * torch.tensor([5 * UNIT, 5 * UNIT])   # bottom-left room
    start_room = region_index(x)
    for _ in range(game.horizon):
        a = torch.empty(len(x), 2).uniform_(-2.0, 2.0, generator=generator) + torch.tensor([1.0, 1.0])
        noise = torch.randn(len(x), 2, generator=generator)
        new = game.step(0, x, a, None, noise)
        moved = (new != x).any(-1)
        assert game.in_free_space(new).all()
        # Every accepted move is a straight segment that no dense sample finds inside a wall.
        s = torch.linspace(0, 1, 201)[None, :, None]
        line = (x[moved, None, :] + s * (new[moved] - x[moved])[:, None, :]).reshape(-1, 2).double().numpy()
        assert not deep_inside_wall(line, margin=1e-6).any()
        x = new
    assert (start_room == 0).all() and (region_index(x) != 0).float().mean() > 0.05   # doors are passable


# ---- rewards, binding, initial law, diagnostics ------------------------------------------------

def test_reward_formula_and_one_density_query_per_batch():
    population = UniformBox((0.0, 0.0), (0.5, 0.5))
    field = GAME.bind(population)
    assert field is population
    x = torch.tensor([[0.1, 0.1], [0.9, 0.9]])
    a = torch.tensor([[1.0, -2.0], [3.0, 0.0]])              # the second is clipped to (2, 0)
    r = GAME.reward(3, x, a, field)
    assert population.calls == 1
    expected = [-0.1 * 5.0 - math.log(4.0 + 0.01), -0.1 * 4.0 - math.log(0.01)]
    np.testing.assert_allclose(r.numpy(), expected, rtol=1e-6)
    g = GAME.terminal_reward(x, field)
    np.testing.assert_allclose(g.numpy(), [-math.log(4.01), -math.log(0.01)], rtol=1e-6)
    assert population.calls == 2
    # log density -inf is handled exactly; the crowd term uses log(mu + eps), not log(mu) + ...
    out = running_reward(torch.zeros(1, 2), torch.tensor([-math.inf]), GAME.config)
    assert out.item() == pytest.approx(-math.log(0.01))


def test_bind_rejects_fields_without_a_density_or_of_the_wrong_shape():
    with pytest.raises(TypeError, match="log_prob"):
        GAME.bind(object())
    with pytest.raises(ValueError, match="dim=1"):
        GAME.bind(UniformBox((0.0,), (1.0,)))
    with pytest.raises(ValueError, match="horizon>=40"):
        GAME.bind(UniformBox((0.0, 0.0), (1.0, 1.0), horizon=10))


def test_initial_states_observation_and_misplaced_mass():
    generator = torch.Generator().manual_seed(1)
    x = GAME.initial_states(10_000, generator)
    assert x.shape == (10_000, 2) and x.min() >= 0 and x.max() <= UNIT
    obs = GAME.observation(0, torch.tensor([[0.0, 1.0], [0.5, 0.25]]))
    np.testing.assert_allclose(obs.numpy(), [[-1.0, -1.0, 1.0], [-1.0, 0.0, -0.5]])
    # Uniform on [0, 2] x [0, 1]: half the mass is outside; inside, the walls hold 17/121 of it.
    report = GAME.misplaced_mass(UniformBox((0.0, 0.0), (2.0, 1.0)), n=40_000, generator=generator)
    assert report.outside.shape == (41,)
    # 4 standard errors of a 40k-sample Bernoulli mean (sd <= 0.0025).
    np.testing.assert_allclose(report.outside, 0.5, atol=0.01)
    np.testing.assert_allclose(report.in_walls, 0.5 * 17 / 121, atol=0.01)


def test_env_adapters_accept_the_game():
    from gymnasium.utils.env_checker import check_env

    from dedafp.envs.gym_env import MeanFieldEnv

    env = MeanFieldEnv(GAME, UniformBox((0.0, 0.0), (1.0, 1.0)))
    check_env(env, skip_render_check=True)


# ---- config validation ---------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"horizon": 0}, "horizon must be an integer >= 1"),
    ({"dt": -0.1}, "dt must be > 0"),
    ({"sigma": -1.0}, "sigma must be >= 0"),
    ({"sigma": float("nan")}, "sigma must be a finite number"),
    ({"action_bound": 0.0}, "action_bound must be > 0"),
    ({"density_floor": 0.0}, "density_floor must be > 0"),
    ({"init_low": (0.5,)}, "init_low must be a pair"),
    ({"init_high": (0.0, 0.05)}, "init_high must exceed init_low"),
    ({"init_low": (0.4, 0.0), "init_high": (0.6, 0.1)}, "overlaps a wall"),
    ({"init_high": (1.5, 0.1)}, r"init_high must lie in \[0, 1\]"),
    ({"layout": ("..x", "...")}, "may only contain"),
    ({"layout": ("...", "..")}, "equal length"),
    ({"colour": "red"}, "unknown four_rooms parameter"),
])
def test_invalid_configs_fail_with_the_field_name(overrides, message):
    with pytest.raises(ValueError, match=message):
        four_rooms(**overrides)


def test_config_is_frozen_and_replace_revalidates():
    config = four_rooms()
    assert config == FourRoomsConfig() and config.noise_scale == pytest.approx(0.2 * math.sqrt(0.025))
    with pytest.raises(AttributeError):
        config.sigma = 1.0
    assert config.replace(sigma=0.5).sigma == 0.5
    with pytest.raises(ValueError, match="sigma"):
        config.replace(sigma=-0.5)
