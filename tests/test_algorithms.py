"""The algorithm interface: a new outer loop is one class and one registration, and every tool takes it."""

import pytest
import torch
from tiny import FAST_LQ

from dedafp import Algorithm, FictitiousPlay, load_config, load_run, make_algorithm, register_algorithm, train
from dedafp.algorithms import registered_algorithms
from dedafp.cli import main
from dedafp.run import read_metrics

TINY = FAST_LQ


@register_algorithm("last_response")
class LastResponse(FictitiousPlay):
    """Best response only, no averaging: the proposed policy is the latest best response."""

    @property
    def average_policy(self):
        return self.best_responses[-1] if self.best_responses else self._average_policy

    def _update_average(self, played):
        return {}


def test_registered_algorithms_include_the_paper_three_and_the_new_one():
    assert {"dedafp", "algo1", "algo2", "last_response"} <= set(registered_algorithms())
    assert isinstance(make_algorithm(load_config("lq1d", overrides=TINY, algorithm="last_response")), Algorithm)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        load_config("lq1d", algorithm="no_such_loop")


def test_a_registered_algorithm_trains_resumes_and_evaluates(tmp_path):
    config = load_config("lq1d", overrides=[*TINY, "fp.iterations=1"], algorithm="last_response")
    run = train(config, tmp_path / "run")
    assert len(read_metrics(run.path)) == 2
    resumed = train(config.with_overrides(["fp.iterations=2"]), tmp_path / "run", resume=True)
    rows = read_metrics(resumed.path)
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]
    # The run's policy is the last (exact, Riccati) best response: no behavioural cloning happened.
    assert "bc/nll" not in rows[-1]
    x = torch.randn(8, 1)
    mean, std = resumed.average_policy.distribution(3, x)
    assert torch.all(std == 0) and mean.shape == (8, 1)
    # Resume is exact: an uninterrupted two-iteration run gives the same metrics.
    straight = train(config.with_overrides(["fp.iterations=2"]), tmp_path / "straight")
    for a, b in zip(read_metrics(straight.path), rows, strict=True):
        for key in a:
            if not key.startswith("time/"):
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9, nan_ok=True), key
    assert main(["evaluate", str(tmp_path / "run"), "--agents", "2000", "--all-iterations"]) == 0
    assert main(["evaluate", str(tmp_path / "run"), "--agents", "2000"]) == 0
    assert load_run(tmp_path / "run").config.algorithm == "last_response"


def test_train_sets_torch_threads_like_the_cli(tmp_path):
    torch.set_num_threads(2)
    train(load_config("lq1d", overrides=[*TINY, "fp.iterations=1", "fp.eval_agents=0"]), tmp_path / "run")
    assert torch.get_num_threads() == 1


def test_the_flow_fokker_planck_penalty_runs_in_the_loop_and_reports_its_residual(tmp_path):
    config = load_config("lq1d", overrides=[*TINY, "fp.iterations=1", "fp.eval_agents=0", "flow.fp_penalty=0.01"])
    rows = read_metrics(train(config, tmp_path / "run").path)
    assert rows[-1]["flow/fp_residual"] >= 0 and rows[-1]["flow/nll"] == rows[-1]["flow/nll"]


@pytest.mark.parametrize(("algorithm", "nodes", "tabulated"), [("dedafp", 256, True), ("dedafp", 0, False),
                                                               ("algo2", 256, False)])
def test_best_responses_read_a_table_of_the_flow_on_bounded_domains(algorithm, nodes, tabulated):
    """fp.reward_density_nodes: the responder and br/* see a table of DEDA-FP's flow; Algo 2 keeps its kernel."""
    from dedafp.population.grid_cache import GridCachedPopulation

    config = load_config("beach_bar", overrides=[
        "best_response.algorithm=grid", "fp.iterations=1", "fp.eval_agents=0", "fp.br_agents=200",
        "fp.population_agents=500", "fp.initial_flow_steps=20", "average_policy.steps=20", "average_policy.hidden=16",
        "flow.steps=10", "flow.hidden=8", "flow.transforms=1", f"fp.reward_density_nodes={nodes}"],
        algorithm=algorithm)
    fp = make_algorithm(config)
    seen = []
    learn = fp.responder.learn
    fp.responder.learn = lambda population: seen.append(population) or learn(population)
    record = fp.iteration()
    assert isinstance(seen[0], GridCachedPopulation) is tabulated
    if tabulated:
        assert seen[0].cells == (256,) and type(seen[0].population).__name__ == "FlowPopulation"
    assert torch.isfinite(torch.tensor(record.metrics["br/return"]))


def test_lq_flow_refits_stop_early_by_default_and_report_their_steps(tmp_path):
    """LQ games default to flow.patience = 3: every fit reports flow/steps, at most its budget."""
    config = load_config("lq1d", overrides=[*TINY, "fp.iterations=2", "fp.eval_agents=0"])
    assert config.flow.patience == 3
    rows = read_metrics(train(config, tmp_path / "run").path)
    steps = [row["flow/steps"] for row in rows]
    assert steps[0] <= config.fp.initial_flow_steps and all(3 <= s <= config.flow.steps for s in steps[1:]), steps


def test_the_shortfall_of_the_exact_responder_is_zero():
    """With exact grid best responses the measurement solves again on the same agents and noise: 0 up to float
    rounding (a broken pairing would show the rollouts' spread, about 0.1 here)."""
    overrides = ["fp.population_agents=2000", "fp.initial_flow_steps=100", "flow.steps=100", "flow.hidden=16",
                 "flow.transforms=2", "flow.mean_samples=512", "fp.iterations=1", "best_response.algorithm=grid",
                 "fp.br_agents=1000"]
    loop = make_algorithm(load_config("beach_bar", overrides=overrides, algorithm="dedafp"))
    row = loop.iteration().metrics
    assert abs(row["br/shortfall"]) <= 1e-5 and row["br/shortfall_se"] <= 1e-5, row
    assert row["br/gain"] > 10 * row["br/gain_se"]       # the exact response does beat the initial average
    # the training time leaves out the measurement and the evaluation, and nothing else
    assert row["time/br_quality"] > 0 and row["time/evaluation"] > 0
    assert row["time/training"] == pytest.approx(row["time/iteration"] - row["time/br_quality"]
                                                 - row["time/evaluation"])
    assert row["time/training"] >= row["time/flow"] + row["time/best_response"]
