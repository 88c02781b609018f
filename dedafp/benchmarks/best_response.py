"""Best-response quality against the iteration-0 population: shortfall to the exact responder, and seconds.

For each game and responder, one best response is computed against the same frozen population (that
of the zero policy, a = 0: what fictitious play's first best response answers) and scored against the
exact best response to that population:

    shortfall = V(exact best response) - V(learned best response)        (reward units, >= 0 up to noise)

* lq1d, lq2d: the population is the zero policy's exact Gaussian flow; the exact responder is the
  backward Riccati recursion (:mod:`dedafp.reference.lq`), and the shortfall its low-variance
  telescoping estimate (``lq.monte_carlo_exploitability`` against the fixed mean flow).
* beach_bar, four_rooms: the population is a Gaussian kernel estimate of 4,000 zero-policy agents,
  tabulated once on a grid (:class:`~dedafp.population.grid_cache.GridCachedPopulation`) so that every
  responder reads the same density cheaply; the exact responder is backward induction on the game's
  reference grid (``GridBestResponder``), played in the continuous game. The shortfall is a paired
  Monte Carlo difference of returns (the same agents and noise for both policies) with its standard
  error; a learned policy can beat the grid's discretised optimum (a negative shortfall).

``seconds`` is the wall-clock of one ``learn`` call. For the pathwise responder the table also gives the
share of rejected (wall or border) moves along its own rollout and the ratio of its pathwise derivative
of the return along a constant action shift to a central finite difference with common noise, at the
initial policy: 1 where the gradient is exact, away from 1 where the dynamics' kinks bias it
(four-rooms walls).

Usage::

    python -m dedafp.benchmarks.best_response --games lq1d,lq2d --responders ppo,sac,pathwise
    python -m dedafp.benchmarks.best_response --games four_rooms --responders pathwise \
        --set pathwise.exploring_starts=0.5 --set pathwise.start_times=0.5
    # results/best_response/table.csv and table.md: a row per (game, responder and overrides),
    # replaced when measured again
"""

from __future__ import annotations

import argparse
import ast
import csv
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dedafp.agents.best_response import BestResponseConfig
from dedafp.agents.pathwise import PathwiseBestResponder, PathwisePolicy, policy_network
from dedafp.agents.policy import DeterministicPolicy, ZeroPolicy
from dedafp.algorithms.responders import make_responder
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel
from dedafp.rollout import rollout

logger = logging.getLogger(__name__)

GAMES = ("lq1d", "lq2d", "beach_bar", "four_rooms")
RESPONDERS = ("ppo", "sac", "pathwise", "backward")
COLUMNS = ("game", "responder", "budget", "exact_value", "value", "shortfall", "std_error", "seconds",
           "rejected_moves", "gradient_ratio")

#: SB3 settings of each game's PPO default (``GameSpec.defaults`` of the density games; LQ uses
#: ``BestResponseConfig()``), without ``keep_best`` (one call here).
SAC_STEPS = 100_000


def make_game(name: str) -> MeanFieldGame:
    """The game ``name`` with its preset parameters."""
    if name in ("lq1d", "lq2d"):
        from dedafp.envs.lq import LQGame, lq_preset
        return LQGame(lq_preset(name), name=name)
    if name == "beach_bar":
        from dedafp.envs.beach_bar import BeachBarGame
        return BeachBarGame()
    if name == "four_rooms":
        from dedafp.envs.four_rooms import FourRoomsGame
        return FourRoomsGame()
    raise ValueError(f"unknown game {name!r}; allowed: {GAMES}")


def iteration_zero_population(game: MeanFieldGame, seed: int = 0) -> PopulationModel:
    """The zero policy's population: exact Gaussian for LQ, a grid-cached kernel estimate otherwise."""
    if hasattr(game, "uncontrolled_population"):
        return game.uncontrolled_population()
    from dedafp.population.grid_cache import GridCachedPopulation
    from dedafp.population.particles import ParticlePopulation
    sim = rollout(game, ZeroPolicy(game), 4000, None, generator=torch.Generator().manual_seed(seed), rewards=False)
    cells = 200 if game.state_dim == 1 else 88
    return GridCachedPopulation(ParticlePopulation(sim.states), [0.0] * game.state_dim, [1.0] * game.state_dim,
                                cells)


