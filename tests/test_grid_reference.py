"""The grid reference solver: kernel fidelity, mass conservation, exact equilibria, scoring, cache and CLI.

Four-rooms runs on a 22 x 22 grid here (0.4 s to build; the default 44 x 44 takes ~4 s).
"""

import json
import math

import numpy as np
import pytest
import torch

from dedafp.envs.beach_bar import BeachBarGame
from dedafp.envs.four_rooms import FourRoomsGame, four_rooms
from dedafp.population.base import PopulationModel
from dedafp.population.gaussian import GaussianPopulation
from dedafp.reference import cli
from dedafp.reference.grid import (
    GridConfig,
    GridFictitiousPlay,
    GridMirrorDescent,
    build_grid,
    default_grid_config,
    flat_cell_index,
)
from dedafp.reference.grid_scoring import (
    GeodesicW1,
    compare_population,
    lattice_weights,
    project_policy,
    project_population,
    score_policy,
)
from dedafp.reference.grid_store import cached_solution, load_solution, save_solution, solve

UNIT = 1.0 / 11.0


@pytest.fixture(scope="module")
def rooms():
    torch.set_num_threads(1)
    return build_grid(FourRoomsGame(), GridConfig(cells=22))


@pytest.fixture(scope="module")
def bar():
    torch.set_num_threads(1)
    return build_grid(BeachBarGame(), GridConfig(cells=40, velocities=11, source_points=4, target_points=4))


class FreeUniform(PopulationModel):
    """Uniform density on the free space of four-rooms (area 104/121), every t."""

    dim, horizon = 2, 40

    @property
    def device(self):
        return torch.device("cpu")

    def sample(self, t, n, generator=None):
        raise NotImplementedError

    def log_prob(self, x, t):
        free = FourRoomsGame().in_free_space(x)
        return torch.where(free, torch.tensor(-math.log(104 / 121)), torch.tensor(-math.inf))

    def mean(self, t):
        return torch.tensor([0.5, 0.5])


class Beta25(PopulationModel):
    """Beta(2, 5) density on [0, 1], every t."""

    dim, horizon = 1, 20

    @property
    def device(self):
        return torch.device("cpu")

    def sample(self, t, n, generator=None):
        raise NotImplementedError

    def log_prob(self, x, t):
        y = x[:, 0].double()
        inside = (y > 0) & (y < 1)
        y = y.clamp(1e-12, 1 - 1e-12)
        value = math.log(30.0) + torch.log(y) + 4 * torch.log1p(-y)
        return torch.where(inside, value, torch.tensor(-math.inf, dtype=torch.float64)).float()

    def mean(self, t):
        return torch.tensor([2.0 / 7.0])


# ---- kernel ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rooms", "bar"])
def test_kernel_rows_are_distributions_and_transitions_conserve_mass(name, request):
    grid = request.getfixturevalue(name)
    assert grid.kernel.data.min() >= 0
    np.testing.assert_allclose(np.asarray(grid.kernel.sum(1)).ravel(), 1.0, atol=1e-12)
    rng = np.random.default_rng(0)
    policy = rng.dirichlet(np.full(grid.num_actions, 0.3), size=(grid.horizon, grid.num_states))
    mass = grid.forward(policy)
    assert mass.min() >= 0
    np.testing.assert_allclose(mass.sum(1), 1.0, atol=1e-12)
    assert grid.initial_mass.sum() == pytest.approx(1.0, abs=1e-12)


# (cell, velocity): next to the bottom door aiming through it, below it aiming at the wall, the corner
# aiming out of the square, a door cell aiming up, and one heading diagonally into the door.
@pytest.mark.parametrize(("cell", "velocity"), [((9, 4), (2, 0)), ((9, 2), (2, 0)), ((0, 0), (-2, -2)),
                                                ((5, 10), (0, 2)), ((9, 5), (2, 2))])
def test_kernel_row_matches_the_continuous_step(rooms, cell, velocity):
    tv, stay = _one_step_tv(rooms, FourRoomsGame(), cell, velocity, seed=0)
    # Measured over seeds 0-9 with 1e5 steps: TV 0.0005-0.018 over these cases (worst: the door cell,
    # 0.015-0.018); with 4x4 source points it drops to 0.0000-0.008, so ~half is quadrature, half Monte
    # Carlo. A kernel that ignored the wall rule would be off by the refused mass (0.3-0.99 here).
    assert tv < 0.03


