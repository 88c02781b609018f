"""The refresh benchmark: the equal-error verdict, a tiny run end to end, and its bad inputs."""

import json

import pytest
from tiny import FAST_LQ

from dedafp import load_config, train
from dedafp.benchmarks.refresh import RefreshBenchConfig, bench_refresh, equal_error_verdict
from dedafp.cli import main


def _kde(agents, gap, se, seconds):
    return {"agents": agents, "nll_minus_flow": gap, "nll_minus_flow_se": se, "refresh_seconds": seconds}


def test_the_verdict_takes_the_cheapest_budget_within_two_standard_errors():
    flow = {"agents": 100, "refresh_seconds": 10.0, "nll": -1.0}
    # 2 se above the flow counts as equal; the cheaper of two matching budgets is taken.
    lines = equal_error_verdict(flow, [_kde(10, 0.5, 0.01, 1.0), _kde(100, 0.02, 0.01, 4.0),
                                       _kde(1000, -0.1, 0.01, 20.0)])
    assert "100 agents" in lines[1] and "kernel estimate's refresh is faster" in lines[1] and "0.40x" in lines[1]
    lines = equal_error_verdict(flow, [_kde(10, 0.5, 0.01, 1.0), _kde(1000, 0.0, 0.01, 20.0)])
    assert "1,000 agents" in lines[1] and "the flow's refresh is faster (2.00x" in lines[1]
    lines = equal_error_verdict(flow, [_kde(10, 0.5, 0.01, 1.0), _kde(1000, 0.03, 0.01, 20.0)])
    assert lines[1].startswith("no kernel budget up to 1,000 agents") and "20.00 s" in lines[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("refresh") / "run"
    train(load_config("lq1d", overrides=[*FAST_LQ, "fp.iterations=2"]), path)
    return path


def test_a_tiny_refresh_pairs_every_budget_with_the_flow(tiny_run, tmp_path):
    config = RefreshBenchConfig(run=tiny_run, kde_agents=(50, 400), heldout_agents=64, repeats=2)
    result = bench_refresh(config, tmp_path, print_fn=lambda line: None)
    saved = json.loads((tmp_path / "refresh.json").read_text())
    assert saved["verdict"] == result["verdict"] and saved["config"]["iteration"] == 2
    assert saved["config"]["flow_agents"] == 2000                 # the run's fp.population_agents
    flow, *kde = saved["rows"]
    assert flow["estimator"] == "flow" and [r["agents"] for r in kde] == [50, 400]
    for row in saved["rows"]:
        assert len(row["repeats"]) == 2 and row["refresh_seconds"] >= row["rollout_seconds"] > 0
        assert row["build_seconds"] > 0 and row["query_seconds"] > 0
    # The paired gap is the difference of the two NLLs; more particles fit the marginal better.
    for row in kde:
        assert row["nll_minus_flow"] == pytest.approx(row["nll"] - flow["nll"], abs=1e-9)
        assert row["nll_minus_flow_se"] > 0
    assert kde[1]["nll"] < kde[0]["nll"]
    assert "| kde | 400 |" in (tmp_path / "refresh.md").read_text()


def test_bad_inputs_get_one_line(tiny_run, tmp_path, capsys):
    assert main(["bench", "refresh", "--run", str(tiny_run), "--iteration", "7", "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "iter_006.pt" in err[0], err
    with pytest.raises(ValueError, match="kde_agents"):
        RefreshBenchConfig(kde_agents=(1,))
    with pytest.raises(ValueError, match="iteration"):
        RefreshBenchConfig(iteration=0)
