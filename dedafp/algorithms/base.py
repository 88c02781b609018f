"""The algorithm interface: an outer loop as an object with a short :meth:`Algorithm.iteration`.

Every algorithm (DEDA-FP, the paper's baselines, a user's own) exposes the same verbs, so run
folders, resume, ``evaluate --all-iterations``, sweeps and benchmarks work for all of them::

    algorithm = make_algorithm(config)           # config.algorithm names a registered class
    algorithm.initialise()                       # iteration 0: the initial population, evaluated
    record = algorithm.iteration()               # one outer iteration; record.metrics[...]
    algorithm.average_policy, algorithm.population, algorithm.history
    state = algorithm.state_dict(); algorithm.load_state_dict(state)    # exact resume

Adding an algorithm is one module: subclass :class:`Algorithm` (or an existing algorithm) and
decorate it with ``@register_algorithm("name")``.
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dedafp.agents.policy import Policy
from dedafp.config import RunConfig
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import make_game
from dedafp.evaluation.base import Evaluator, make_evaluator
from dedafp.population.base import PopulationModel

__all__ = ["IterationRecord", "Algorithm", "register_algorithm", "make_algorithm", "algorithm_class",
           "registered_algorithms", "DIAGNOSTIC_PHASES"]

#: Timed phases that only measure (``time/training`` leaves them out of ``time/iteration``).
DIAGNOSTIC_PHASES = ("time/evaluation", "time/br_quality")


@dataclass(frozen=True)
class IterationRecord:
    """What one iteration measured: namespaced metrics (``fp/...``, ``br/...``, ``time/...``)."""

    iteration: int
    metrics: dict[str, float] = field(default_factory=dict)


class Algorithm(abc.ABC):
    """An outer loop computing a mean-field equilibrium, one :meth:`iteration` at a time.

    Subclasses implement :meth:`initialise`, :meth:`iteration`, the two read-only properties and
    :meth:`_state` / :meth:`_load_state` for their own state. The base keeps the
    history, the generator, the RNG states and the (lazily built) reference evaluator.
    """

    #: The registered name (set by :func:`register_algorithm`).
    name: str = ""
    #: Training metrics the progress table shows after the game's own columns.
    progress_columns: tuple[str, ...] = ("flow/nll", "time/iteration")

    @classmethod
    def describe(cls, config: RunConfig) -> str:
        """The parts ``config`` gives this algorithm, in a few words (the progress table's header)."""
        return f"best response {config.best_response.algorithm}, flow {config.flow.backend}"

    def __init__(self, config: RunConfig, game: MeanFieldGame | None = None) -> None:
        self.config = config
        self.game = game if game is not None else make_game(config.env, config.game)
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device is 'cuda' but torch.cuda.is_available() is False; use --device cpu")
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.history: list[IterationRecord] = []
        self._evaluator: Evaluator | None = None
        self._evaluator_built = False
        #: Called with the name of each phase as it starts (progress displays); None: silent.
        self.progress: Callable[[str], None] | None = None

    # ---- what every algorithm provides --------------------------------------------------------

    @property
    @abc.abstractmethod
    def average_policy(self) -> Policy:
        """The policy the algorithm currently proposes as the equilibrium."""

    @property
    @abc.abstractmethod
    def population(self) -> PopulationModel:
        """The population model of :attr:`average_policy`."""

    @property
    def completed(self) -> int:
        """Outer iterations completed (k; iteration 0 not counted)."""
        return max(0, len(self.history) - 1)

    @abc.abstractmethod
    def initialise(self) -> IterationRecord:
        """Iteration 0 (the initial policy's population, evaluated); idempotent."""

    @abc.abstractmethod
    def iteration(self) -> IterationRecord:
        """Run one outer iteration (initialising first if needed); returns its record."""

    # ---- shared machinery ---------------------------------------------------------------------

    @property
    def evaluator(self) -> Evaluator | None:
        """The game's reference evaluator, built on first use (a grid reference takes seconds to build)."""
        if not self._evaluator_built:
            c = self.config
            self._evaluator = make_evaluator(self.game, c.fp.eval_agents, c.fp.iterations, self.device, c.seed)
            self._evaluator_built = True
        return self._evaluator

    def _phase(self, name: str) -> None:
        if self.progress is not None:
            self.progress(name)

    def _evaluate(self, k: int, metrics: dict[str, float], best_responses: list, br_field: Any) -> None:
        """Add the reference evaluator's metrics every ``fp.evaluate_every`` iterations and at the last."""
        start = time.perf_counter()
        every = self.config.fp.evaluate_every
        if self.evaluator is not None and (k % every == 0 or k == self.config.fp.iterations):
            self._phase("evaluation")
            metrics.update(self.evaluator.evaluate(k, self.average_policy, self.population, best_responses,
                                                   br_field))
        metrics["time/evaluation"] = time.perf_counter() - start

    def _record(self, k: int, metrics: dict[str, float]) -> IterationRecord:
        """Close iteration ``k``: total time, a NaN/inf check naming the metrics, the history."""
        metrics["time/iteration"] = sum(v for key, v in metrics.items()
                                        if key.startswith("time/") and key != "time/iteration")
        # What the algorithm itself costs: the iteration less its diagnostics (evaluation and best-response
        # quality, which change nothing in the run and may use an oracle).
        metrics["time/training"] = metrics["time/iteration"] - sum(metrics.get(key, 0.0) for key in DIAGNOSTIC_PHASES)
        bad = [key for key, value in metrics.items() if not np.isfinite(value)]
        if bad:
            raise FloatingPointError(f"iteration {k} produced non-finite metrics: {bad}")
        record = IterationRecord(k, metrics)
        self.history.append(record)
        return record

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this object is: config, history, the
        subclass's :meth:`_state` and every RNG state."""
        return {
            "algorithm": self.name,
            "config": self.config.to_dict(),
            "history": [(r.iteration, r.metrics) for r in self.history],
            **self._state(),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(), "python": random.getstate()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into an object built with the same config."""
        saved = state.get("algorithm", self.name)
        if saved != self.name:
            raise ValueError(f"the checkpoint is of algorithm {saved!r}, not {self.name!r}")
        self.history = [IterationRecord(k, m) for k, m in state["history"]]
        self._load_state(state)
        # Last: restoring a subclass's state may draw random numbers (SB3 reseeds torch on building a model).
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def _state(self) -> dict[str, Any]:
        """The subclass's own entries of :meth:`state_dict` (networks, buffers, responders)."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:  # noqa: B027  (an optional hook)
        """Restore what :meth:`_state` saved."""


_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: register an :class:`Algorithm` subclass under ``name`` (``--algorithm name``)."""
    def decorate(cls: type[Algorithm]) -> type[Algorithm]:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"register_algorithm expects an Algorithm subclass, got {cls!r}")
        if name in _ALGORITHMS and _ALGORITHMS[name] is not cls:
            raise ValueError(f"an algorithm named {name!r} is already registered")
        cls.name = name
        _ALGORITHMS[name] = cls
        return cls
    return decorate


def registered_algorithms() -> tuple[str, ...]:
    """Names of the registered algorithms."""
    return tuple(_ALGORITHMS)


def algorithm_class(name: str) -> type[Algorithm]:
    """The class registered under ``name``."""
    if name not in _ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; registered: {', '.join(_ALGORITHMS)}")
    return _ALGORITHMS[name]


def make_algorithm(config: RunConfig, game: MeanFieldGame | None = None) -> Algorithm:
    """The algorithm ``config.algorithm`` names, on ``game`` (default: the game ``config.env`` names)."""
    return algorithm_class(config.algorithm)(config, game)
