"""Damped fictitious play (``damped_fp``): its exact references, its weighting, its config, exact resume.

The loop beyond fictitious play that measurement chose (results/omd/): the newest best response's
share of the average is max(α, 1/k) instead of 1/k. Its exact-parts versions are checked against the
existing exact solvers, and the deep loop with exact best responses against its own exact curve.
"""

import math

import numpy as np
import pytest
import torch
from tiny import resumed_and_straight

from dedafp import load_config, train
from dedafp.agents.average_policy import FictitiousPlayBuffer
from dedafp.algorithms import DampedFictitiousPlay, make_algorithm
from dedafp.algorithms.damped import damped_weight
from dedafp.envs.beach_bar import BeachBarGame
from dedafp.envs.lq import lq_preset
from dedafp.reference import lq
from dedafp.reference.damped import (
    DampedConfig,
    GridDampedFictitiousPlay,
    damped_weights,
    exact_damped_fictitious_play,
)
from dedafp.reference.grid import GridConfig, GridFictitiousPlay, build_grid
from dedafp.run import read_metrics

TINY = ["fp.br_agents=200", "fp.population_agents=2000", "fp.eval_agents=2000", "fp.initial_flow_steps=40",
        "average_policy.steps=40", "average_policy.hidden=16", "flow.steps=20", "flow.hidden=8",
        "flow.transforms=1", "flow.mean_samples=512", "fp.measure_best_response=false"]


@pytest.fixture(scope="module")
def beach_grid():
    return build_grid(BeachBarGame(), GridConfig(cells=40, velocities=11, source_points=4, target_points=4))


# ---- the weights ---------------------------------------------------------------------------------

def test_damped_weights_are_fictitious_play_then_a_constant_step():
    np.testing.assert_allclose(damped_weights(4, 0.01), [0.25] * 4)
    np.testing.assert_allclose(damped_weights(3, 0.5), [0.25, 0.25, 0.5])
    np.testing.assert_allclose(damped_weights(5, 1.0), [0, 0, 0, 0, 1])
    for k in range(1, 12):
        w = damped_weights(k, 0.3)
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and w[-1] == pytest.approx(max(0.3, 1 / k))


def test_buffer_default_is_unchanged_and_the_option_draws_the_damped_weights():
    def filled(**kwargs):
        buffer = FictitiousPlayBuffer(generator=torch.Generator().manual_seed(3), **kwargs)
        for j, size in enumerate((50, 400, 120)):
            buffer.add(torch.zeros(size, dtype=torch.long), torch.full((size, 1), float(j)), torch.zeros(size, 1))
        return buffer

    # Default: the same draws as fictitious play's uniform weighting, by construction (randint path).
    plain, reference = filled(), filled()
    assert plain.weights == pytest.approx([1 / 3] * 3)
    torch.testing.assert_close(plain.sample(1000)[1], reference.sample(1000)[1])
    counts = torch.bincount(plain.sample(60_000)[1][:, 0].long(), minlength=3).double() / 60_000
    torch.testing.assert_close(counts, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.01, rtol=0)
    # Damped: iteration j is drawn with its weight (binomial sd of a share at n = 60k: 0.002).
    damped = filled(newest_weight=0.5)
    assert damped.weights == pytest.approx([0.25, 0.25, 0.5])
    counts = torch.bincount(damped.sample(60_000)[1][:, 0].long(), minlength=3).double() / 60_000
    torch.testing.assert_close(counts, torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64), atol=0.01, rtol=0)
    # The weights survive a save/load.
    restored = FictitiousPlayBuffer(newest_weight=0.5)
    restored.load_state_dict(damped.state_dict())
    assert restored.weights == damped.weights and restored.newest_weight == 0.5
    with pytest.raises(ValueError, match="newest_weight"):
        FictitiousPlayBuffer(newest_weight=0.0)


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, math.nan, math.inf, True, "0.5"])
def test_the_weight_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="damped.weight"):
        DampedConfig(weight=bad)
    if not isinstance(bad, str):        # (a --set value is parsed as YAML: '0.5' is the number there)
        with pytest.raises(ValueError, match="damped.weight"):
            load_config("lq1d", overrides=[f"damped.weight={bad}"])


