"""Population models: one interface (``sample``, ``log_prob``, ``mean`` given t), several implementations."""

from dedafp.population.base import PopulationModel
from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.gaussian import GaussianPopulation
from dedafp.population.particles import ParticlePopulation
from dedafp.population.periodic import PeriodicFlowPopulation

__all__ = ["PopulationModel", "FlowConfig", "FlowPopulation", "GaussianPopulation", "ParticlePopulation",
           "PeriodicFlowPopulation", "population_from_state_dict"]


def population_from_state_dict(state: dict, device: str = "cpu") -> PopulationModel:
    """Rebuild a flow, periodic flow or particle model from its ``state_dict()`` (the ``kind`` entry says which)."""
    kinds = {"flow": FlowPopulation, "periodic": PeriodicFlowPopulation, "particles": ParticlePopulation}
    kind = state.get("kind", "flow")
    if kind not in kinds:
        raise ValueError(f"unknown population model kind {kind!r}; allowed: {sorted(kinds)}")
    return kinds[kind].from_state_dict(state, device)
