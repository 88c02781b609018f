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