def test_the_weight_resolves_to_the_measured_choice_or_warns():
    assert damped_weight(load_config("lq2d")) == 1.0
    assert damped_weight(load_config("beach_bar")) == 0.25
    assert damped_weight(load_config("beach_bar", overrides=["damped.weight=0.7"])) == 0.7
    with pytest.warns(UserWarning, match="no weight was measured for 'four_rooms'"):
        damped_weight(load_config("four_rooms"))


# ---- exact references ----------------------------------------------------------------------------

def test_exact_damped_lq_is_fictitious_play_for_a_small_weight_and_geometric_at_one():
    config = lq_preset("lq2d")
    fp = lq.exact_fictitious_play(config, 12).exploitability
    np.testing.assert_allclose(exact_damped_fictitious_play(config, 12, 0.05).exploitability, fp, rtol=1e-10)
    fixed_point = exact_damped_fictitious_play(config, 10, 1.0).exploitability
    # Measured: 0.613, 0.198, ..., 6.6e-3 at k = 5, 2e-5 at k = 10 (fictitious play: 0.370, 0.258).
    assert fixed_point[5] < 0.01 and fixed_point[10] < 1e-3 < fp[10]
    assert np.all(np.diff(fixed_point[1:]) < 0)


def test_exact_damped_grid_mixes_flows_and_reproduces_fictitious_play_after_its_first_step(beach_grid):
    damped = GridDampedFictitiousPlay(beach_grid, 0.3)
    best_masses = []
    for _ in range(6):
        best = beach_grid.one_hot(damped._current().best_response)
        best_masses.append(beach_grid.forward(best))
        damped.iteration()
    # The average's flow is the damped mixture of the best responses' flows (occupancy weighting).
    mixture = np.einsum("j,jts->ts", damped_weights(6, 0.3), np.stack(best_masses))
    np.testing.assert_allclose(damped.mass, mixture, atol=1e-10)
    np.testing.assert_allclose(damped.mass.sum(1), 1.0, atol=1e-10)
    # Fixed point cycles on the crowd-averse beach bar; a damped step converges (measured at 100 cells:
    # alpha = 1 -> 12.1 at k = 20, alpha = 0.2 -> 0.016, fictitious play 0.19).
    fixed = GridDampedFictitiousPlay(beach_grid, 1.0)
    slow = GridDampedFictitiousPlay(beach_grid, 0.2)
    fp = GridFictitiousPlay(beach_grid)
    for _ in range(20):
        e_fixed, e_slow, e_fp = (s.iteration().exploitability for s in (fixed, slow, fp))
    assert e_slow < 0.5 * e_fp and e_fixed > 10 * e_slow


# ---- the deep loop -------------------------------------------------------------------------------

