"""End-to-end tests of the command line, run folders, resume and the Python API."""

import csv
import json

import pytest
import torch
from tiny import set_args

from dedafp.cli import main
from dedafp.config import load_config
from dedafp.run import load_run

# A tiny but complete run: real PPO (pinned: the LQ games default to pathwise), behavioural cloning and
# flow, small budgets.
TINY = ["fp.br_agents=200", "fp.population_agents=2000", "fp.eval_agents=2000", "fp.initial_flow_steps=40",
        "best_response.algorithm=ppo",
        "best_response.total_steps=2048", "best_response.warm_steps=1024", "best_response.n_steps=64",
        "best_response.batch_size=256", "best_response.n_epochs=2", "best_response.hidden=16",
        "average_policy.steps=40", "average_policy.hidden=16", "flow.steps=20", "flow.hidden=8",
        "flow.transforms=1", "flow.mean_samples=512"]
SMALL_PPO = [o for o in TINY if o.startswith("best_response.")]
# The same run with the LQ games' default best responder (pathwise) at a tiny budget.
TINY_DEFAULT = [o for o in TINY if not o.startswith("best_response.")] + [
    "best_response.hidden=16", "best_response.pathwise_agents=64", "best_response.pathwise_steps=20",
    "best_response.pathwise_warm_steps=10"]


def _rows_of(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _rows(path):
    return _rows_of(path / "metrics.csv")


def test_train_evaluate_plot_end_to_end(tmp_path, capsys):
    """The default run of lq1d (pathwise best responses), tiny budgets; the deep-RL estimate by a small PPO."""
    out = tmp_path / "run"
    assert main(["train", "lq1d", "--iterations", "2", "--seed", "1", "--out", str(out),
                 *set_args(*TINY_DEFAULT)]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "exploitability.png" in printed
    for name in ("config.yaml", "metrics.csv", "summary.json", "average_policy.pt", "population.pt",
                 "checkpoints/iter_000.pt", "checkpoints/iter_002.pt", "figures/exploitability.png",
                 "figures/moments.png", "figures/densities.png", "figures/error_terms.png"):
        assert (out / name).exists(), name
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    for column in ("fp/exploitability", "fp/exploitability_se", "br/return", "bc/nll", "flow/nll",
                   "theory/br_shortfall", "theory/bc_error", "theory/flow_w2", "time/best_response"):
        assert column in rows[-1]
    assert float(rows[-1]["fp/exploitability"]) >= -1e-3          # exploitability is never negative
    assert float(rows[0]["fp/exploitability"]) > float(rows[-1]["fp/exploitability"])
    capsys.readouterr()
    assert main(["evaluate", str(out), "--agents", "2000", "--deep-rl", *set_args(*SMALL_PPO)]) == 0
    assert "deep-RL best response: ppo, 2048 steps" in capsys.readouterr().out     # pathwise is not deep RL
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["fp/exploitability"] >= -1e-3
    assert "deep_rl/exploitability_lower_bound" in evaluation
    assert main(["evaluate", str(out), "--agents", "2000", "--all-iterations"]) == 0
    per_iteration = _rows_of(out / "evaluation.csv")
    assert [int(r["iteration"]) for r in per_iteration] == [0, 1, 2]
    # The checkpoint of the last iteration scores what the run itself reported (same seeds).
    assert float(per_iteration[-1]["fp/exploitability"]) == pytest.approx(float(rows[-1]["fp/exploitability"]),
                                                                        rel=1e-6)
    assert main(["plot", str(out)]) == 0

    run = load_run(out)
    x = torch.zeros(5, 1)
    assert run.average_policy.predict(3, x).shape == (5, 1)
    assert run.population.log_prob(x, 3).shape == (5,)
    assert run.population.sample(3, 7).shape == (7, 1)
    assert run.config.seed == 1
    assert run.config.best_response.algorithm == "pathwise"       # the LQ games' default responder


# SAC at a tiny budget: its warm-started calls keep a replay buffer, which the checkpoint must carry.
TINY_SAC = [o for o in TINY if not o.startswith("best_response.")] + [
    "best_response.algorithm=sac", "best_response.total_steps=600", "best_response.warm_steps=300",
    "best_response.num_envs=8", "best_response.learning_starts=100", "best_response.batch_size=64",
    "best_response.hidden=16"]


@pytest.mark.parametrize("options", [TINY, TINY_SAC], ids=["ppo", "sac"])
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, options):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", "lq1d", "--iterations", "2", "--out", str(straight), *set_args(*options)]) == 0
    # "Crash" after iteration 1, then resume to 2 iterations.
    assert main(["train", "lq1d", "--iterations", "1", "--out", str(resumed), *set_args(*options)]) == 0
    assert main(["train", "--resume", str(resumed), "--iterations", "2"]) == 0
    a, b = _rows(straight), _rows(resumed)
    assert len(a) == len(b) == 3
    for row_a, row_b in zip(a, b, strict=True):
        for key in row_a:
            if not key.startswith("time/"):
                assert row_a[key] == row_b[key], key
    x = torch.randn(20, 1)
    run_a, run_b = load_run(straight), load_run(resumed)
    torch.testing.assert_close(run_a.population.log_prob(x, 4), run_b.population.log_prob(x, 4), rtol=0, atol=0)
    torch.testing.assert_close(run_a.average_policy.distribution(4, x), run_b.average_policy.distribution(4, x),
                               rtol=0, atol=0)


@pytest.mark.parametrize("algorithm", ["algo1", "algo2"])
def test_baselines_train_and_load_through_the_same_api(tmp_path, algorithm):
    out = tmp_path / algorithm
    assert main(["train", "lq1d", "--algorithm", algorithm, "--iterations", "2", "--out", str(out),
                 *set_args(*TINY)]) == 0
    rows = _rows(out)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    assert ("bc/nll" in rows[-1]) == (algorithm == "algo2")
    assert "flow/nll" not in rows[-1] and float(rows[-1]["theory/flow_w2"]) >= 0
    run = load_run(out)
    assert type(run.population).__name__ == "ParticlePopulation"
    assert type(run.average_policy).__name__ == ("MixturePolicy" if algorithm == "algo1" else "AveragePolicy")
    mean, std = run.average_policy.distribution(3, torch.zeros(6, 1))
    assert mean.shape == std.shape == (6, 1)
    assert run.population.log_prob(torch.zeros(4, 1), 3).shape == (4,)


def test_evaluate_every_skips_reference_evaluations_but_not_the_last(tmp_path):
    out = tmp_path / "sparse"
    assert main(["train", "lq1d", "--iterations", "3", "--out", str(out),
                 *set_args(*TINY, "fp.evaluate_every=2")]) == 0
    rows = _rows(out)
    evaluated = [r["fp/exploitability"] != "nan" for r in rows]
    assert evaluated == [True, False, True, True]      # k = 0, 2 (every 2nd) and 3 (the last)


def test_training_into_an_existing_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "lq1d", "--iterations", "1", "--out", str(out), *set_args(*TINY)]
    assert main(args) == 0
    assert main(args) == 2
    assert "use --resume" in capsys.readouterr().err


