"""`dedafp bench compare`: clear errors, the table on tiny real runs, and the exact episode mixture on a grid."""

import csv
import math

import numpy as np
import pytest
import torch
from test_beach_bar import Triangle  # μ_t(x) = 2x on [0, 1]

from dedafp.agents.mixture import MixturePolicy
from dedafp.agents.policy import act
from dedafp.benchmarks.compare import (
    CompareConfig,
    episode_mixture_exploitability,
    grid_fictitious_play,
    load_env_results,
)
from dedafp.cli import main
from dedafp.envs.beach_bar import BeachBarGame
from dedafp.evaluation.grid import GridEvaluator
from dedafp.reference.grid_responder import GridBestResponder, GridPolicy
from dedafp.reference.grid_scoring import score_mixture, score_policy

# Runs of a few seconds: exact Riccati best responses, tiny behavioural cloning and flow.
TINY = ("fp.br_agents=200", "fp.population_agents=2000", "fp.eval_agents=2000", "fp.initial_flow_steps=40",
        "average_policy.steps=40", "average_policy.hidden=16", "flow.steps=20", "flow.hidden=8",
        "flow.transforms=1", "flow.mean_samples=512")


@pytest.mark.parametrize("kwargs, message", [
    ({"envs": ("lq3d",)}, r"envs must be games with an exact reference.*got \['lq3d'\]"),
    ({"envs": ()}, "at least one game"),
    ({"envs": ("lq1d", "lq1d")}, "distinct"),
    ({"best_response": "sac"}, r"best_response must be one of \('exact', 'ppo'\), got 'sac'"),
    ({"iterations": 0}, "iterations must be an integer >= 1"),
    ({"overrides": ("algorithm=algo1",)}, "bench compare runs all three"),
    ({"overrides": ("best_response.algorithm=sac",)}, "use --best-response"),
    ({"overrides": ("fp.br_agents=1,2",)}, "one value per --set key"),
    ({"overrides": ("seed=3",)}, "use --seeds"),
])
def test_bad_settings_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompareConfig(**kwargs)