def responder_config(game: MeanFieldGame, responder: str,
                     overrides: dict[str, Any] | None = None) -> BestResponseConfig:
    """The benchmarked settings: each game's PPO default, SAC with :data:`SAC_STEPS`, pathwise defaults."""
    fields = {f.name for f in dataclasses.fields(BestResponseConfig)}
    base: dict[str, Any] = {}
    if game.name in ("beach_bar", "four_rooms"):
        from dedafp.envs.registry import game_spec
        base = {k: v for k, v in game_spec(game.name).defaults.get("best_response", {}).items()
                if k in fields and k not in ("algorithm", "keep_best")}
    if responder == "sac":
        base = {k: v for k, v in base.items() if k in ("num_envs", "hidden")}
        base.update(total_steps=SAC_STEPS)
    if responder == "pathwise":
        base = {}
    if responder == "backward":
        base = {k: v for k, v in base.items() if k.startswith("backward_") or k in ("hidden", "exploring_starts")}
    return BestResponseConfig(**{**base, "algorithm": responder, **(overrides or {})})


def budget_of(config: BestResponseConfig) -> str:
    """The training budget of one call, in words."""
    if config.algorithm == "pathwise":
        return f"{config.pathwise_steps} Adam steps x {config.pathwise_agents} agents"
    if config.algorithm == "backward":
        return (f"{config.backward_states} states ({config.exploring_starts:.0%} exploring) x "
                f"{config.backward_actions} actions x {config.backward_refine + 1} rounds per t")
    return f"{config.total_steps:,} env steps"


def returns_of(game: MeanFieldGame, policy: DeterministicPolicy, field: Any, n: int, seed: int) -> Tensor:
    """Per-agent returns ``[n]`` of ``policy`` (deterministic) on the agents and noise of ``seed``."""
    return rollout(game, policy, n, field, deterministic=True, generator=torch.Generator().manual_seed(seed)).returns


def lq_shortfall(game: MeanFieldGame, population: PopulationModel,
                 policy: DeterministicPolicy) -> tuple[float, float, float]:
    """``(exact value, shortfall, std error)`` on an LQ game by the telescoping estimator."""
    from dedafp.reference import lq
    mean_flow = game.bind(population).double().cpu().numpy()
    evaluation = lq.monte_carlo_exploitability(game.config, policy.distribution, 100_000, mean_flow=mean_flow)
    result = evaluation.exploitability
    return result.best_response_value, result.exploitability, result.std_error


class _Shifted:
    """``policy`` with a constant action shift ``delta · direction`` (clipped), for the gradient check."""

    def __init__(self, policy: PathwisePolicy, delta: Tensor, direction: Tensor) -> None:
        self.policy, self.delta, self.direction = policy, delta, direction

    def action(self, t: int, x: Tensor) -> Tensor:
        bound = self.policy.action_bound
        return (self.policy.action(t, x) + self.delta * self.direction).clamp(-bound, bound)


def gradient_ratio(responder: PathwiseBestResponder, population: PopulationModel, n: int = 20_000,
                   h: float = 0.05, seed: int = 7) -> float:
    """Pathwise dJ/dδ over its central finite difference (step ``h``, common noise), at the initial policy.

    δ shifts every action along the diagonal. Measured at a fresh network (a ≈ 0), where the
    derivative is far from 0: at a trained best response both are ≈ 0 and their ratio is noise.
    """
    game, c = responder.game, responder.config
    policy = PathwisePolicy(policy_network(game, c.hidden, c.layers, seed).to(responder.device), game)
    field = game.bind(population)
    direction = torch.ones(game.action_dim) / game.action_dim ** 0.5
    delta = torch.zeros((), requires_grad=True)
    pathwise = torch.autograd.grad(responder.simulate(_Shifted(policy, delta, direction), field, population, n,
                                                      torch.Generator().manual_seed(seed)).mean(), delta)[0]
    with torch.no_grad():
        up, down = (responder.simulate(_Shifted(policy, torch.tensor(s * h), direction), field, population, n,
                                       torch.Generator().manual_seed(seed)).mean() for s in (1.0, -1.0))
    return float(pathwise / ((up - down) / (2 * h)))


def rejected_share(game: MeanFieldGame, policy: DeterministicPolicy, field: Any, n: int = 5000, seed: int = 3) -> float:
    """Share of steps whose move was rejected (the state did not change) along a rollout of ``policy``."""
    states = rollout(game, policy, n, field, deterministic=True, generator=torch.Generator().manual_seed(seed),
                     rewards=False).states
    return float((states[1:] == states[:-1]).all(-1).double().mean())