@pytest.mark.parametrize(("cell", "velocity"), [((0,), (-2,)), ((20,), (0,)), ((38,), (2,))])
def test_beach_bar_kernel_row_matches_the_reflected_step(bar, cell, velocity):
    tv, _ = _one_step_tv(bar, BeachBarGame(), cell, velocity, seed=0)
    # Measured over seeds 0-9: 0.0013-0.0047, the Monte Carlo floor of 1e5 samples.
    assert tv < 0.01


def _one_step_tv(grid, game, cell, velocity, seed, n=100_000):
    """TV between the kernel row of (cell, velocity) and a histogram of n continuous steps from the cell."""
    state = grid.state_of_cell[flat_cell_index(np.array([cell]), grid.config.cells)][0]
    action = int(np.argmin(np.abs(grid.velocities - np.array(velocity)).sum(1)))
    assert np.allclose(grid.velocities[action], velocity)
    row = grid.kernel[state * grid.num_actions + action].toarray().ravel()
    generator = torch.Generator().manual_seed(seed)
    d = game.state_dim
    x = (torch.tensor(cell, dtype=torch.float64) + torch.rand(n, d, generator=generator, dtype=torch.float64))
    x = x / grid.config.cells
    v = torch.tensor(grid.velocities[action]).expand(n, d)
    y = game.step(0, x, v, None, torch.randn(n, d, generator=generator, dtype=torch.float64))
    states = grid.state_index(y.numpy())
    assert (states >= 0).all()
    hist = np.bincount(states, minlength=grid.num_states) / n
    return 0.5 * np.abs(hist - row).sum(), row[state]


# ---- exact solvers -------------------------------------------------------------------------------------

def test_pinned_figures_random_policy_and_fictitious_play(rooms):
    # Regression pins of this discretisation (22 cells, 5x5 velocities); the 44-cell figures are in
    # docs/reference_solver.md. Relative tolerance 1e-4 absorbs summation-order changes, nothing more.
    assert rooms.exploitability(rooms.uniform_policy()).exploitability == pytest.approx(229.82695, rel=1e-4)
    fp = GridFictitiousPlay(rooms)
    first = fp.evaluate().exploitability
    records = [fp.iteration() for _ in range(5)]
    assert first == pytest.approx(229.82695, rel=1e-4)
    assert [r.iteration for r in records] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([r.exploitability for r in records], [164.0975, 131.3100, 117.0633, 100.0100, 81.0885],
                               rtol=1e-4)
    # The average's flow is tracked as the average of flows; it must be the flow of the average policy.
    np.testing.assert_allclose(rooms.forward(fp.policy), fp.mass, atol=1e-12)
    assert not fp.policy.flags.writeable


def test_omd_equilibrium_is_unexploitable_and_its_best_response_beats_perturbations():
    grid = build_grid(FourRoomsGame(four_rooms(horizon=10)), GridConfig(cells=22))
    omd = GridMirrorDescent(grid, learning_rate=3.0)
    start = omd.evaluate().exploitability
    for _ in range(100):
        record = omd.iteration()
    # Measured: 41.7 for the uniform policy, 0.0024 after 100 iterations (0.0012 after 150).
    assert start > 40 and 0 <= record.exploitability < 0.01
    running, terminal = grid.rewards(omd.mass)
    actions, v_best = grid.best_response(running, terminal)
    best_value = float(grid.initial_mass @ v_best[0])
    assert best_value == pytest.approx(record.best_response_value, abs=1e-9)
    rng = np.random.default_rng(0)
    best = grid.one_hot(actions)
    for _ in range(20):
        perturbed = best.copy()
        rows = rng.random(perturbed.shape[:2]) < 0.1
        perturbed[rows] = rng.dirichlet(np.ones(grid.num_actions), size=int(rows.sum()))
        _, v = grid.evaluate(perturbed, running, terminal)
        assert float(grid.initial_mass @ v[0]) <= best_value + 1e-9
    # Best responses are never beaten: exploitability >= 0 for arbitrary policies too.
    for alpha in (0.1, 1.0):
        policy = rng.dirichlet(np.full(grid.num_actions, alpha), size=(grid.horizon, grid.num_states))
        assert grid.exploitability(policy).exploitability >= -1e-9


