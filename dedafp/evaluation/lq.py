"""Per-iteration evaluation of the LQ games against their exact solution.

An evaluator turns the loop's state into namespaced metrics. For the LQ game every metric is
measured against the exact solution, including the three error terms of the DEDA-FP paper's
convergence theorem:

* ``theory/br_shortfall`` (ε_br): exact best-response value minus the learned best response's value,
  both against the mean flow the best response was trained on;
* ``theory/bc_error`` (ε_sl): exploitability of the behaviour-cloned average minus that of the exact
  episode-mixture of the stored best responses it imitates;
* ``theory/flow_w2`` (ε_cnf): max over t of W2 between the flow's marginal and the marginal of a
  large simulation of the average policy (Gaussian/Bures W2 of the moments).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dedafp.agents.mixture import MixturePolicy
from dedafp.agents.policy import DeterministicPolicy, Policy
from dedafp.envs.lq import LQGame
from dedafp.metrics import gaussian_w2, moments
from dedafp.population.base import PopulationModel
from dedafp.reference import lq

__all__ = ["LQEvaluator"]


class LQEvaluator:
    """Exact-reference metrics of the LQ game."""

    def __init__(self, game: LQGame, eval_agents: int, iterations: int, device: torch.device | str = "cpu",
                 seed: int = 0, flow_samples: int = 20_000) -> None:
        self.game = game
        self.config = game.config
        self.eval_agents = eval_agents
        self.device = torch.device(device)
        self.seed = seed
        self.flow_samples = flow_samples
        self.equilibrium = lq.equilibrium(self.config)
        self.exact_fp = lq.exact_fictitious_play(self.config, iterations).exploitability

    def evaluate(self, iteration: int, average_policy: Policy, population: PopulationModel,
                 best_responses: Sequence[DeterministicPolicy], br_field: torch.Tensor | None) -> dict[str, float]:
        """Metrics after ``iteration`` best responses (``best_responses[-1]`` answered ``br_field``)."""
        metrics: dict[str, float] = {}
        if iteration < len(self.exact_fp):
            metrics["reference/exact_fp_exploitability"] = float(self.exact_fp[iteration])
        if self.eval_agents == 0:
            return metrics
        seed = self.seed + 7919 * (iteration + 1)
        run = lq.monte_carlo_exploitability(self.config, average_policy.distribution, self.eval_agents,
                                            seed=seed, device=self.device)
        e = run.exploitability
        metrics.update({"fp/exploitability": e.exploitability, "fp/exploitability_se": e.std_error,
                        "fp/policy_value": e.policy_value, "fp/best_response_value": e.best_response_value})
        if best_responses and br_field is not None:
            shortfall = lq.monte_carlo_exploitability(
                self.config, best_responses[-1].distribution, self.eval_agents,
                mean_flow=br_field.double().cpu().numpy(), seed=seed + 1, device=self.device).exploitability
            metrics["theory/br_shortfall"] = shortfall.exploitability
            mixture = MixturePolicy(best_responses)
            mixed = lq.monte_carlo_exploitability(self.config, mixture.distribution, self.eval_agents,
                                                  seed=seed + 3, device=self.device).exploitability
            metrics["theory/bc_error"] = e.exploitability - mixed.exploitability
            metrics["theory/mixture_exploitability"] = mixed.exploitability
        metrics.update(self.flow_metrics(population, run.state_means, run.state_covs, seed + 4))
        return metrics

    def flow_metrics(self, population: PopulationModel, sim_means: np.ndarray, sim_covs: np.ndarray,
                     seed: int) -> dict[str, float]:
        """W2 of the population model's marginals to the simulation's and to the equilibrium's."""
        generator = torch.Generator(device=population.device).manual_seed(seed)
        to_sim, to_eq = [], []
        for t in range(self.game.horizon + 1):
            mean, cov = moments(population.sample(t, self.flow_samples, generator))
            to_sim.append(gaussian_w2(mean, cov, sim_means[t], sim_covs[t]))
            to_eq.append(gaussian_w2(mean, cov, self.equilibrium.mean_flow[t], self.equilibrium.cov_flow[t]))
        return {"theory/flow_w2": float(np.max(to_sim)), "flow/w2_mean": float(np.mean(to_sim)),
                "flow/w2_to_equilibrium": float(np.max(to_eq))}
