"""Exact equilibrium solvers on the grid game: fictitious play and online mirror descent.

Both start from the uniform policy; ``iteration()`` does one update and returns a :class:`GridIterate`
with the new policy's exact exploitability, ``evaluate()`` the current one's without updating.

Usage::

    solver = GridMirrorDescent(build_grid(FourRoomsGame(), GridConfig(cells=44)))
    records = [solver.iteration() for _ in range(300)]            # records[-1].exploitability ~ 0
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

import numpy as np

from dedafp.reference.grid import Exploitability, GridMFG


@dataclass(frozen=True)
class GridIterate:
    """Metrics of a grid solver after an iteration.

    Attributes:
        iteration: number of updates done (0: the initial uniform policy).
        exploitability: exact exploitability of the current policy.
        policy_value: J(π; μ^π).
        best_response_value: J(BR; μ^π).
        seconds: wall time of this iteration.
    """

    iteration: int
    exploitability: float
    policy_value: float
    best_response_value: float
    seconds: float

    @staticmethod
    def of(iteration: int, score: Exploitability, started: float) -> GridIterate:
        """The record of ``score`` after ``iteration`` updates, timed from ``started`` (``time.perf_counter()``)."""
        return GridIterate(iteration, score.exploitability, score.policy_value, score.best_response_value,
                           time.perf_counter() - started)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array``."""
    view = array.view()
    view.flags.writeable = False
    return view


@final
class GridFictitiousPlay:
    """Exact fictitious play on the grid, started from the uniform policy.

    Iteration k computes the best response BR_k to the current average's flow and averages it in with
    weight 1/(k+1), weighting policies by their occupancy so that the average's flow is the average of
    flows (the uniform policy keeps weight 1/(k+1)). Each record reports the new average's exploitability.

    Args:
        grid: the grid game.
        newest_weight: the share of BR_k in the new average as a function of k = 1, 2, ... (in (0, 1]);
            None: 1/(k+1), plain fictitious play. A damped variant passes e.g. ``max(alpha, 1/k)``.
    """

    def __init__(self, grid: GridMFG, newest_weight: Callable[[int], float] | None = None) -> None:
        self.grid = grid
        self.newest_weight = newest_weight
        self._iteration = 0
        self._policy = grid.uniform_policy()
        self._mass: np.ndarray | None = None
        self._score: Exploitability | None = None

    @property
    def policy(self) -> np.ndarray:
        """The current average policy ``[T, S, A]`` (read-only view)."""
        return _read_only(self._policy)

    @property
    def mass(self) -> np.ndarray:
        """The current average policy's flow ``[T+1, S]``."""
        return self._current().mass

    def _current(self) -> Exploitability:
        if self._score is None:
            self._score = self.grid.exploitability(self._policy, self._mass)
            self._mass = self._score.mass
        return self._score

    def evaluate(self) -> GridIterate:
        """The current average's record without updating it."""
        started = time.perf_counter()
        score = self._current()
        return GridIterate.of(self._iteration, score, started)

    def iteration(self) -> GridIterate:
        """One fictitious-play update; returns the new average's record."""
        started = time.perf_counter()
        score = self._current()
        best = self.grid.one_hot(score.best_response)
        best_mass = self.grid.forward(best)
        k = self._iteration + 1
        weight = 1.0 / (k + 1) if self.newest_weight is None else float(self.newest_weight(k))
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"newest_weight({k}) must be in (0, 1], got {weight!r}")
        old = (1 - weight) * score.mass[:-1, :, None]
        new = weight * best_mass[:-1, :, None]
        total = old + new
        mixed = (old * self._policy + new * best) / np.where(total > 0, total, 1.0)
        plain = (1 - weight) * self._policy + weight * best
        self._policy = np.where(total > 0, mixed, plain)
        self._mass = (1 - weight) * score.mass + weight * best_mass
        self._score = None
        self._iteration += 1
        score = self._current()
        return GridIterate.of(self._iteration, score, started)


@final
class GridMirrorDescent:
    """Online mirror descent on the grid (Pérolat et al., 2022), started from the uniform policy.

    Each iteration evaluates the current policy against its own flow and accumulates its Q-function,
    ``y += learning_rate * Q^{π_k, μ^{π_k}}``; the next policy is ``softmax(y)`` per (t, state).
    """

    def __init__(self, grid: GridMFG, learning_rate: float = 1.0) -> None:
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
        self.grid = grid
        self.learning_rate = float(learning_rate)
        self._iteration = 0
        self._logits = np.zeros((grid.horizon, grid.num_states, grid.num_actions))
        self._policy = grid.uniform_policy()
        self._state: tuple[Exploitability, np.ndarray] | None = None

    @property
    def policy(self) -> np.ndarray:
        """The current policy ``[T, S, A]`` (read-only view)."""
        return _read_only(self._policy)

    @property
    def mass(self) -> np.ndarray:
        """The current policy's flow ``[T+1, S]``."""
        return self._current()[0].mass

    def _current(self) -> tuple[Exploitability, np.ndarray]:
        if self._state is None:
            grid = self.grid
            mass = grid.forward(self._policy)
            running, terminal = grid.rewards(mass)
            q, v = grid.evaluate(self._policy, running, terminal)
            actions, v_best = grid.best_response(running, terminal)
            value, best_value = float(grid.initial_mass @ v[0]), float(grid.initial_mass @ v_best[0])
            self._state = (Exploitability(best_value - value, value, best_value, mass, actions), q)
        return self._state

    def evaluate(self) -> GridIterate:
        """The current policy's record without updating it."""
        started = time.perf_counter()
        score = self._current()[0]
        return GridIterate.of(self._iteration, score, started)

    def iteration(self) -> GridIterate:
        """One mirror-descent update; returns the new policy's record."""
        started = time.perf_counter()
        _, q = self._current()
        self._logits += self.learning_rate * q
        z = self._logits - self._logits.max(-1, keepdims=True)
        p = np.exp(z)
        self._policy = p / p.sum(-1, keepdims=True)
        self._state = None
        self._iteration += 1
        score = self._current()[0]
        return GridIterate.of(self._iteration, score, started)
