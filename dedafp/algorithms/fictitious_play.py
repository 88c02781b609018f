"""DEDA-FP: Density-Enhanced Deep-Average Fictitious Play (Magnino et al., NeurIPS 2025).

Iteration k = 1..K, against the population model μ^{k-1} of the previous iteration (held fixed):

    1. best response   π^k  <- deep RL (SB3 PPO/SAC), pathwise, or exact (Riccati, grid), against μ^{k-1};
                               with best_response.keep_best, a stored π^j that earns more replaces it
    2. buffer          B    <- B ∪ {(t, x, a)} of π^k played deterministically against μ^{k-1}
    3. average policy  π̄^k <- Gaussian MLP fitted by NLL to B (each iteration weighted 1/k)
    4. population      μ^k  <- normalizing flow fitted to a rollout of π̄^k (its own mean-field flow)

Before iteration 1 (k = 0) the flow is fitted to the initial average policy's population (a
near-zero policy). Every iteration reports exploitability and, where the game has a reference,
the error terms of the paper's Theorem 1. The paper's baselines (:mod:`dedafp.algorithms.baselines`)
override steps 3 and 4.

Usage::

    from dedafp import load_config, make_algorithm
    fp = make_algorithm(load_config("lq2d", overrides=["fp.iterations=3"]))
    for _ in range(3):
        record = fp.iteration()          # record.metrics["fp/exploitability"], ...
    fp.average_policy.predict(t=0, x=torch.zeros(5, 2)); fp.population.log_prob(x, t=0)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import Tensor

from dedafp.agents.average_policy import AveragePolicy, FictitiousPlayBuffer, action_spreads, resolve_fixed_std
from dedafp.agents.policy import DeterministicPolicy, Policy
from dedafp.algorithms.base import Algorithm, IterationRecord, register_algorithm
from dedafp.algorithms.responders import make_responder
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import spec_of
from dedafp.population import FlowPopulation, PopulationModel, population_from_state_dict
from dedafp.population.grid_cache import reward_table
from dedafp.population.periodic import PeriodicFlowPopulation
from dedafp.rollout import Rollout, rollout

__all__ = ["FictitiousPlay"]


def _population_flow(game: MeanFieldGame, config: RunConfig, device: torch.device) -> PopulationModel:
    """The flow of the game's domain: on the circle or torus a periodic flow (no seam), else ``FlowPopulation``."""
    if game.domain.kind == "periodic":
        return PeriodicFlowPopulation(config.flow, game.state_dim, game.horizon, game.domain.low, game.domain.high,
                                      device, config.seed)
    return FlowPopulation(config.flow, game.state_dim, game.horizon, device, config.seed)


