"""The game interface every environment implements.

A game is a finite-horizon mean-field game written as pure functions of batched tensors. The
Gymnasium env and the batched SB3 ``VecEnv`` (``dedafp.envs.vec_env``) are thin adapters over it,
and so are the fictitious-play rollouts and the reference solvers' Monte Carlo checks.

Conventions (every game):
    * time is an integer ``t`` in ``0..horizon``; decisions are taken at ``t < horizon`` and the
      terminal reward is paid at ``t == horizon``;
    * ``x`` has shape ``[n, state_dim]``, ``a`` has shape ``[n, action_dim]`` (physical units,
      already inside ``[-action_bound, action_bound]``), rewards have shape ``[n]``;
    * randomness enters only through an explicit standard-normal ``noise`` of shape
      ``[n, state_dim]``, so that two implementations can be compared step for step;
    * what the dynamics and rewards need from the population is computed once per frozen
      population model by :meth:`MeanFieldGame.bind` (e.g. the LQ game's mean flow), not per agent;
    * the state space is a :class:`Domain`: all of R^d, a box (walls inside it are the game's
      business: ``in_free_space``), or a periodic box (the circle, the torus), on which
      :meth:`MeanFieldGame.step` returns wrapped states.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dedafp.population.base import PopulationModel

DOMAIN_KINDS = ("euclidean", "box", "periodic")


@dataclass(frozen=True)
class Domain:
    """Where states live: ``euclidean`` (R^d), ``box`` ([low, high]) or ``periodic`` ([low, high) wrapped).

    Attributes:
        kind: one of :data:`DOMAIN_KINDS`.
        low / high: per-coordinate bounds (None for ``euclidean``); ``low < high``.
    """

    kind: str = "euclidean"
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in DOMAIN_KINDS:
            raise ValueError(f"domain kind must be one of {DOMAIN_KINDS}, got {self.kind!r}")
        if self.kind == "euclidean":
            if self.low is not None or self.high is not None:
                raise ValueError("a euclidean domain has no bounds (low = high = None)")
            return
        if self.low is None or self.high is None or len(self.low) != len(self.high):
            raise ValueError(f"a {self.kind} domain needs low and high of one length, got {self.low}, {self.high}")
        if any(not lo < hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError(f"domain low must be < high in every coordinate, got {self.low}, {self.high}")

    @classmethod
    def box(cls, low: tuple[float, ...], high: tuple[float, ...]) -> Domain:
        return cls("box", tuple(map(float, low)), tuple(map(float, high)))

    @classmethod
    def periodic(cls, low: tuple[float, ...], high: tuple[float, ...]) -> Domain:
        return cls("periodic", tuple(map(float, low)), tuple(map(float, high)))

    def contains(self, x: Tensor) -> Tensor:
        """Bool ``[n]``: the state lies in the domain (``[low, high)`` per coordinate when periodic)."""
        if self.kind == "euclidean":
            return torch.isfinite(x).all(-1)
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device)
        high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device)
        upper = x < high if self.kind == "periodic" else x <= high
        return ((x >= low) & upper).all(-1)

    def wrap(self, x: Tensor) -> Tensor:
        """``x`` mapped into ``[low, high)`` coordinate-wise (periodic domains; others unchanged)."""
        if self.kind != "periodic":
            return x
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device)
        width = torch.as_tensor(self.high, dtype=x.dtype, device=x.device) - low
        return low + torch.remainder(x - low, width)


class MeanFieldGame(abc.ABC):
    """A discrete-time, finite-horizon mean-field game with continuous states and actions."""

    #: The state space (R^d unless a game says otherwise).
    domain: Domain = Domain()

    #: Name of the game, as used by the CLI (``lq2d``, ``four_rooms``, ...).
    name: str
    #: Dimension of the state ``x``.
    state_dim: int
    #: Dimension of the action ``a``.
    action_dim: int
    #: Number of decision steps ``T``; states run over ``t = 0..T``.
    horizon: int
    #: Actions live in the box ``[-action_bound, action_bound]^action_dim``.
    action_bound: float

    @property
    def obs_dim(self) -> int:
        """Length of an observation: normalised time followed by the normalised state."""
        return 1 + self.state_dim

    @abc.abstractmethod
    def initial_states(self, n: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> Tensor:
        """Draw ``n`` initial states from the initial law μ_0. Returns ``[n, state_dim]``."""

    def exploring_states(self, n: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> Tensor:
        """Draw ``n`` states spread over the whole domain (exploring starts of best responses).

        A best response is a policy of ``(t, x)`` for every ``x``; starting some training episodes
        everywhere lets deep RL find rewards far from μ_0's support. Returns ``[n, state_dim]``.
        """
        raise NotImplementedError(f"{self.name} has no exploring-start distribution; use exploring_starts=0")

    @abc.abstractmethod
    def bind(self, population: PopulationModel) -> Any:
        """What the dynamics and rewards need from a frozen population model (the 'field').

        Called once per population model; the result is passed to :meth:`step`, :meth:`reward`
        and :meth:`terminal_reward`.
        """

    @abc.abstractmethod
    def step(self, t: int, x: Tensor, a: Tensor, field: Any, noise: Tensor) -> Tensor:
        """Next states ``x_{t+1}`` of shape ``[n, state_dim]`` given states, actions and noise."""

    @abc.abstractmethod
    def reward(self, t: int, x: Tensor, a: Tensor, field: Any) -> Tensor:
        """Running reward ``r_t(x, a)`` of shape ``[n]`` (larger is better)."""

    @abc.abstractmethod
    def terminal_reward(self, x: Tensor, field: Any) -> Tensor:
        """Terminal reward ``g(x_T)`` of shape ``[n]``."""

    def consistent_field(self, t: int, x: Tensor, field: Any) -> Any:
        """The field with what :meth:`step` reads at time ``t`` replaced by statistics of ``x``.

        Used to simulate a population whose dynamics feel its *own* distribution (the mean-field
        consistent flow of a policy, or the finite-N game). The default suits games whose dynamics
        do not depend on the population (rewards may): it returns ``field`` unchanged.
        """
        return field

    @abc.abstractmethod
    def normalise_state(self, x: Tensor) -> Tensor:
        """Affine map of states to roughly ``[-1, 1]`` for the observation; same shape as ``x``."""

    def observation(self, t: int | Tensor, x: Tensor) -> Tensor:
        """Observation ``(2 t / T - 1, normalise_state(x))`` of shape ``[n, obs_dim]``, float32.

        ``t`` is an int (one time for the whole batch) or a tensor of shape ``[n]``.
        """
        n = x.shape[0]
        t_col = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(n).reshape(n, 1)
        return torch.cat([2.0 * t_col / self.horizon - 1.0, self.normalise_state(x).float()], dim=1)


def check_overrides(config_class: type, label: str, overrides: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the allowed fields if ``overrides`` has a key ``config_class`` lacks."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {label} parameter(s) {unknown}; allowed: {sorted(fields)}")


def check_number(name: str, value: object, low: float | None = None, strict: bool = True,
                 high: float | None = None) -> float:
    """``value`` as a float after checking it is a finite number ``> low`` (``>= low`` unless ``strict``)
    and ``<= high``; raises ``ValueError`` naming the field otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return float(value)
