"""Population models: one interface (``sample``, ``log_prob``, ``mean`` given t), several implementations."""

from dedafp.population.base import PopulationModel
from dedafp.population.flow import FlowConfig, FlowPopulation
from dedafp.population.gaussian import GaussianPopulation
from dedafp.population.particles import ParticlePopulation

__all__ = ["PopulationModel", "FlowConfig", "FlowPopulation", "GaussianPopulation", "ParticlePopulation"]