@pytest.mark.parametrize("assignment, message", [
    ("best_response.algorithm=dqn", "best_response.algorithm must be one of"),
    ("best_response.total_stepz=5", "unknown key"),
    ("flow.backend=glow", "flow.backend must be one of"),
    ("game.sigma=-1", "sigma must be a finite number >= 0"),
    ("fp.iterations=0", "fp.iterations must be an integer >= 1"),
    ("nonsense.x=1", "unknown config section"),
    ("device=tpu", "device must be 'cpu', 'cuda' or 'cuda:N'"),
    ("algorithm=algo9", "algorithm must be one of"),
    ("fp.kde_bandwidth=wide", "fp.kde_bandwidth must be one of"),
])
def test_bad_configs_fail_with_clear_messages(tmp_path, capsys, assignment, message):
    code = main(["train", "lq1d", "--out", str(tmp_path / "r"), "--set", assignment])
    assert code == 2
    assert message in capsys.readouterr().err


def test_config_file_and_overrides_compose(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("fp:\n  iterations: 7\nflow:\n  backend: zuko\ngame:\n  sigma: 0.3\n")
    config = load_config("lq2d", path, ["flow.bins=4", "game.x_target=[1, 1]"], seed=3)
    assert (config.fp.iterations, config.flow.backend, config.flow.bins, config.seed) == (7, "zuko", 4, 3)
    assert config.game == {"sigma": 0.3, "x_target": [1, 1]}


def test_deep_rl_estimate_of_an_exact_responder_run_uses_the_games_deep_rl_settings(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith("best_response.")]
    assert main(["train", "lq1d", "--iterations", "1", "--out", str(out),
                 *set_args(*tiny, "best_response.algorithm=riccati")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--agents", "2000", "--deep-rl", *set_args(*SMALL_PPO)]) == 0
    assert "deep-RL best response: ppo, 2048 steps" in capsys.readouterr().out
    assert "deep_rl/exploitability_lower_bound" in json.loads((out / "evaluation.json").read_text())
    assert main(["evaluate", str(out), "--deep-rl", "--set", "fp.iterations=3"]) == 2
    assert "best_response.* keys only" in capsys.readouterr().err
