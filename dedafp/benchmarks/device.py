"""One iteration of each game on CUDA against the CPU, in the same run (``python -m dedafp.benchmarks.device``).

The GPU check of a lent accelerator machine (``scripts/gpu-check``): every tensor path takes a
``device``, so a DEDA-FP iteration runs unchanged on ``cuda``; this times iteration 0 (initial flow
fit and evaluation) and iteration 1 (best response, cloning, flow, evaluation) per device, with
the default deep-RL settings scaled down so the whole check stays within minutes. Writes
``results/bench/device.json`` only when asked (``--out``). Nothing in the package depends on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dedafp.algorithms import make_algorithm
from dedafp.common.threads import configure_threads
from dedafp.config import load_config

__all__ = ["time_iterations", "main"]

#: A scaled-down but complete iteration per game (real PPO or pathwise, cloning, flow, evaluation).
SETTINGS = {
    # lq2d's default responder is pathwise: 100 Adam steps of 1,024 agents instead of 600.
    "lq2d": ["best_response.pathwise_steps=100", "fp.eval_agents=20000"],
    "beach_bar": ["best_response.total_steps=20000", "fp.population_agents=10000"],
    "four_rooms": ["best_response.backward_states=1024", "fp.population_agents=10000", "average_policy.steps=1000"],
}


def time_iterations(game: str, device: str, overrides: list[str]) -> dict[str, float]:
    """Seconds of iterations 0 and 1 of DEDA-FP on ``game`` and ``device``, with every phase."""
    algorithm = make_algorithm(load_config(game, overrides=[*overrides, "fp.iterations=1"], device=device))
    start = time.perf_counter()
    first = algorithm.initialise()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    middle = time.perf_counter()
    second = algorithm.iteration()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    out = {"iteration_0": middle - start, "iteration_1": time.perf_counter() - middle}
    out.update({f"1/{key}": value for key, value in second.metrics.items() if key.startswith("time/")})
    out.update({"0/" + key: value for key, value in first.metrics.items() if key.startswith("time/")})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedafp.benchmarks.device", description=__doc__.splitlines()[0])
    parser.add_argument("--games", nargs="+", default=list(SETTINGS))
    parser.add_argument("--out", help="write device.json into this folder")
    args = parser.parse_args(argv)
    configure_threads()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("no CUDA device: timing the CPU only", file=sys.stderr)
    results = {"cuda": torch.cuda.get_device_name(0) if len(devices) > 1 else None,
               "torch": torch.__version__, "games": {}}
    for game in args.games:
        results["games"][game] = {}
        for device in devices:
            timings = time_iterations(game, device, SETTINGS.get(game, []))
            results["games"][game][device] = timings
            print(f"{game:12s} {device:5s} iteration 0 {timings['iteration_0']:7.1f} s   "
                  f"iteration 1 {timings['iteration_1']:7.1f} s", flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "device.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {Path(args.out) / 'device.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