def test_beach_bar_omd_converges(bar):
    omd = GridMirrorDescent(bar, learning_rate=30.0)
    records = [omd.iteration() for _ in range(150)]
    # Measured: 8.27 for the uniform policy, 1.38e-3 after 30 and 9.2e-5 after 150 iterations.
    assert records[29].exploitability < 5e-3 and records[-1].exploitability < 5e-4
    mass = omd.mass
    # The crowd gathers around the bar at 0.5 but stays spread by the crowd aversion.
    centres = bar.centres[:, 0]
    assert abs(mass[-1] @ centres - 0.5) < 0.05 and mass[-1].max() < 0.2


# ---- populations and projections -------------------------------------------------------------------

def test_projection_of_known_densities_integrates_to_one(rooms, bar):
    uniform = project_population(rooms, FreeUniform(), 0, method="density")
    assert uniform.mass.sum() == pytest.approx(1.0, abs=1e-6)          # float32 log_prob: 1e-7 relative
    np.testing.assert_allclose(uniform.mass, 1.0 / rooms.num_states, rtol=1e-6)
    beta = project_population(bar, Beta25(), 3, method="density", points=4)
    # Midpoint rule, 160 points on a smooth density: error ~ h²/24 * max|f''| / 16 = 2e-5.
    assert beta.mass.sum() == pytest.approx(1.0, abs=1e-4) and abs(beta.misplaced) < 1e-4
    # A Gaussian leaking past the walls: quadrature and sampling agree on the misplaced mass.
    gauss = GaussianPopulation(np.tile([[0.45, 0.2]], (41, 1)), np.tile(0.01 * np.eye(2), (41, 1, 1)))
    by_density = project_population(rooms, gauss, 5, method="density", points=4)
    by_samples = project_population(rooms, gauss, 5, method="samples", samples=100_000,
                                    generator=torch.Generator().manual_seed(0))
    misplaced = FourRoomsGame().misplaced_mass(gauss, n=100_000, generator=torch.Generator().manual_seed(1))
    assert 0.05 < by_density.misplaced < 0.5
    # Measured: 0.22534 by quadrature (0.22536 with 16x16 points); 0.2234-0.2299 from 100k samples over
    # 5 seeds (standard error 0.0013), so 0.01 is ~7 standard errors.
    assert by_samples.misplaced == pytest.approx(by_density.misplaced, abs=0.01)
    assert misplaced.outside[5] + misplaced.in_walls[5] == pytest.approx(by_density.misplaced, abs=0.01)


def test_grid_population_is_the_piecewise_constant_flow(rooms):
    mass = rooms.forward(rooms.uniform_policy())
    population = rooms.population(mass)
    walls = torch.tensor([[5.5 * UNIT, 1.0 * UNIT], [0.5 * UNIT, 5.5 * UNIT], [1.2, 0.5]])
    assert torch.isinf(population.log_prob(walls, 3)).all()
    x = torch.tensor(rooms.centres[:5], dtype=torch.float32)
    np.testing.assert_allclose(population.log_prob(x, torch.tensor([7] * 5)).numpy(),
                               np.log(mass[7, :5] / rooms.cell_area), rtol=1e-5)
    np.testing.assert_allclose(population.mean(10).numpy(), mass[10] @ rooms.centres, rtol=1e-6)
    sampled = project_population(rooms, population, 10, samples=200_000, generator=torch.Generator().manual_seed(0))
    assert sampled.misplaced == 0.0
    # TV of a 200k-sample histogram to the exact masses, measured over seeds 0-4: 0.0056-0.0085.
    assert 0.5 * np.abs(sampled.mass - mass[10]).sum() < 0.015