def test_cli_reports_bad_values_in_one_line_before_any_run(tmp_path, capsys):
    base = ["bench", "compare", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert main([*base, "--envs", "lq2d", "fourrooms"]) == 2
    assert "envs must be games with an exact reference" in capsys.readouterr().err
    assert main([*base, "--best-response", "riccati"]) == 2
    assert capsys.readouterr().err.strip() == "error: best_response must be one of ('exact', 'ppo'), got 'riccati'"
    assert main([*base, "--envs", "lq1d", "four_rooms", "--set", "fp.br_agnts=5"]) == 2    # a bad key of any game
    assert "unknown key(s) ['br_agnts']" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_table_has_a_finite_row_per_algorithm_from_tiny_runs(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", "compare", "--envs", "lq1d", "--seeds", "0", "--iterations", "1",
            "--runs", str(tmp_path / "runs"), "--out", str(out), *[a for o in TINY for a in ("--set", o)]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    for algorithm in ("dedafp", "algo1", "algo2"):
        assert f"lq1d algorithm={algorithm} seed 0: trained" in printed
        assert (tmp_path / "runs" / "lq1d" / f"algorithm={algorithm}" / "seed0" / "metrics.csv").exists()

    with open(out / "table.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["env"], row["algorithm"]) for row in rows] == [("lq1d", "dedafp"), ("lq1d", "algo1"),
                                                                ("lq1d", "algo2")]
    numbers = ["exploitability_mean", "mixture_exploitability_mean", "w2_to_equilibrium_mean", "flow_w2_mean",
               "w2_mean_mean", "exploitability_k0", "exploitability_k1", "time_total_s", "time_training_s"]
    for row in rows:
        assert row["best_response"] == "riccati" and row["seeds"] == "1" and row["reached"] == "1"
        for name in numbers:
            assert math.isfinite(float(row[name])), (row["algorithm"], name)
        assert float(row["exploitability_mean"]) < float(row["exploitability_k0"])    # one best response helps
    by_algorithm = {row["algorithm"]: row for row in rows}
    assert float(by_algorithm["dedafp"]["time_flow_s"]) > 0 and float(by_algorithm["algo1"]["time_bc_s"]) >= 0
    table = (out / "table.md").read_text()
    assert "## `lq1d`: seeds 0, K = 1 iterations, best response `riccati`" in table
    assert table.count("\n| dedafp |") == 3 and "| exact fictitious play |" in table
    assert "- final exploitability: **" in table and "- training wall-clock (evaluation excluded): **" in table
    assert (out / "compare.png").stat().st_size > 0

    # Rebuilding from the stored record alone gives the same table; re-running trains nothing.
    [stored] = load_env_results(out)
    assert [r.algorithm for r in stored.records] == ["dedafp", "algo1", "algo2"]
    (out / "table.md").unlink()
    assert main([*args, "--table-only"]) == 0
    assert (out / "table.md").read_text() == table
    assert main(args) == 0
    assert capsys.readouterr().out.count(": skipped") == 3


def test_episode_mixture_is_exact_on_the_grid():
    responder = GridBestResponder(BeachBarGame())
    grid = responder.grid
    crowd = responder.learn(_Ramp(1.0))
    other = responder.learn(_Ramp(-1.0))
    one, repeated, mixed = episode_mixture_exploitability(grid, [crowd, crowd, other], [1, 2, 3])
    # One member: the grid score of that policy (lattice actions: its projection is exact).
    alone = score_policy(grid, lambda t, x: act(crowd, t, x, deterministic=True), 4).exploitability
    assert one == pytest.approx(alone, rel=1e-6, abs=1e-9)
    assert repeated == pytest.approx(one, rel=1e-9)                  # [π, π] is π
    assert math.isnan(episode_mixture_exploitability(grid, [crowd], [0])[0])
    assert mixed >= -1e-9
    # Scoring the mixture cell by cell mixes the members state by state: another policy, another value.
    statewise = score_policy(grid, lambda t, x: act(MixturePolicy([crowd, crowd, other]), t, x), 6).exploitability
    assert abs(statewise - mixed) > 1e-3
    # score_mixture (what the grid evaluator uses for Algo 1) is the same episode mixture.
    members = [lambda t, x, p=p: act(p, t, x, deterministic=True) for p in (crowd, crowd, other)]
    assert score_mixture(grid, members, 4).exploitability == pytest.approx(mixed, rel=1e-6, abs=1e-9)


def test_grid_evaluator_scores_an_algo1_average_as_an_episode_mixture():
    game = BeachBarGame()
    evaluator = GridEvaluator(game)
    responder = GridBestResponder(game)
    members = [responder.learn(_Ramp(1.0)), responder.learn(_Ramp(-1.0))]
    metrics = evaluator.evaluate(2, MixturePolicy(members), Triangle(), members, None)
    [exact] = episode_mixture_exploitability(evaluator.grid, members, [2])
    assert metrics["fp/grid_exploitability"] == pytest.approx(exact, rel=1e-6, abs=1e-9)


class _Ramp:
    """μ_t(x) ∝ 1 + slope (x - 1/2) on [0, 1]: crowded at one end of the beach."""

    dim, horizon = 1, 20

    def __init__(self, slope: float) -> None:
        self.slope = slope

    @property
    def device(self):
        return torch.device("cpu")

    def log_prob(self, x, t):
        return torch.log1p(self.slope * (x[:, 0] - 0.5))


def test_grid_fictitious_play_starts_at_the_zero_policy_and_mixes_its_best_responses():
    grid = GridBestResponder(BeachBarGame()).grid
    values = grid_fictitious_play(grid, 3)
    zero = np.zeros((grid.horizon, grid.num_states, grid.num_actions))
    zero[..., int(np.argmin(np.abs(grid.velocities).sum(-1)))] = 1.0
    start = grid.exploitability(zero)
    assert len(values) == 4 and values[0] == pytest.approx(start.exploitability, rel=1e-12)
    first = GridPolicy(grid, start.best_response)      # k = 1: the best response to the zero policy alone
    # (float32 velocities in the GridPolicy: agreement to rounding)
    assert values[1] == pytest.approx(episode_mixture_exploitability(grid, [first], [1])[0], rel=1e-6)
    assert min(values) >= -1e-9 and values[-1] < values[0]
