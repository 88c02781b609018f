"""DEDA-FP: Density-Enhanced Deep-Average Fictitious Play (Magnino et al., NeurIPS 2025).

Iteration k = 1..K, against the population model μ^{k-1} of the previous iteration (held fixed):

    1. best response   π^k  <- deep RL (SB3 PPO/SAC) or exact (Riccati, grid), against μ^{k-1};
                               with best_response.keep_best, a stored π^j that earns more replaces it
    2. buffer          B    <- B ∪ {(t, x, a)} of π^k played deterministically against μ^{k-1}
    3. average policy  π̄^k <- Gaussian MLP fitted by NLL to B (each iteration weighted 1/k)
    4. population      μ^k  <- normalizing flow fitted to a rollout of π̄^k (its own mean-field flow)

Before iteration 1 (k = 0) the flow is fitted to the initial average policy's population (a
near-zero policy). Every iteration reports exploitability and, where the game has a reference,
the error terms of the paper's Theorem 1.

The paper's baselines (``config.algorithm``) replace single steps and share everything else:
Algo 1 skips step 3 and simulates the exact episode mixture of all best responses; Algo 1 and
Algo 2 replace the flow of step 4 by a Gaussian kernel density estimate over the simulated agents.

Usage::

    from dedafp.config import load_config
    from dedafp.fictitious_play import FictitiousPlay
    fp = FictitiousPlay(load_config("lq2d", overrides=["fp.iterations=3"]))
    for _ in range(3):
        record = fp.iteration()          # record.metrics["fp/exploitability"], ...
    fp.average_policy.predict(t=0, x=torch.zeros(5, 2)); fp.population.log_prob(x, t=0)
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dedafp.agents.average_policy import AveragePolicy, FictitiousPlayBuffer
from dedafp.agents.best_response import BestResponder, DeterministicPolicy, SB3BestResponder
from dedafp.agents.grid_response import GridBestResponder
from dedafp.agents.mixture import MixturePolicy
from dedafp.agents.policy import Policy
from dedafp.agents.riccati import RiccatiBestResponder
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.games import Evaluator, make_evaluator, make_game
from dedafp.population import FlowPopulation, ParticlePopulation, PopulationModel, population_from_state_dict
from dedafp.rollout import Rollout, rollout


@dataclass(frozen=True)
class IterationRecord:
    """What one iteration measured: namespaced metrics (``fp/...``, ``br/...``, ``time/...``)."""

    iteration: int
    metrics: dict[str, float] = field(default_factory=dict)


class FictitiousPlay:
    """The DEDA-FP loop as an object: call :meth:`iteration` K times, or use :func:`train`.

    Attributes exposed read-only: :attr:`average_policy`, :attr:`population`, :attr:`history`.
    """

    def __init__(self, config: RunConfig, game: MeanFieldGame | None = None) -> None:
        self.config = config
        self.game = game if game is not None else make_game(config.env, config.game)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but torch.cuda.is_available() is False; use --device cpu")
        seed = config.seed
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.buffer = FictitiousPlayBuffer(config.average_policy.buffer_capacity,
                                           torch.Generator().manual_seed(seed + 1))
        self.uses_behaviour_cloning = config.algorithm != "algo1"
        self.uses_flow = config.algorithm == "dedafp"
        self._average_policy = AveragePolicy(self.game, config.average_policy, self.device, seed)
        self._population: PopulationModel = FlowPopulation(config.flow, self.game.state_dim, self.game.horizon,
                                                           self.device, seed)
        self.responder = self._make_responder()
        self.best_responses: list[DeterministicPolicy] = []
        self.history: list[IterationRecord] = []
        self._evaluator: Evaluator | None = None
        self._evaluator_built = False

    @property
    def evaluator(self) -> Evaluator | None:
        """The game's reference evaluator, built on first use (a grid reference takes seconds to build)."""
        if not self._evaluator_built:
            c = self.config
            self._evaluator = make_evaluator(self.game, c.fp.eval_agents, c.fp.iterations, self.device, c.seed)
            self._evaluator_built = True
        return self._evaluator

    def _make_responder(self) -> BestResponder:
        c = self.config.best_response
        if c.algorithm == "riccati":
            return RiccatiBestResponder(self.game, self.device)   # raises unless the game is LQ
        if c.algorithm == "grid":
            return GridBestResponder(self.game, self.device)      # raises unless the game has a grid
        return SB3BestResponder(self.game, c, self.device, self.config.seed)

    @property
    def average_policy(self) -> Policy:
        """The average policy π̄^k: behaviour-cloned, or (Algo 1) the mixture of all best responses."""
        if self.uses_behaviour_cloning or not self.best_responses:
            return self._average_policy
        return MixturePolicy(self.best_responses)

    @property
    def population(self) -> PopulationModel:
        """The population model μ^k: a normalizing flow, or (baselines) a kernel density estimate."""
        return self._population

    @property
    def completed(self) -> int:
        """Number of best responses computed so far (k)."""
        return len(self.best_responses)

    # ---- the algorithm ------------------------------------------------------------------------

    def _fit_population(self, steps: int | None) -> dict[str, float]:
        """Roll the average policy out (its own mean-field flow) and fit the population model to it."""
        start = time.perf_counter()
        # A consistent rollout replaces what the dynamics read with the simulated population's own
        # statistics; rewards are not needed here (a density reward would cost a flow query per step).
        field = self.game.bind(self._population)
        sim = rollout(self.game, self.average_policy, self.config.fp.population_agents, field, consistent=True,
                      generator=self.generator, device=self.device, rewards=False)
        rollout_time = time.perf_counter() - start
        start = time.perf_counter()
        if not self.uses_flow:
            self._population = ParticlePopulation(sim.states, self.config.fp.kde_bandwidth, device=self.device)
            return {"time/rollout": rollout_time, "time/flow": time.perf_counter() - start}
        times, states = sim.population_samples()
        nll = self._population.fit(times, states, steps=steps, generator=self.generator)
        return {"flow/nll": nll, "time/rollout": rollout_time, "time/flow": time.perf_counter() - start}

    def initialise(self) -> IterationRecord:
        """Fit the flow to the initial average policy's population (iteration 0); idempotent."""
        if not self.history:
            metrics = self._fit_population(self.config.fp.initial_flow_steps)
            self.history.append(self._record(0, metrics, None))
        return self.history[0]

    def iteration(self) -> IterationRecord:
        """Run one fictitious-play iteration (the first call also fits the initial population).

        Returns the record of the iteration just completed (``record.iteration`` = k).
        """
        self.initialise()
        k = self.completed + 1
        metrics: dict[str, float] = {}

        # 1. best response against the frozen population model of iteration k-1
        start = time.perf_counter()
        frozen = self._population
        br_field = self.game.bind(frozen)
        best_response = self.responder.learn(frozen)
        self.best_responses.append(best_response)
        metrics["time/best_response"] = time.perf_counter() - start

        # 2. its played (deterministic) samples join the buffer
        start = time.perf_counter()
        draws = self.generator.get_state()
        played = rollout(self.game, best_response, self.config.fp.br_agents, br_field, deterministic=True,
                         generator=self.generator, device=self.device)
        if self.config.best_response.keep_best and len(self.best_responses) > 1:
            played = self._keep_best(played, draws, br_field, metrics)
        metrics["br/return"] = float(played.returns.mean())
        if self.uses_behaviour_cloning:
            self.buffer.add(*played.samples())
            # 3. behavioural cloning of the average policy on every best response so far
            metrics["bc/nll"] = self._average_policy.fit(self.buffer)
        metrics["time/bc"] = time.perf_counter() - start

        # 4. the average policy's population, learned by the flow (warm start) or a kernel estimate
        metrics.update(self._fit_population(None))
        return self._record(k, metrics, br_field)

    def _keep_best(self, played: Rollout, draws: Tensor, br_field: Any, metrics: dict[str, float]) -> Rollout:
        """Replace the new best response by a stored one that earns more against ``br_field``.

        Every candidate is rolled out on the same agents and noise as ``played`` (generator state
        ``draws``), so the comparison is paired. Records ``br/kept``: the index of the stored response
        played instead, or -1 for the new one.
        """
        metrics["br/new_return"] = float(played.returns.mean())
        best, best_index = played, -1
        seen: set[int] = set()
        for index, candidate in enumerate(self.best_responses[:-1]):
            if id(candidate) in seen:       # a kept response is stored twice: roll it out once
                continue
            seen.add(id(candidate))
            generator = torch.Generator(device=self.device)
            generator.set_state(draws)
            replay = rollout(self.game, candidate, self.config.fp.br_agents, br_field, deterministic=True,
                             generator=generator, device=self.device)
            if float(replay.returns.mean()) > float(best.returns.mean()):
                best, best_index = replay, index
        if best_index >= 0:
            self.best_responses[-1] = self.best_responses[best_index]
        metrics["br/kept"] = float(best_index)
        return best

    def _record(self, k: int, metrics: dict[str, float], br_field: torch.Tensor | None) -> IterationRecord:
        start = time.perf_counter()
        every = self.config.fp.evaluate_every
        if self.evaluator is not None and (k % every == 0 or k == self.config.fp.iterations):
            metrics.update(self.evaluator.evaluate(k, self.average_policy, self._population,
                                                   self.best_responses, br_field))
        metrics["time/evaluation"] = time.perf_counter() - start
        metrics["time/iteration"] = sum(v for key, v in metrics.items()
                                        if key.startswith("time/") and key != "time/iteration")
        bad = [key for key, value in metrics.items() if not np.isfinite(value)]
        if bad:
            raise FloatingPointError(f"iteration {k} produced non-finite metrics: {bad}")
        record = IterationRecord(k, metrics)
        if k > 0:
            self.history.append(record)
        return record

    # ---- persistence --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this object is (RNG states included)."""
        responder_model = None
        if isinstance(self.responder, SB3BestResponder) and self.responder.model is not None:
            responder_model = {"policy": self.responder.model.policy.state_dict(),
                               "optimizer": self.responder.model.policy.optimizer.state_dict(),
                               "calls": self.responder.calls}
        return {
            "config": self.config.to_dict(),
            "history": [(r.iteration, r.metrics) for r in self.history],
            "buffer": self.buffer.state_dict(),
            "average_policy": {"net": self._average_policy.net.state_dict(),
                               "optimizer": self._average_policy.optimizer.state_dict()},
            "population": self._population.state_dict(),
            "best_responses": self.best_responses,
            "responder": responder_model,
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into an object built with the same config."""
        self.history = [IterationRecord(k, m) for k, m in state["history"]]
        self.buffer.load_state_dict(state["buffer"])
        self._average_policy.net.load_state_dict(state["average_policy"]["net"])
        self._average_policy.optimizer.load_state_dict(state["average_policy"]["optimizer"])
        self._population = population_from_state_dict(state["population"], str(self.device))
        self.best_responses = state["best_responses"]
        if state["responder"] is not None and isinstance(self.responder, SB3BestResponder):
            self.responder.model = self.responder._build(self.responder._env(self._population, 0))
            self.responder.model.policy.load_state_dict(state["responder"]["policy"])
            self.responder.model.policy.optimizer.load_state_dict(state["responder"]["optimizer"])
            self.responder.calls = state["responder"]["calls"]
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