def test_compare_population_and_geodesic_w1(rooms):
    reference = rooms.forward(rooms.uniform_policy())
    same = compare_population(rooms, reference, rooms.population(reference), method="density")
    assert same.total_variation.max() < 1e-5 and same.wasserstein.max() < 1e-6
    np.testing.assert_allclose(same.region_mass, same.reference_region_mass, atol=1e-5)
    assert same.region_names == ("bottom-left", "bottom-right", "top-left", "top-right", "doors")
    np.testing.assert_allclose(same.reference_region_mass.sum(1), 1.0, atol=1e-12)
    # Everyone runs to the lower left (lattice point 0 is the velocity (-2, -2)).
    other = rooms.forward(rooms.one_hot(np.zeros((rooms.horizon, rooms.num_states), dtype=np.int64)))
    far = compare_population(rooms, reference, rooms.population(other), method="density", w1_cells=11)
    assert far.total_variation[-1] > 0.5 and far.wasserstein[-1] > 0.1
    assert far.summary()["ref/tv_max"] == pytest.approx(far.total_variation.max())
    # Unit masses on either side of the lower vertical wall: the path goes through the door.
    p, q = np.zeros(rooms.num_states), np.zeros(rooms.num_states)
    p[rooms.state_index(np.array([[4.5 * UNIT, 0.5 * UNIT]]))] = 1.0
    q[rooms.state_index(np.array([[6.5 * UNIT, 0.5 * UNIT]]))] = 1.0
    # On the 11 x 11 graph: up 2, right 2 through the door, down 2 = 6 cells (no corner cutting).
    assert GeodesicW1(rooms, 11)(p, q) == pytest.approx(6 * UNIT, abs=1e-9)
    # On 22 x 22 it is shorter but still longer than the Euclidean 2/11 and the true geodesic 0.378.
    assert 0.378 < GeodesicW1(rooms, 22)(p, q) < 6 * UNIT


