"""`dedafp sweep`: grid and seed parsing, clear errors, and real sweeps on the local and Ray backends."""

import csv

import pytest
import yaml
from tiny import FAST_LQ, set_args

from dedafp.cli import main
from dedafp.config import load_config
from dedafp.experiments.sweep import expand_grid, parse_grid, parse_seeds, plan_sweep, run_one, run_sweep

TINY = FAST_LQ


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("text, seeds", [("0..2", (0, 1, 2)), (" 4 .. 4 ", (4,)), ("3", (3,)),
                                         ("0,3,7", (0, 3, 7)), ("7, 3", (7, 3))])
def test_seeds_parse_ranges_inclusively_and_lists(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [("3..1", "A <= B"), ("-1..2", "range A..B"), ("0..", "range A..B"),
                                           ("a", "comma list"), ("1,1", "distinct"), ("", "comma list")])
def test_bad_seeds_fail_clearly(text, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(text)


def test_grid_is_the_cartesian_product_and_labels_name_only_what_varies():
    grid = parse_grid(["fp.iterations=2", "average_policy.components=1,2", "game.x_target=[1,0],[0, 1]"])
    assert grid == [("fp.iterations", ("2",)), ("average_policy.components", ("1", "2")),
                    ("game.x_target", ("[1,0]", "[0, 1]"))]
    configurations = expand_grid(grid)
    assert [c.label for c in configurations] == [
        "average_policy.components=1, game.x_target=[1,0]", "average_policy.components=1, game.x_target=[0, 1]",
        "average_policy.components=2, game.x_target=[1,0]", "average_policy.components=2, game.x_target=[0, 1]"]
    assert configurations[1].overrides == ("fp.iterations=2", "average_policy.components=1", "game.x_target=[0, 1]")
    assert configurations[1].folder == "average_policy.components=1+game.x_target=_0_1_"
    assert len({c.folder for c in configurations}) == 4
    assert [c.label for c in expand_grid(parse_grid(["fp.iterations=2"]))] == ["base"]
    assert [c.label for c in expand_grid([])] == ["base"]


@pytest.mark.parametrize("assignment, message", [
    ("fp.iterations", "key=v1,v2"), ("=1,2", "key=v1,v2"), ("fp.iterations=1,,2", "key=v1,v2"),
    ("fp.iterations=", "key=v1,v2"), ("seed=1,2", "use --seeds"), ("fp.iterations=2,2", "lists a value twice"),
])
def test_malformed_set_fails_clearly(assignment, message):
    with pytest.raises(ValueError, match=message):
        parse_grid([assignment])


def test_a_key_set_twice_fails_clearly():
    with pytest.raises(ValueError, match="more than once"):
        parse_grid(["fp.iterations=1", "fp.iterations=2"])


@pytest.mark.parametrize("env, assignment, message", [
    ("lq3d", "fp.iterations=1", "unknown game .lq3d."),
    ("lq1d", "fp.iteration=1,2", r"unknown key\(s\) \['iteration'\] in section 'fp'"),
    ("lq1d", "best_response.algorithm=riccati,dqn", "best_response.algorithm must be one of"),
    ("lq1d", "nonsense.x=1", "unknown config section"),
])
def test_bad_configurations_fail_before_any_run(tmp_path, env, assignment, message):
    with pytest.raises(ValueError, match=message):
        plan_sweep(env, "0..1", [assignment], tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_bad_backend_address_and_workers_fail_clearly(tmp_path):
    plan = plan_sweep("lq1d", "0", TINY, tmp_path)
    for kwargs, message in [({"backend": "dask"}, "backend must be one of local, ray"),
                            ({"backend": "ray", "address": "not an address"}, "address must be 'auto', HOST:PORT"),
                            ({"backend": "ray", "workers": 0}, "workers must be a positive integer"),
                            ({"address": "auto"}, "only used with --backend ray")]:
        with pytest.raises(ValueError, match=message):
            run_sweep(plan, **kwargs)


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["sweep", "lq1d", "--seeds", "3..1", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: seeds range must be A..B with A <= B, got '3..1'"
    assert main(["sweep", "lq1d", "--seeds", "0", "--set", "fp.iterations", "--out", str(tmp_path)]) == 2
    assert "--set expects key=v1,v2" in capsys.readouterr().err


def test_ray_and_local_sweeps_agree_skip_finished_runs_and_resume(tmp_path, capsys):
    ray = pytest.importorskip("ray")
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    # Seed 2's folder already holds a run of another configuration: that task alone must fail.
    clash = ray_out / "base" / "seed2"
    clash.mkdir(parents=True)
    other = load_config("lq1d", overrides=[*TINY, "flow.hidden=9"], seed=2)
    (clash / "config.yaml").write_text(yaml.safe_dump(other.to_dict()))

    sweep = ["sweep", "lq1d", "--iterations", "1", *set_args(*TINY)]
    assert main([*sweep, "--seeds", "0..2", "--backend", "ray", "--workers", "2", "--out", str(ray_out)]) == 1
    captured = capsys.readouterr()
    assert "base seed 2: failed (ValueError:" in captured.out and "different configuration" in captured.out
    assert "1 of 3 runs failed" in captured.err
    assert not ray.is_initialized()                        # the local instance was shut down
    assert main([*sweep, "--seeds", "0..1", "--out", str(local_out)]) == 0

    for out in (ray_out, local_out):
        for name in ("summary.csv", "summary.md", "runs.csv", "curves.png", "base/seed0/metrics.csv",
                     "base/seed1/checkpoints/iter_001.pt"):
            assert (out / name).exists(), out / name
        [summary] = _rows(out / "summary.csv")
        assert summary["configuration"] == "base" and summary["seeds"] == "2"
    ray_runs, local_runs = _rows(ray_out / "runs.csv"), _rows(local_out / "runs.csv")
    assert [(r["seed"], r["iterations"]) for r in ray_runs] == [("0", "1"), ("1", "1")]
    # Seeded training in one torch thread gave bit-identical numbers in the Ray workers and in this process
    # (measured); the tolerance only allows for a BLAS picking another kernel in another process.
    for ray_run, local_run in zip(ray_runs, local_runs, strict=True):
        assert float(ray_run["final_exploitability"]) == pytest.approx(float(local_run["final_exploitability"]),
                                                                       rel=1e-6)
    assert ray_runs[0]["final_exploitability"] != ray_runs[1]["final_exploitability"]    # seeds differ
    assert "| base | 2 |" in (ray_out / "summary.md").read_text()

    # Re-running skips finished runs; raising the iterations resumes them from their checkpoints.
    assert main([*sweep, "--seeds", "0..1", "--out", str(local_out)]) == 0
    assert capsys.readouterr().out.count(": skipped") == 2
    assert run_one("lq1d", None, (*TINY, "fp.iterations=2"), 1, str(local_out / "base" / "seed1")).status == "resumed"