@register_algorithm("dedafp")
class FictitiousPlay(Algorithm):
    """The DEDA-FP loop: best response, behavioural cloning of the average, a flow of its population."""

    #: Whether best responses read a table of the population (``fp.reward_density_nodes``) or the model.
    tabulate_rewards = True
    progress_columns = ("br/return", "br/gain", "br/shortfall", "bc/nll", "flow/nll", "time/iteration")

    def __init__(self, config: RunConfig, game: MeanFieldGame | None = None) -> None:
        super().__init__(config, game)
        seed = config.seed
        self.buffer = FictitiousPlayBuffer(config.average_policy.buffer_capacity,
                                           torch.Generator().manual_seed(seed + 1))
        clone = resolve_fixed_std(config.average_policy, config.best_response.algorithm)    # a RunConfig built directly
        self._average_policy = AveragePolicy(self.game, clone, self.device, seed)
        self._population: PopulationModel = _population_flow(self.game, config, self.device)
        self.responder = make_responder(self.game, config.best_response, self.device, seed)
        self.best_responses: list[DeterministicPolicy] = []

    @property
    def average_policy(self) -> Policy:
        """The average policy π̄^k (behaviour-cloned)."""
        return self._average_policy

    @property
    def population(self) -> PopulationModel:
        """The population model μ^k of the average policy."""
        return self._population

    # ---- the algorithm ------------------------------------------------------------------------

    def initialise(self) -> IterationRecord:
        """Fit the population model to the initial average policy's population (iteration 0); idempotent."""
        if not self.history:
            metrics = self._refresh_population(self.config.fp.initial_flow_steps)
            self._evaluate(0, metrics, [], None)
            self._record(0, metrics)
        return self.history[0]

    def iteration(self) -> IterationRecord:
        """Run one fictitious-play iteration (the first call also fits the initial population)."""
        self.initialise()
        k = self.completed + 1
        metrics: dict[str, float] = {}

        # 1. best response against the frozen population model of iteration k-1
        self._phase("best response")
        start = time.perf_counter()
        # The rewards read a table of the frozen model where the domain allows (fp.reward_density_nodes):
        # a best response queries the density some 10^5-10^6 times, the table costs one pass over its nodes.
        nodes = self.config.fp.reward_density_nodes if self.tabulate_rewards else 0
        frozen = reward_table(self._population, self.game.domain, nodes)
        br_field = self.game.bind(frozen)
        self.best_responses.append(self.responder.learn(frozen))
        metrics["time/best_response"] = time.perf_counter() - start

        # 2. its played (deterministic) samples; 3. the average policy learns from them
        self._phase("behavioural cloning")
        start = time.perf_counter()
        draws = self.generator.get_state()
        played = rollout(self.game, self.best_responses[-1], self.config.fp.br_agents, br_field,
                         deterministic=True, generator=self.generator, device=self.device)
        if self.config.best_response.keep_best and len(self.best_responses) > 1:
            played = self._keep_best(played, draws, br_field, metrics)
        metrics["br/return"] = float(played.returns.mean())
        metrics["br/return_se"] = float(played.returns.std() / played.returns.numel() ** 0.5)
        metrics["time/bc"] = time.perf_counter() - start
        if self.config.fp.measure_best_response:
            metrics.update(self._measure_best_response(frozen, br_field, played, draws, self.average_policy))
        start = time.perf_counter()
        metrics.update(self._update_average(played))
        metrics["time/bc"] += time.perf_counter() - start

        # 4. the average policy's population
        metrics.update(self._refresh_population(None))
        self._evaluate(k, metrics, self.best_responses, br_field)
        return self._record(k, metrics)

    def _measure_best_response(self, frozen: PopulationModel, br_field: Any, played: Rollout, draws: Tensor,
                               baseline: Policy) -> dict[str, float]:
        """``br/gain`` over ``baseline`` (the policy answered) and, where the game has an exact responder,
        ``br/shortfall`` (see :attr:`~dedafp.config.FictitiousPlayConfig.measure_best_response`); every rollout
        replays the agents and noise of ``played`` (the best response's, drawn from the state ``draws``)."""
        self._phase("best-response quality")
        start = time.perf_counter()

        def replay(policy: Policy, deterministic: bool) -> Tensor:
            generator = torch.Generator(device=self.device)
            generator.set_state(draws)
            return rollout(self.game, policy, self.config.fp.br_agents, br_field, deterministic=deterministic,
                           generator=generator, device=self.device).returns

        returns = played.returns
        gain = returns - replay(baseline, deterministic=False)
        metrics = {"br/gain": float(gain.mean()), "br/gain_se": float(gain.std() / gain.numel() ** 0.5)}
        exact = self._exact_responder()
        if exact is not None:
            shortfall = replay(exact.learn(frozen), deterministic=True) - returns
            metrics.update({"br/shortfall": float(shortfall.mean()),
                            "br/shortfall_se": float(shortfall.std() / shortfall.numel() ** 0.5)})
        metrics["time/br_quality"] = time.perf_counter() - start
        return metrics

    def _exact_responder(self) -> Any:
        """A separate instance of the exact responder the game's spec declares (None without one): even where the
        run uses that responder, so that its shortfall (then 0: the same solve on the same noise) checks the
        measurement itself."""
        if not hasattr(self, "_exact"):
            spec = spec_of(self.game)
            name = None if spec is None else spec.exact_responder
            self._exact = None
            if name is not None:
                self._exact = make_responder(self.game, dataclasses.replace(self.config.best_response, algorithm=name),
                                             self.device, self.config.seed)
        return self._exact

    def _update_average(self, played: Rollout) -> dict[str, float]:
        """Steps 2-3: the best response's played samples join the buffer; the average is cloned on it."""
        self.buffer.add(*played.samples())
        metrics = {"bc/nll": self._average_policy.fit(self.buffer)}
        metrics.update(action_spreads(self._average_policy, self.best_responses, self.buffer))
        return metrics

    def _refresh_population(self, steps: int | None) -> dict[str, float]:
        """Step 4: roll the average policy out (its own mean-field flow) and fit the population model."""
        self._phase("population")
        start = time.perf_counter()
        # A consistent rollout replaces what the dynamics read with the simulated population's own
        # statistics; rewards are not needed here (a density reward would cost a flow query per step).
        field = self.game.bind(self._population)
        sim = rollout(self.game, self.average_policy, self.config.fp.population_agents, field, consistent=True,
                      generator=self.generator, device=self.device, rewards=False)
        metrics = {"time/rollout": time.perf_counter() - start}
        start = time.perf_counter()
        metrics.update(self._fit_population(sim, steps))
        metrics["time/flow"] = time.perf_counter() - start
        return metrics

    def _fit_population(self, sim: Rollout, steps: int | None) -> dict[str, float]:
        """Fit the flow (warm-started) to the simulated states (with ``flow.fp_penalty``, also to the
        Fokker-Planck equation of the average policy's drift)."""
        times, states = sim.population_samples()
        if self.config.flow.fp_penalty == 0:
            metrics = {"flow/nll": self._population.fit(times, states, steps=steps, generator=self.generator)}
        else:
            metrics = {"flow/nll": self._population.fit(times, states, steps=steps, generator=self.generator,
                                                        fokker_planck=self._fokker_planck_term(sim.field)),
                       "flow/fp_residual": float(self._population.last_fp_residual)}
        if self.config.flow.patience:
            metrics["flow/steps"] = float(self._population.last_steps)
        return metrics

    def _fokker_planck_term(self, field: Any) -> Any:
        """The average policy's drift and the game's noise, for the flow's Fokker-Planck penalty."""
        from dedafp.population.fokker_planck import FokkerPlanckTerm, drift_from_step
        game_config = getattr(self.game, "config", None)
        dt, sigma = getattr(game_config, "dt", None), getattr(game_config, "sigma", None)
        if dt is None or sigma is None:
            raise ValueError(f"flow.fp_penalty needs the game's time step and noise (game.config.dt and "
                             f"game.config.sigma); {self.game.name!r} has none: set flow.fp_penalty=0")
        policy, bound = self.average_policy, self.game.action_bound

        def mean_action(k: int, x: Tensor) -> Tensor:   # differentiable in x: the penalty takes its divergence
            return policy.distribution(k, x)[0].clamp(-bound, bound)

        return FokkerPlanckTerm(drift_from_step(self.game.step, mean_action, field, self.game.horizon, dt), sigma, dt)

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

    # ---- persistence --------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "buffer": self.buffer.state_dict(),
            "average_policy": {"net": self._average_policy.net.state_dict(),
                               "optimizer": self._average_policy.optimizer.state_dict()},
            "population": self._population.state_dict(),
            "best_responses": self.best_responses,
            "responder": self.responder.state_dict() if hasattr(self.responder, "state_dict") else None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state["buffer"])
        self._average_policy.net.load_state_dict(state["average_policy"]["net"])
        self._average_policy.optimizer.load_state_dict(state["average_policy"]["optimizer"])
        self._population = population_from_state_dict(state["population"], str(self.device))
        self.best_responses = state["best_responses"]
        if state.get("responder") is not None and hasattr(self.responder, "load_state_dict"):
            self.responder.load_state_dict(state["responder"], self._population)
