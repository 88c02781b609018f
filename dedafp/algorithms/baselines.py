"""The DEDA-FP paper's baselines (Magnino et al., NeurIPS 2025, Algorithms 1 and 2) as variations of DEDA-FP.

Both keep DEDA-FP's best responses and replace its population model by a Gaussian kernel density
estimate over the simulated agents (``fp.kde_bandwidth``):

* ``algo2``: behavioural cloning of the average policy as in DEDA-FP (step 3 unchanged);
* ``algo1``: no cloning at all: the average is the exact episode mixture of every best response
  (each simulated agent follows one of them for its whole episode).
"""

from __future__ import annotations

from dedafp.agents.mixture import MixturePolicy
from dedafp.agents.policy import Policy
from dedafp.algorithms.base import register_algorithm
from dedafp.algorithms.fictitious_play import FictitiousPlay
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.population import ParticlePopulation
from dedafp.rollout import Rollout

__all__ = ["KernelDensityFictitiousPlay", "MixtureFictitiousPlay"]


@register_algorithm("algo2")
class KernelDensityFictitiousPlay(FictitiousPlay):
    """Algo 2: DEDA-FP with a kernel density estimate over the simulated agents instead of the flow.

    Its rewards query the kernel estimate itself, as in the paper: a table of it
    (``fp.reward_density_nodes``) would cost nodes x agents kernel terms per t, the very cost the
    comparison with the flow measures.
    """

    tabulate_rewards = False

    @classmethod
    def describe(cls, config: RunConfig) -> str:
        return f"best response {config.best_response.algorithm}, KDE {config.fp.kde_bandwidth}"

    def __init__(self, config: RunConfig, game: MeanFieldGame | None = None) -> None:
        super().__init__(config, game)
        if self.game.domain.kind == "periodic":
            # A Gaussian kernel on [low, high) would put mass across the seam on one side only.
            raise ValueError(f"algorithm {config.algorithm!r} estimates the density with a Gaussian kernel, which has "
                             f"no periodic version yet; {self.game.name!r} is periodic: use --algorithm dedafp")

    def _fit_population(self, sim: Rollout, steps: int | None) -> dict[str, float]:
        self._population = ParticlePopulation(sim.states, self.config.fp.kde_bandwidth, device=self.device)
        return {}


@register_algorithm("algo1")
class MixtureFictitiousPlay(KernelDensityFictitiousPlay):
    """Algo 1: the average is the episode mixture of every best response (no cloning), with a kernel density."""

    @property
    def average_policy(self) -> Policy:
        """The mixture of the stored best responses (the near-zero initial policy before the first)."""
        return MixturePolicy(self.best_responses) if self.best_responses else self._average_policy

    def _update_average(self, played: Rollout) -> dict[str, float]:
        return {}
