"""Budgets and argument helpers shared by the end-to-end tests."""

#: An LQ iteration in ~1-2 s: the exact (Riccati) best response, tiny behavioural cloning and flow.
FAST_LQ = ["best_response.algorithm=riccati", "fp.br_agents=200", "fp.population_agents=2000",
           "fp.eval_agents=2000", "fp.initial_flow_steps=40", "average_policy.steps=40", "average_policy.hidden=16",
           "flow.steps=20", "flow.hidden=8", "flow.transforms=1", "flow.mean_samples=512"]


def set_args(*items: str) -> list[str]:
    """``--set`` flags for the command line: ``set_args("a=1", "b=2")`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    out = []
    for item in items:
        out += ["--set", item]
    return out


def resumed_and_straight(config, tmp_path, iterations: int) -> list[dict[str, float]]:
    """Train ``config`` (``fp.iterations`` of it), resume it to ``iterations``, train ``iterations`` straight, and
    check both metrics files equal but for timings; returns the resumed run's rows."""
    import pytest

    from dedafp import train
    from dedafp.run import read_metrics

    train(config, tmp_path / "run")
    longer = config.with_overrides([f"fp.iterations={iterations}"])
    resumed = read_metrics(train(longer, tmp_path / "run", resume=True).path)
    straight = read_metrics(train(longer, tmp_path / "straight").path)
    assert len(straight) == len(resumed) == iterations + 1
    for a, b in zip(straight, resumed, strict=True):
        for key in a:
            if not key.startswith("time/"):
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9, nan_ok=True), key
    return resumed
