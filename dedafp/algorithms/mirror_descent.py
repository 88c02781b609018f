"""Online mirror descent with a learned population: ``--algorithm omd``.

Fictitious play averages best responses; online mirror descent (Pérolat et al., *Scaling up mean
field games with online mirror descent*, AAMAS 2022) instead moves the policy itself a step towards
higher Q against its own population, ``π^k ∝ exp(y^k)``, ``y^k = y^{k-1} + η Q^{π^{k-1}, μ^{k-1}}``. With
continuous states the logits are a network over (t, x) with one output per lattice action (the deep
version of Laurière et al., ICML 2022, for discrete actions; here the lattice of the continuous action
box), and the Q-function comes from neural backward policy evaluation through the simulated game
(:mod:`dedafp.agents.mirror_descent`). Iteration k:

    1. mirror step   y^k  <- y^{k-1} + η Q^{π^{k-1}}, evaluated against the frozen μ^{k-1} (no best response)
    2. population    μ^k  <- DEDA-FP's flow, fitted to a rollout of π^k (its own mean-field flow)

With ``fp.measure_best_response`` (the default) the mirror step also fits the greedy policy of its
Q-function (what η -> ∞ would play: the loop's implicit best response) and plays it against μ^{k-1}, on
the agents and noise of one rollout, beside π^{k-1} and the game's exact responder: ``br/gain`` (greedy
minus π^{k-1}: oracle-free, a lower bound of π^{k-1}'s exploitability against μ^{k-1} up to the greedy
policy's own shortfall) and ``br/shortfall`` (exact minus greedy: how far the learned Q-function is from
knowing the best response), as DEDA-FP reports them for its best responses. Its draws come from their own
generator, so measuring changes nothing else in the run.

There is no buffer and no behavioural cloning: the policy played is the one the logits define. Every
iteration also reports the same loop with exact parts where the game has a grid reference
(``reference/exact_omd_exploitability``: :class:`~dedafp.reference.grid_solvers.GridMirrorDescent` with
the same η on the grid's velocities, which are the lattice by default).

η is chosen per game from the exact-parts sweep (``results/omd/``): :data:`MEASURED_LEARNING_RATES`.

Usage::

    from dedafp import load_config, make_algorithm
    loop = make_algorithm(load_config("beach_bar", algorithm="omd"))
    for _ in range(10):
        record = loop.iteration()     # record.metrics["fp/grid_exploitability"], ["omd/greedy_gap"]
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import torch

from dedafp.agents.mirror_descent import MirrorDescentLearner
from dedafp.agents.policy import Policy
from dedafp.algorithms.base import Algorithm, IterationRecord, register_algorithm
from dedafp.algorithms.fictitious_play import FictitiousPlay, _population_flow
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.evaluation.grid import GridEvaluator
from dedafp.population import PopulationModel, population_from_state_dict
from dedafp.population.grid_cache import reward_table
from dedafp.rollout import rollout

__all__ = ["MirrorDescent", "MEASURED_LEARNING_RATES", "FALLBACK_LEARNING_RATE", "mirror_learning_rate"]

#: ``omd.learning_rate`` chosen per game by the deep runs of ``results/omd/`` (used when it is None). The beach
#: bar's exact parts gain from larger steps (0.004 at k = 10 with η = 300), the learned ones do not: with η = 10 /
#: 20 / 30 / 100 the deep loop was at 0.121 / 0.075 / 0.713 / 5.7 at k = 10 (seed 0); a large step writes each
#: iteration's Q error into the logits at full weight.
MEASURED_LEARNING_RATES: dict[str, float] = {"beach_bar": 20.0, "four_rooms": 0.15}
#: ``omd.learning_rate`` for a game without a measured choice (with a warning).
FALLBACK_LEARNING_RATE = 1.0


def mirror_learning_rate(config: RunConfig, warn: bool = True) -> float:
    """The resolved η of ``config``: ``omd.learning_rate``, else the measured choice of ``config.env``, else
    :data:`FALLBACK_LEARNING_RATE` (with a warning unless ``warn`` is False)."""
    if config.omd.learning_rate is not None:
        return float(config.omd.learning_rate)
    if config.env in MEASURED_LEARNING_RATES:
        return MEASURED_LEARNING_RATES[config.env]
    if warn:
        warnings.warn(f"omd.learning_rate is None and none was measured for {config.env!r}: using "
                      f"{FALLBACK_LEARNING_RATE}; sweep it (dedafp sweep {config.env} --seeds 0 --set algorithm=omd "
                      f"--set omd.learning_rate=0.1,1,10) and set it", stacklevel=2)
    return FALLBACK_LEARNING_RATE


@register_algorithm("omd")
class MirrorDescent(FictitiousPlay):
    """Online mirror descent: a lattice softmax policy whose logits accumulate ``η Q``; DEDA-FP's flow.

    It reuses DEDA-FP's population step (rollout and flow refit) and evaluation, and replaces the best
    response and the cloned average by the mirror step, so it builds neither a best responder nor a buffer.
    """

    progress_columns = ("br/gain", "br/shortfall", "omd/entropy", "reference/exact_omd_exploitability", "flow/nll",
                        "time/iteration")

    @classmethod
    def describe(cls, config: RunConfig) -> str:
        eta = mirror_learning_rate(config, warn=False)    # __init__ warns
        return f"mirror step η = {eta:g} on an action lattice, flow {config.flow.backend}"

    def __init__(self, config: RunConfig, game: MeanFieldGame | None = None) -> None:
        Algorithm.__init__(self, config, game)   # not FictitiousPlay's: no responder, buffer or clone
        self.learning_rate = mirror_learning_rate(config)
        self.learner = MirrorDescentLearner(self.game, config.omd, self.learning_rate, self.device, config.seed)
        self._population = _population_flow(self.game, config, self.device)
        self._exact_values: np.ndarray | None = None

    @property
    def average_policy(self) -> Policy:
        """The current policy π^k (softmax over the action lattice)."""
        return self.learner.policy

    def iteration(self) -> IterationRecord:
        """One mirror step against the current population, then the new policy's population."""
        self.initialise()
        k = self.completed + 1
        metrics: dict[str, float] = {"omd/learning_rate": self.learning_rate}

        # 1. the mirror step against the frozen population of π^{k-1} (its density read from a table)
        self._phase("mirror step")
        start = time.perf_counter()
        frozen = reward_table(self._population, self.game.domain, self.config.fp.reward_density_nodes)
        evaluated = self.learner.policy
        measure = self.config.fp.measure_best_response
        metrics.update(self.learner.update(frozen, greedy=measure))
        metrics["time/mirror_step"] = time.perf_counter() - start
        if measure:
            metrics.update(self._measure_greedy(k, frozen, evaluated))

        # 2. the new policy's population
        metrics.update(self._refresh_population(None))
        self._evaluate(k, metrics, [], None)
        curve = self._exact_curve(k)
        if curve is not None and "fp/grid_exploitability" in metrics:
            metrics["reference/exact_omd_exploitability"] = float(curve[k])
        return self._record(k, metrics)

    def _measure_greedy(self, k: int, frozen: PopulationModel, evaluated: Policy) -> dict[str, float]:
        """``br/return``, ``br/gain`` and ``br/shortfall`` of the mirror step's greedy policy against ``frozen``
        (see the module docstring), from a generator of their own (seeded by the run's seed and ``k``)."""
        assert self.learner.greedy is not None
        start = time.perf_counter()
        field = self.game.bind(frozen)
        generator = torch.Generator(device=self.device).manual_seed(self.config.seed * 100_003 + k)
        draws = generator.get_state()
        played = rollout(self.game, self.learner.greedy, self.config.fp.br_agents, field, deterministic=True,
                         generator=generator, device=self.device)
        metrics = {"br/return": float(played.returns.mean()),
                   "br/return_se": float(played.returns.std() / played.returns.numel() ** 0.5)}
        metrics.update(self._measure_best_response(frozen, field, played, draws, evaluated))
        metrics["time/br_quality"] = time.perf_counter() - start      # the greedy policy's rollout included
        return metrics

    def _exact_curve(self, k: int) -> np.ndarray | None:
        """Exploitability ``[K+1]`` of the same loop with exact parts on the game's grid (None without one)."""
        if not isinstance(self.evaluator, GridEvaluator):
            return None
        if self._exact_values is None or len(self._exact_values) <= k:
            from dedafp.reference.grid_solvers import GridMirrorDescent
            solver = GridMirrorDescent(self.evaluator.grid, self.learning_rate)
            iterations = max(k, self.config.fp.iterations)
            self._exact_values = np.array([solver.evaluate().exploitability]
                                          + [solver.iteration().exploitability for _ in range(iterations)])
        return self._exact_values

    # ---- persistence --------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict(), "population": self._population.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])
        self._population = population_from_state_dict(state["population"], str(self.device))
