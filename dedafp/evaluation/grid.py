"""Evaluation of the density games against their fine-grid reference (:mod:`dedafp.reference.grid`)."""

from __future__ import annotations

import torch

from dedafp.agents.policy import DeterministicPolicy, Policy
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel

__all__ = ["GridEvaluator", "grid_evaluator"]


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


def grid_evaluator(game: MeanFieldGame, eval_agents: int, iterations: int, device: torch.device | str = "cpu",
                   seed: int = 0) -> GridEvaluator:
    """The :class:`GridEvaluator` of ``game`` (the spec signature; the grid scores exactly, no agents)."""
    return GridEvaluator(game, device, seed)