def benchmark(game_name: str, responders: Sequence[str], seed: int = 0, eval_agents: int = 20_000,
              overrides: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per responder: shortfall to the exact best response and seconds of one call."""
    game = make_game(game_name)
    population = iteration_zero_population(game, seed)
    field = game.bind(population)
    is_lq = game_name.startswith("lq")
    exact_returns = None
    if not is_lq:
        from dedafp.reference.grid_responder import GridBestResponder
        exact_responder = GridBestResponder(game)
        _ = exact_responder.grid                       # build the grid outside the timing
        start = time.perf_counter()
        exact = exact_responder.learn(population)
        exact_seconds = time.perf_counter() - start
        exact_returns = returns_of(game, exact, field, eval_agents, seed + 100)
    rows = []
    for name in responders:
        config = responder_config(game, name, (overrides or {}).get(name))
        responder = make_responder(game, config, seed=seed)
        start = time.perf_counter()
        policy = responder.learn(population)
        seconds = time.perf_counter() - start
        changes = (overrides or {}).get(name, {})
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in changes.items())})" if changes else "")
        row: dict[str, Any] = {"game": game_name, "responder": label, "budget": budget_of(config), "seconds": seconds}
        if is_lq:
            row["exact_value"], row["shortfall"], row["std_error"] = lq_shortfall(game, population, policy)
            row["value"] = row["exact_value"] - row["shortfall"]
        else:
            learned = returns_of(game, policy, field, eval_agents, seed + 100)
            gap = (exact_returns - learned).double()
            row.update(exact_value=float(exact_returns.mean()), value=float(learned.mean()),
                       shortfall=float(gap.mean()), std_error=float(gap.std() / len(gap) ** 0.5))
        if name == "pathwise":
            row["gradient_ratio"] = gradient_ratio(responder, population)
            row["rejected_moves"] = rejected_share(game, policy, field) if game_name == "four_rooms" else 0.0
        logger.info("%s", row)
        rows.append(row)
    if not is_lq:
        rows.append({"game": game_name, "responder": "exact (grid)", "budget": "backward induction",
                     "exact_value": float(exact_returns.mean()), "value": float(exact_returns.mean()),
                     "shortfall": 0.0, "std_error": 0.0, "seconds": exact_seconds,
                     "rejected_moves": rejected_share(game, exact, field) if game_name == "four_rooms" else ""})
    return rows


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    """Merge ``rows`` into ``out/table.csv`` (replacing rows of the same game and responder) and write ``table.md``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "table.csv"
    kept: list[dict[str, Any]] = []
    if path.exists():
        with path.open() as handle:
            new_keys = {(r["game"], r["responder"]) for r in rows}
            kept = [r for r in csv.DictReader(handle) if (r["game"], r["responder"]) not in new_keys]
    merged = kept + [{k: r.get(k, "") for k in COLUMNS} for r in rows]
    merged.sort(key=lambda r: (GAMES.index(r["game"]) if r["game"] in GAMES else 99, r["responder"]))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(merged)

    def number(value: Any, digits: int) -> str:
        return "" if value in ("", None) else f"{float(value):.{digits}f}"

    lines = ["| game | responder | budget | exact value | learned value | shortfall ± s.e. | s per BR | "
             "rejected moves | ∂J pathwise / FD |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in merged:
        lines.append(f"| {r['game']} | {r['responder']} | {r['budget']} | {number(r['exact_value'], 3)} | "
                     f"{number(r['value'], 3)} | {number(r['shortfall'], 4)} ± {number(r['std_error'], 4)} | "
                     f"{number(r['seconds'], 1)} | {number(r['rejected_moves'], 3)} | "
                     f"{number(r['gradient_ratio'], 2)} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--games", default=",".join(GAMES), help=f"comma-separated, from {GAMES}")
    parser.add_argument("--responders", default=",".join(RESPONDERS), help=f"comma-separated, from {RESPONDERS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/best_response"))
    parser.add_argument("--set", action="append", default=[], metavar="RESPONDER.FIELD=VALUE",
                        help="override a BestResponseConfig field of one responder (repeatable), e.g. "
                             "pathwise.exploring_starts=0.5; the row is labelled with the overrides")
    args = parser.parse_args(argv)
    overrides: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, sep, text = item.partition("=")
        responder, dot, field = key.partition(".")
        if not sep or not dot or responder not in RESPONDERS:
            raise SystemExit(f"--set expects RESPONDER.FIELD=VALUE with RESPONDER in {RESPONDERS}, got {item!r}")
        overrides.setdefault(responder, {})[field] = ast.literal_eval(text)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for game in args.games.split(","):
        rows = benchmark(game, args.responders.split(","), args.seed, overrides=overrides)
        write_table(rows, args.out)


if __name__ == "__main__":
    main()