def test_with_exact_best_responses_the_loop_follows_its_exact_curve_on_lq(tmp_path):
    """Riccati best responses against the flow's mean, cloned average, flow, α = 1 (fixed point).

    The stored best responses' damped mixture (``theory/mixture_exploitability``) is the loop's outer
    iterate with the clone taken out: it follows the exact curve within 0.01 + 10% (measured, seed 0:
    gaps 0.007, 0.007, 0.003, 0.0002 at k = 1..4; Monte Carlo s.e. 3e-4). The cloned average adds the
    behavioural-cloning error of this small budget (``theory/bc_error`` 0.06-0.08 measured; bound 0.15).
    """
    config = load_config("lq1d", overrides=[*TINY, "best_response.algorithm=riccati", "fp.iterations=4",
                                            "damped.weight=1", "fp.br_agents=500", "fp.population_agents=5000",
                                            "fp.eval_agents=20000", "fp.initial_flow_steps=300",
                                            "average_policy.steps=300", "average_policy.hidden=32",
                                            "flow.steps=100", "flow.hidden=16", "flow.transforms=2",
                                            "flow.mean_samples=4096"], algorithm="damped_fp")
    rows = read_metrics(train(config, tmp_path / "run").path)
    exact = exact_damped_fictitious_play(lq_preset("lq1d"), 4, 1.0).exploitability
    np.testing.assert_allclose([float(r["reference/exact_damped_exploitability"]) for r in rows], exact, rtol=1e-9)
    mixture = np.array([float(r["theory/mixture_exploitability"]) for r in rows[1:]])
    assert np.all(np.abs(mixture - exact[1:]) <= 0.01 + 0.1 * exact[1:]), (mixture, exact)
    deep = np.array([float(r["fp/exploitability"]) for r in rows[1:]])
    assert np.all(deep - exact[1:] <= 0.15), (deep, exact)
    assert deep[-1] < 0.5 * exact[1]          # the fixed point moved the cloned average too (0.57 -> 0.08)
    assert [float(r["damped/newest_weight"]) for r in rows[1:]] == [1.0] * 4


def test_resume_is_exact(tmp_path):
    config = load_config("lq1d", overrides=[*TINY, "best_response.algorithm=riccati", "fp.iterations=2",
                                            "damped.weight=0.4"], algorithm="damped_fp")
    resumed = resumed_and_straight(config, tmp_path, 3)
    assert float(resumed[-1]["damped/newest_weight"]) == pytest.approx(0.4)


def test_the_evaluator_sees_the_damped_mixture():
    loop = make_algorithm(load_config("lq1d", overrides=[*TINY, "best_response.algorithm=riccati",
                                                         "damped.weight=0.5"], algorithm="damped_fp"))
    assert isinstance(loop, DampedFictitiousPlay)
    for _ in range(3):
        loop.iteration()
    members = loop._weighted_members(loop.best_responses)
    shares = [sum(m is b for m in members) / len(members) for b in loop.best_responses]
    np.testing.assert_allclose(shares, [0.25, 0.25, 0.5])
    assert members[-1] is loop.best_responses[-1]


@pytest.mark.parametrize("game", ["lq1d", "lq2d", "beach_bar"])
def test_the_measured_weight_is_the_exact_sweeps_best_at_k20(game):
    """``MEASURED_WEIGHTS`` is what the exact-parts sweep (results/omd/exact_sweep.md) picks at k = 20."""
    from dedafp.algorithms.damped import MEASURED_WEIGHTS
    from dedafp.algorithms.damped_report import exact_sweep
    curves = exact_sweep(game, 20)
    damped = {float(name.split("=")[1]): curve[20] for name, curve in curves.items() if name.startswith("damped")}
    assert min(damped, key=damped.get) == MEASURED_WEIGHTS[game]
    assert damped[MEASURED_WEIGHTS[game]] < 0.1 * curves["fp"][20]


def test_a_learned_best_response_is_measured_against_the_exact_one_at_every_iteration(tmp_path):
    """The exact curve and the exact responder are kept apart (one attribute once served both: no
    br/shortfall at k = 1, a crash at k = 2)."""
    config = load_config("lq1d", overrides=[*TINY, "best_response.pathwise_steps=5",
                                            "best_response.pathwise_warm_steps=5", "best_response.pathwise_agents=64",
                                            "fp.iterations=2", "damped.weight=0.5", "fp.measure_best_response=true"],
                         algorithm="damped_fp")
    rows = read_metrics(train(config, tmp_path / "run").path)
    assert config.best_response.algorithm == "pathwise"
    assert all(math.isfinite(float(r["br/shortfall"])) for r in rows[1:])
    assert all(math.isfinite(float(r["reference/exact_damped_exploitability"])) for r in rows)
