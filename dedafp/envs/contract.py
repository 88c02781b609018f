"""The game contract: what every :class:`~dedafp.envs.base.MeanFieldGame` must satisfy, checked on any game.

``dedafp check-game GAME`` runs :func:`check_game` and prints one line per check. The checks:
attributes (dimensions, horizon, action bound, domain), shapes and dtypes of every function,
determinism under the explicit-noise convention (same noise, same next state), finite rewards,
states staying in the domain, the single Gymnasium env equal to the batched VecEnv step for step,
and Gymnasium's ``check_env``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dedafp.envs.base import Domain, MeanFieldGame
from dedafp.envs.registry import make_game

__all__ = ["ContractReport", "check_game"]


@dataclass
class ContractReport:
    """Outcome of every check: ``(name, passed, detail)``."""

    game: str
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    @property
    def failures(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.results if not ok]

    def lines(self) -> list[str]:
        """One line per check, then a verdict."""
        out = [f"{'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else "")
               for name, ok, detail in self.results]
        failed = sum(not ok for _, ok, _ in self.results)
        out.append(f"{self.game}: {len(self.results) - failed} passed, {failed} failed")
        return out


def _tensor_problem(value: Any, shape: tuple[int, ...], what: str) -> str | None:
    if not isinstance(value, torch.Tensor):
        return f"{what} must be a torch.Tensor, got {type(value).__name__}"
    if tuple(value.shape) != shape:
        return f"{what} has shape {tuple(value.shape)}, expected {shape}"
    if not value.is_floating_point():
        return f"{what} has dtype {value.dtype}, expected a floating-point dtype"
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        return f"{what} has {bad} non-finite entries (NaN or inf)"
    return None


class _Checker:
    def __init__(self, report: ContractReport) -> None:
        self.report = report

    def __call__(self, name: str, check: Callable[[], str | None]) -> bool:
        """Run one check; a problem string or an exception fails it (never stops the others)."""
        try:
            problem = check()
        except Exception as error:  # the contract reports a user's game's errors, it does not raise them
            problem = f"raised {type(error).__name__}: {error}"
        self.report.results.append((name, problem is None, problem or ""))
        return problem is None


def _reference_population(game: MeanFieldGame, agents: int, seed: int) -> Any:
    """What the agents respond to in the checks: the initial law held at every t (needs only
    ``initial_states``, so a faulty ``step`` is reported by the step checks, not here)."""
    from dedafp.population.particles import ParticlePopulation

    x0 = game.initial_states(max(agents, 256), torch.Generator().manual_seed(seed))
    return ParticlePopulation(x0.unsqueeze(0).expand(game.horizon + 1, *x0.shape).contiguous())


def check_game(game: str | MeanFieldGame, overrides: Mapping[str, Any] | None = None, agents: int = 64,
               seed: int = 0) -> ContractReport:
    """Check ``game`` (a reference or an instance) against the contract; never raises for the game's faults."""
    name = game if isinstance(game, str) else getattr(game, "name", type(game).__name__)
    report = ContractReport(str(name))
    check = _Checker(report)
    built: list[MeanFieldGame] = []

    def build() -> str | None:
        instance = make_game(game, overrides) if isinstance(game, str) else game
        if not isinstance(instance, MeanFieldGame):
            return f"not a MeanFieldGame: {type(instance).__name__}"
        built.append(instance)
        return None

    if not check("construct", build):
        return report
    g = built[0]
    n = agents

    def attributes() -> str | None:
        for attr in ("state_dim", "action_dim", "horizon"):
            value = getattr(g, attr, None)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"{attr} must be an integer >= 1, got {value!r}"
        bound = getattr(g, "action_bound", None)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound) or bound <= 0:
            return f"action_bound must be a finite number > 0, got {bound!r}"
        if not isinstance(g.domain, Domain):
            return f"domain must be a Domain, got {type(g.domain).__name__}"
        if g.domain.low is not None and len(g.domain.low) != g.state_dim:
            return f"domain has {len(g.domain.low)} coordinates, state_dim is {g.state_dim}"
        return None

    if not check("attributes", attributes):
        return report
    d, da, T = g.state_dim, g.action_dim, g.horizon
    generator = torch.Generator().manual_seed(seed)
    states: dict[str, torch.Tensor] = {}

    def initial() -> str | None:
        x = g.initial_states(n, generator)
        problem = _tensor_problem(x, (n, d), "initial_states(n)")
        if problem is None and not bool(g.domain.contains(x).all()):
            return f"{int((~g.domain.contains(x)).sum())} of {n} initial states lie outside the domain {g.domain}"
        states["x0"] = x
        return problem

    if not check("initial_states: shape, dtype, finite, in the domain", initial):
        return report
    fields: list[Any] = []

    def bind() -> str | None:
        fields.append(g.bind(_reference_population(g, n, seed)))
        return None

    if not check("bind a population", bind):
        return report
    fld = fields[0]

    def observation() -> str | None:
        obs = g.observation(0, states["x0"])
        problem = _tensor_problem(obs, (n, g.obs_dim), "observation(t, x)")
        if problem is None and obs.dtype != torch.float32:
            return f"observation dtype is {obs.dtype}, expected torch.float32"
        return problem

    check("observation: shape [n, obs_dim], float32", observation)

    def trajectory() -> str | None:
        x = states["x0"]
        actions = torch.Generator().manual_seed(seed + 1)
        for t in range(T):
            a = (2 * torch.rand(n, da, generator=actions) - 1) * g.action_bound
            noise = torch.randn(n, d, generator=generator)
            r = g.reward(t, x, a, fld)
            problem = _tensor_problem(r, (n,), f"reward at t={t}")
            if problem:
                return problem
            nxt = g.step(t, x, a, fld, noise)
            problem = _tensor_problem(nxt, (n, d), f"step at t={t}")
            if problem:
                return problem
            again = g.step(t, x.clone(), a.clone(), fld, noise.clone())
            if not torch.equal(nxt, again):
                gap = float((nxt - again).abs().max())
                return f"step at t={t} is not deterministic given the noise (max diff {gap:.3g})"
            outside = ~g.domain.contains(nxt)
            free = getattr(g, "in_free_space", None)
            if callable(free):
                outside |= ~free(nxt)
            if bool(outside.any()):
                return f"{int(outside.sum())} of {n} states left the domain at t={t + 1}"
            x = nxt
        return _tensor_problem(g.terminal_reward(x, fld), (n,), "terminal_reward")

    check("a horizon of random actions: shapes, determinism given noise, finite rewards, states in the domain",
          trajectory)
    population = _reference_population(g, n, seed)

    def single_equals_batched() -> str | None:
        from dedafp.envs.gym_env import MeanFieldEnv
        from dedafp.envs.vec_env import BatchedMeanFieldVecEnv

        single = MeanFieldEnv(g, population)
        batched = BatchedMeanFieldVecEnv(g, population, 1, seed=seed)
        obs, _ = single.reset(seed=seed)
        batched.seed(seed)
        vec_obs = batched.reset()
        actions = np.random.default_rng(seed).uniform(-1, 1, size=(T, da)).astype(np.float32)
        for t in range(T):
            if not np.allclose(obs, vec_obs[0], atol=1e-5):
                return f"observations differ at t={t}: single {obs} vs batched {vec_obs[0]}"
            obs, reward, terminated, truncated, _ = single.step(actions[t])
            vec_obs, vec_reward, dones, infos = batched.step(actions[t][None])
            if not math.isclose(reward, float(vec_reward[0]), rel_tol=1e-4, abs_tol=1e-5):
                return f"rewards differ at t={t}: single {reward} vs batched {float(vec_reward[0])}"
            if bool(terminated) != bool(dones[0]):
                return f"episode end differs at t={t}: single {terminated} vs batched {bool(dones[0])}"
            if truncated:
                return f"the single env truncates at t={t} (the horizon is a termination)"
        if not terminated:
            return "the episode did not end at the horizon"
        return None

    check("single env equals batched VecEnv step for step", single_equals_batched)

    def gymnasium_check_env() -> str | None:
        from gymnasium.utils.env_checker import check_env

        from dedafp.envs.gym_env import MeanFieldEnv

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_env(MeanFieldEnv(g, population), skip_render_check=True)
        return None

    check("gymnasium check_env", gymnasium_check_env)
    return report