def test_score_policy_recovers_lattice_policies(rooms):
    actions = np.random.default_rng(1).integers(0, rooms.num_actions, size=(rooms.horizon, rooms.num_states))

    def lattice_player(t, x):
        states = rooms.state_index(x.numpy())
        return torch.as_tensor(rooms.velocities[actions[t, states]])

    for projection in ("linear", "nearest"):
        projected = project_policy(rooms, lattice_player, samples_per_cell=4, projection=projection)
        np.testing.assert_allclose(projected, rooms.one_hot(actions), atol=1e-12)
    score = score_policy(rooms, lattice_player, samples_per_cell=4)
    assert score.exploitability == pytest.approx(rooms.exploitability(rooms.one_hot(actions)).exploitability)

    generator = torch.Generator().manual_seed(0)

    def uniform_box(t, x):
        return 4.0 * torch.rand(x.shape[0], 2, generator=generator) - 2.0

    projected = project_policy(rooms, uniform_box, samples_per_cell=256, projection="linear",
                               generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(projected.sum(-1), 1.0, atol=1e-12)
    # Linear weights of U[-2, 2] on the lattice {-2, -1, 0, 1, 2}: 1/8, 1/4, 1/4, 1/4, 1/8 per axis.
    marginal = np.array([1, 2, 2, 2, 1]) / 8
    expected = np.outer(marginal, marginal).ravel()
    # 256 samples a cell, averaged over cells and times: standard error ~1e-3 per entry.
    np.testing.assert_allclose(projected.mean((0, 1)), expected, atol=0.005)


def test_linear_projection_keeps_the_mean_action(rooms):
    rng = np.random.default_rng(2)
    a = rng.uniform(-2, 2, size=(1000, 2))
    index, weight = lattice_weights(rooms, a, "linear")
    np.testing.assert_allclose((rooms.velocities[index] * weight[..., None]).sum(1), a, atol=1e-12)
    index, weight = lattice_weights(rooms, np.array([[5.0, -0.4]]), "nearest")     # clipped, then rounded
    np.testing.assert_allclose(rooms.velocities[index[0, 0]], [2.0, 0.0])


# ---- validation -------------------------------------------------------------------------------------

def test_invalid_grid_settings_fail_clearly(rooms):
    with pytest.raises(ValueError, match="multiple of 11"):
        build_grid(FourRoomsGame(), GridConfig(cells=23))
    with pytest.raises(ValueError, match="velocities must be odd"):
        GridConfig(cells=22, velocities=4)
    with pytest.raises(ValueError, match="cells must be an integer >= 2"):
        GridConfig(cells=1)
    with pytest.raises(ValueError, match="prune must be"):
        GridConfig(cells=22, prune=0.5)
    with pytest.warns(UserWarning, match="tail >= 4"):
        GridConfig(cells=22, tail=3.0)
    with pytest.raises(ValueError, match="needs sigma > 0"):
        build_grid(FourRoomsGame(four_rooms(sigma=0.0)), GridConfig(cells=22))
    with pytest.raises(ValueError, match="unknown grid parameter"):
        default_grid_config("four_rooms", colour=1)
    with pytest.raises(ValueError, match=r"policy must have shape \[T, S, A\]"):
        rooms.exploitability(np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="method must be one of"):
        project_population(rooms, FreeUniform(), 0, method="kde")
    with pytest.raises(ValueError, match="must return a tensor"):
        project_policy(rooms, lambda t, x: torch.zeros(len(x), 3))
    with pytest.raises(ValueError, match="learning_rate"):
        GridMirrorDescent(rooms, learning_rate=0.0)


# ---- cache and CLI -----------------------------------------------------------------------------------

def test_solution_cache_round_trip(tmp_path, bar):
    solution = solve(bar, "fp", iterations=3)
    assert [r.iteration for r in solution.history] == [0, 1, 2, 3]
    path = save_solution(solution, tmp_path)
    loaded = load_solution(path)
    np.testing.assert_array_equal(loaded.mass, solution.mass)
    assert loaded.history == solution.history and loaded.matches(bar)
    assert cached_solution(bar, "fp", tmp_path) is not None and cached_solution(bar, "omd", tmp_path) is None
    other = build_grid(BeachBarGame(BeachBarGame().config.replace(sigma=0.3)), bar.config)
    assert cached_solution(other, "fp", tmp_path) is None
    with pytest.raises(ValueError, match="another game or grid"):
        loaded.population(other)


def test_cli_writes_a_small_cache_and_figures(tmp_path, capsys):
    code = cli.main(["beach_bar", "--method", "omd", "--iterations", "4", "--cells", "20", "--velocities", "5",
                     "--set", "crowd_cost=0.2", "--set", "grid.source_points=2", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "exploitability" in out and "beach_bar-20c5v-omd.npz" in out
    npz = tmp_path / "beach_bar-20c5v-omd.npz"
    meta = json.loads(npz.with_suffix(".json").read_text())
    assert meta["game_config"]["crowd_cost"] == 0.2 and meta["grid_config"]["source_points"] == 2
    assert set(meta["exploitability_at"]) == {"0", "4"} and npz.stat().st_size < 1_000_000
    assert len(load_solution(npz).history) == 5
    assert (tmp_path / "beach_bar-20c5v-omd-density.png").exists()
    assert cli.main(["beach_bar", "--set", "crowd_cost=-1", "--out", str(tmp_path)]) == 2
    assert "crowd_cost must be >= 0" in capsys.readouterr().err


def test_sampled_action_costs_remove_the_lattice_jensen_gap(rooms):
    # Constant velocity (0.5, 0.5): halfway between lattice points, so the linear projection plays a
    # 50/50 mixture per axis whose mean squared speed is 0.5 higher. Charging the lattice actions costs
    # c_A * 0.5 = 0.05 more per step, exactly 40 * 0.05 = 2.0 over the horizon, whatever the flow.
    def constant(t, x):
        return torch.full((x.shape[0], 2), 0.5)

    sampled = score_policy(rooms, constant, samples_per_cell=2, action_rewards="sampled")
    lattice = score_policy(rooms, constant, samples_per_cell=2, action_rewards="lattice")
    assert sampled.best_response_value == pytest.approx(lattice.best_response_value, abs=1e-9)
    assert sampled.policy_value - lattice.policy_value == pytest.approx(2.0, abs=1e-9)
    with pytest.raises(ValueError, match="action_rewards must be one of"):
        score_policy(rooms, constant, action_rewards="exact")
