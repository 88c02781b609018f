"""The game x responder table reads what the runs measured, and says '–' for what they did not."""

import math

from dedafp.benchmarks.responder_runs import markdown, responder_rows


def _metrics(path, rows):
    path.mkdir(parents=True)
    keys = sorted({k for row in rows for k in row})
    lines = [",".join(keys)] + [",".join(str(row.get(k, "nan")) for k in keys) for row in rows]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")


def test_rows_take_the_exact_shortfall_first_the_final_exploitability_and_the_median_seconds(tmp_path):
    _metrics(tmp_path / "lq", [
        {"iteration": 0, "fp/exploitability": 12.0},
        *({"iteration": k, "fp/exploitability": 1.0 / k, "theory/br_shortfall": 0.01 * k, "br/shortfall": 9.0,
           "time/best_response": float(k)} for k in range(1, 11))])
    _metrics(tmp_path / "grid", [{"iteration": 0, "fp/grid_exploitability": 5.0},
                                 {"iteration": 1, "fp/grid_exploitability": 2.0, "time/best_response": 3.0}])
    runs = (("lq2d", "pathwise", "lq"), ("four_rooms", "exact grid", "grid"), ("beach_bar", "sac", "absent"))
    lq, grid, absent = responder_rows(runs, tmp_path)
    assert [lq[f"shortfall_{k}"] for k in (1, 5, 10)] == [0.01, 0.05, 0.1]
    assert lq["final_exploitability"] == 0.1 and lq["final_k"] == 10 and lq["seconds_per_br"] == 5.5
    assert grid["shortfall_1"] == 0.0 and math.isnan(grid["shortfall_5"])   # exact: 0 where it ran
    assert grid["final_exploitability"] == 2.0
    assert set(absent) == {"game", "responder", "run"}
    table = markdown([lq, grid, absent]).splitlines()
    assert table[2].startswith("| lq2d | pathwise | 0.01 | 0.05 | 0.1 | 0.1 (10) | 5.5 |")
    assert table[4].count("–") == 6


def test_a_mirror_descent_run_is_timed_by_its_mirror_step(tmp_path):
    _metrics(tmp_path / "omd", [{"iteration": 0, "fp/grid_exploitability": 5.0},
                                *({"iteration": k, "br/shortfall": 0.5 / k, "time/mirror_step": 10.0 + k}
                                  for k in range(1, 4))])
    (row,) = responder_rows((("beach_bar", "OMD greedy", "omd"),), tmp_path)
    assert row["shortfall_1"] == 0.5 and row["seconds_per_br"] == 12.0
