"""Per-iteration evaluation against a game's reference solution (exact for LQ).

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

from dedafp.agents.best_response import BestResponseConfig, DeterministicPolicy, SB3BestResponder
from dedafp.agents.mixture import MixturePolicy
from dedafp.agents.policy import Policy
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQGame
from dedafp.metrics import gaussian_w2, moments
from dedafp.population.base import PopulationModel
from dedafp.reference import lq
from dedafp.rollout import rollout


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


def deep_rl_exploitability(game: MeanFieldGame, population: PopulationModel, policy: Policy,
                           config: BestResponseConfig, agents: int = 20_000, seed: int = 0,
                           device: torch.device | str = "cpu") -> dict[str, float]:
    """Exploitability estimated by deep RL: a *lower bound* for any game.

    A fresh stable-baselines3 best response is trained against the frozen ``population`` and both
    it (deterministically) and ``policy`` are rolled out by ``agents`` agents against that same
    population. The gap of their mean returns under-estimates the exploitability by the fresh best
    response's own shortfall, hence a lower bound (up to the reported Monte Carlo standard error).
    """
    responder = SB3BestResponder(game, config, device, seed)
    best_response = responder.learn(population)
    field = game.bind(population)
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    br_returns = rollout(game, best_response, agents, field, deterministic=True, generator=generator,
                         device=device).returns.double()
    policy_returns = rollout(game, policy, agents, field, generator=generator, device=device).returns.double()
    gap = float(br_returns.mean() - policy_returns.mean())
    std_error = float(torch.sqrt(br_returns.var() / agents + policy_returns.var() / agents))
    return {"deep_rl/exploitability_lower_bound": gap, "deep_rl/exploitability_lower_bound_se": std_error,
            "deep_rl/best_response_return": float(br_returns.mean()),
            "deep_rl/policy_return": float(policy_returns.mean())}


class GridEvaluator:
    """Metrics of a density game against its fine-grid reference (:mod:`dedafp.reference.grid`).

    Every iteration: the grid exploitability of the average policy (its sampled actions projected
    onto the grid's velocity lattice, then scored exactly; an episode mixture member by member), and
    the population model against the reference equilibrium's density per t (total variation,
    wall-respecting W1, misplaced mass and mass per region). The reference is solved once (online mirror
    descent) and cached under ``results/reference/``.
    """

    def __init__(self, game: MeanFieldGame, device: torch.device | str = "cpu", seed: int = 0,
                 samples_per_cell: int = 16, population_samples: int = 50_000,
                 reference_iterations: int = 300) -> None:
        from dedafp.reference.grid import build_grid, default_grid_config
        from dedafp.reference.grid_store import cached_solution, save_solution, solve
        self.game = game
        self.device = torch.device(device)
        self.seed = seed
        self.samples_per_cell = samples_per_cell
        self.population_samples = population_samples
        self.grid = build_grid(game, default_grid_config(game.name))
        solution = cached_solution(self.grid, "omd")
        if solution is None:
            solution = solve(self.grid, "omd", reference_iterations)
            save_solution(solution)
        self.reference_mass = solution.mass
        self.reference_exploitability = solution.exploitability

    def evaluate(self, iteration: int, average_policy: Policy, population: PopulationModel,
                 best_responses: list[DeterministicPolicy], br_field: object) -> dict[str, float]:
        from dedafp.agents.mixture import MixturePolicy
        from dedafp.agents.policy import act
        from dedafp.reference.grid_scoring import compare_population, score_mixture
        generator = torch.Generator().manual_seed(self.seed + 7919 * (iteration + 1))
        # An episode mixture (Algo 1) is scored member by member (a state-wise draw would not be it),
        # with fewer states per cell: every member's sampled actions are held at once.
        episode_mixture = isinstance(average_policy, MixturePolicy)
        policies = average_policy.policies if episode_mixture else [average_policy]
        samples = max(1, self.samples_per_cell // 4) if episode_mixture else self.samples_per_cell
        score = score_mixture(self.grid, [lambda t, x, p=p: act(p, t, x, generator=generator) for p in policies],
                              samples, generator=generator)
        comparison = compare_population(self.grid, self.reference_mass, population,
                                        samples=self.population_samples, generator=generator)
        metrics = {"fp/grid_exploitability": score.exploitability, "fp/grid_policy_value": score.policy_value,
                   "reference/exploitability": self.reference_exploitability}
        metrics.update(comparison.summary())
        return metrics
