"""The scaling benchmark: the power-law fit, a tiny run end to end, and its config's validation."""

import csv
import json

import numpy as np
import pytest

from dedafp.benchmarks.scaling import PHASES, ScalingBenchConfig, bench_scaling, fit_power_law, lq_env
from dedafp.cli import main
from dedafp.envs.registry import game_spec

TINY = ScalingBenchConfig(iterations=2, agents=(32, 64), dims=(1, 2), point_iterations=1, base_agents=32,
                          eval_agents=0, bc_steps=2, flow_steps=2, initial_flow_steps=2)


def test_the_fit_recovers_a_known_power_law_exactly():
    x = np.array([1.0, 2.0, 5.0, 10.0, 50.0])
    fit = fit_power_law(x, 0.37 * x ** 1.6)
    assert fit["p"] == pytest.approx(1.6, abs=1e-12) and fit["c"] == pytest.approx(0.37, rel=1e-12)
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 5
    assert fit_power_law([1, 2, 4], [3.0, 3.0, 3.0])["p"] == pytest.approx(0.0, abs=1e-12)
    # A phase that did not run (0 s) is left out; one point fits nothing.
    assert fit_power_law([1, 2, 4], [0.0, 2.0, 8.0])["p"] == pytest.approx(2.0)
    assert fit_power_law([1, 2], [0.0, 1.0]) == {"p": None, "c": None, "r2": None, "points": 1}


def test_a_tiny_run_writes_every_phase_with_positive_seconds(tmp_path):
    lines = []
    result = bench_scaling(TINY, tmp_path, print_fn=lines.append)
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert (tmp_path / "scaling.png").stat().st_size > 0
    assert {"machine", "config", "budgets", "sweeps", "exponents", "dominant", "verdict"} <= set(saved)
    assert saved["config"]["iterations"] == 2 and saved["machine"]["threads"] == 1
    assert [r["x"] for r in saved["sweeps"]["k"]] == [1, 2]
    assert [r["x"] for r in saved["sweeps"]["agents"]] == [32, 64]
    assert [r["x"] for r in saved["sweeps"]["dims"]] == [1, 2]
    for rows in saved["sweeps"].values():
        for row in rows:
            assert set(row["seconds"]) == set(PHASES)
            assert all(v > 0 for v in row["seconds"].values()), row
            assert row["total"] >= sum(row["seconds"].values()) * (1 - 1e-9)
    # The flow's mean query of the final population, timed after each run's last iteration only.
    assert "bind_seconds" not in saved["sweeps"]["k"][0] and saved["sweeps"]["k"][-1]["bind_seconds"] > 0
    assert all(r["bind_seconds"] > 0 for r in saved["sweeps"]["agents"])
    # The buffer grows by one iteration of best-response samples per k.
    k_rows = saved["sweeps"]["k"]
    assert k_rows[1]["buffer_samples"] == 2 * k_rows[0]["buffer_samples"] > 0
    for axis in ("k", "agents", "dims"):
        assert set(saved["exponents"][axis]) == {*PHASES, "iteration"}
        assert all(fit["p"] is not None for fit in saved["exponents"][axis].values())
    # k = 10 and 50 lie beyond K = 2: extrapolated, and the verdict says so.
    assert [(d["k"], d["extrapolated"]) for d in saved["dominant"]["k"]] == [(1, False), (10, True), (50, True)]
    assert "extrapolated" in saved["verdict"][1] and "with k" in saved["verdict"][2]
    assert result["verdict"] == saved["verdict"]
    with (tmp_path / "scaling.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["axis"] for r in rows] == ["k", "k", "agents", "agents", "dims", "dims"]
    assert all(float(r[f"{p}_s"]) > 0 for r in rows for p in PHASES)
    assert any("total" in line for line in lines)


def test_the_d_dimensional_lq_game_is_registered_with_the_exact_responder(monkeypatch):
    # A copy of the registry for this test: other tests rely on lq3d being unknown.
    from dedafp.envs import registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert lq_env(1) == "lq1d" and lq_env(2) == "lq2d"
    name = lq_env(3)
    assert name == "lq3d" and lq_env(3) == name       # registering again is a no-op
    spec = game_spec(name)
    assert spec.exact_responder == "riccati" and spec.make().state_dim == 3


@pytest.mark.parametrize(("field", "value", "message"), [
    ("iterations", 1, "scaling.iterations must be an integer >= 2, got 1"),
    ("bc_steps", 0, "scaling.bc_steps must be an integer >= 1, got 0"),
    ("agents", (2_000,), "scaling.agents must be at least two increasing integers >= 16"),
    ("dims", (5, 2), "scaling.dims must be at least two increasing integers >= 1"),
    ("best_response", "ppo", "scaling.best_response must be one of ('exact', 'default'), got 'ppo'"),
    ("eval_agents", 1, "scaling.eval_agents must be 0"),
    ("base_agents", 2.5, "scaling.base_agents must be an integer"),
])
def test_a_bad_config_value_is_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        ScalingBenchConfig(**{field: value})


def test_the_command_line_refuses_a_bad_value_in_one_line(capsys):
    assert main(["bench", "scaling", "--iterations", "0", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: scaling.iterations must be an integer >= 2, got 0"
    assert main(["bench", "scaling", "--best-response", "ppo", "--out", "unused"]) == 2
    assert "scaling.best_response must be one of" in capsys.readouterr().err
