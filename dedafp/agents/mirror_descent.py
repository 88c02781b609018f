"""The parts of online mirror descent on continuous states: a softmax policy over an action lattice
whose logits accumulate the Q-functions of the policies played, and the policy evaluation that feeds it.

Online mirror descent (Pérolat, Perrin, Elie, Laurière, Piliouras, Geist, Tuyls and Pietquin,
*Scaling up mean field games with online mirror descent*, AAMAS 2022) plays
``π^k(a | t, x) ∝ exp(y^k(t, x, a))`` with ``y^k = y^{k-1} + η Q^{π^{k-1}, μ^{k-1}}``: every iteration
evaluates the current policy against its own population and adds its Q-function to the logits. The
deep version (D-MOMD, Laurière, Perrin, Girgin, Muller, Jain, Cabannes, Piliouras, Pérolat, Élie,
Pietquin and Geist, *Scalable deep reinforcement learning algorithms for mean field games*, ICML 2022)
regresses the accumulated logits with a network, for discrete actions. Here the actions are a lattice
of the continuous action box (by default the reference grid's velocities), and the Q-function comes from
neural backward policy evaluation through the simulated game, as in :mod:`dedafp.agents.backward`:

    for t = T-1, ..., 0:
        x_i    ~ a mix of μ_t and the game's exploring law
        Q_t(x_i, a_j) = r_t(x_i, a_j) + mean V_{t+1}(step(t, x_i, a_j, ±ξ))       (antithetic noise)
        Q*_t(x_i, a_j) = the same with V*_{t+1}
        V_t, V*_t <- one two-output network regressed on Σ_j π(a_j | t, x_i) Q_t(x_i, a_j), max_j Q*_t(x_i, a_j)
        target  y(t, x_i) + η (Q_t(x_i, ·) - V_t(x_i)),  shifted to max 0 and floored at -logit_floor
    y <- the logit network, warm-started, regressed on every target
    greedy(t, x) = argmax_j r_t(x, a_j) + mean V*_{t+1}(step(t, x, a_j, ±ξ))    (the iteration's best response)

(the V* output and the lookahead with ``omd.optimal_value``; without it the greedy policy is a copy of y
trained to classify argmax_j Q_t(x_i, a_j), the greedy policy of Q^π).

V_t is π's value, an expectation: what the mirror step needs, with no overshoot. V*_t is fitted value
iteration (Munos and Szepesvári, JMLR 2008) on the same samples, next states and network, so the best
response costs a second output: the greedy policy of Q^π alone is one step of policy iteration from
π^{k-1}, and measured 27 short of the exact response at k = 5 on four-rooms where V*'s is 3 short. The
value networks read :class:`~dedafp.agents.backward.FourierFeatures` of the state where ``omd.fourier`` > 0
(8 on four-rooms resolve the walls with a fifth of the steps).

Shifting a state's logits changes nothing (the softmax is invariant); the floor drops actions whose
probability is below e^{-logit_floor} anyway and keeps the regression targets bounded as k grows.

Usage::

    learner = MirrorDescentLearner(game, MirrorDescentConfig(), learning_rate=30.0, device="cpu", seed=0)
    metrics = learner.update(population)       # one mirror step against the frozen population
    learner.policy.sample(t=0, x=x)            # actions of π^k (lattice points)
    learner.greedy.mean_action(t=0, x=x)       # the greedy policy of V* (with update(..., greedy=True))

The greedy policy is the loop's best response to the frozen population as far as its values know, so its
return against that population, beside the exact best response's and the evaluated policy's, measures the
values' quality the way ``br/shortfall`` and ``br/gain`` measure a fictitious-play best response.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from dedafp.agents.backward import (
    RepeatedRows,
    action_lattice,
    fit_value,
    lattice_q_values,
    sample_states,
    value_network,
)
from dedafp.agents.policy import DeterministicPolicy
from dedafp.common.validation import Rule, validated
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel
from dedafp.population.grid_cache import TabulatedFunction

__all__ = ["MirrorDescentConfig", "LatticePolicy", "GreedyLatticePolicy", "LookaheadLatticePolicy",
           "MirrorDescentLearner", "logit_network", "default_lattice_points"]


@dataclass(frozen=True)
@validated("omd")
class MirrorDescentConfig:
    """Online mirror descent (config section ``omd``, :mod:`dedafp.algorithms.mirror_descent`).

    Attributes:
        learning_rate: η > 0, the weight of each iteration's Q-function in the logits. Large: close to
            policy iteration; small: slow. None (default): the game's measured choice
            (:data:`dedafp.algorithms.mirror_descent.MEASURED_LEARNING_RATES`), else 1 with a warning.
        actions: lattice points per action coordinate (>= 2); None (default): the game's reference grid
            velocities where it declares a grid (0 is on the lattice), else 11.
        states: states sampled per time step for the policy evaluation (>= 16).
        exploring: share of them drawn from the game's exploring law, the rest from μ_t ([0, 1]; > 0 needs
            the game's ``exploring_states``). None (default): 0.5 where the game has an exploring law, else 0.
        noise: noise draws per (state, action) in the Q-value's expectation, in antithetic pairs (>= 2).
        hidden: width of the logit network, and of the value network unless ``value_hidden`` is set (>= 1).
        value_hidden: width of the value network (>= 1); None (default): ``hidden``.
        fourier: frequencies of the value network's Fourier features of the state (>= 0; 0: none).
        optimal_value: also fit V* (fitted value iteration) as a second output of the value network, and take as
            the greedy policy the one-step lookahead of V* (:class:`LookaheadLatticePolicy`, ``lookahead_noise``
            draws) instead of a classifier of argmax Q^π (:class:`GreedyLatticePolicy`). Changes π's fit.
        lookahead_noise: noise draws (antithetic pairs, >= 2) per (state, action) in the lookahead policy.
        lookahead_cells: cells per axis of the lookahead's tables of V* (>= 0; 0 or 1: the network itself). On
            four-rooms 128 gave the network's shortfall (2.02 against 1.91 ± 0.25 at k = 20) with a 3x cheaper
            rollout (7.0 s against 21.0 s).
        mirror_cells: cells per axis of the tables of V_{t+1} (both outputs) that the mirror step's lattice
            Q-values read (>= 0; 0 or 1: the network itself), built once per t after its fit. Changes π's fit.
        layers: hidden layers of both networks (>= 1).
        value_steps: Adam steps of each time step's value regression (>= 1).
        policy_steps: Adam steps of the logit regression per iteration (>= 1).
        lr: Adam learning rate of both regressions, decayed linearly to 0 (> 0).
        batch_size: minibatch size of both regressions (>= 1).
        logit_floor: logits below the state's maximum by more than this are floored there (> 0).
        chunk: (state, action, noise draw) rows scored per batched call, a memory bound (>= 1).
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "learning_rate": "> 0", "actions": ">= 2", "states": ">= 16", "exploring": "[0, 1]", "noise": ">= 2",
        "hidden": ">= 1", "value_hidden": ">= 1", "fourier": ">= 0", "lookahead_noise": ">= 2",
        "lookahead_cells": ">= 0", "mirror_cells": ">= 0",
        "layers": ">= 1", "value_steps": ">= 1", "policy_steps": ">= 1", "lr": "> 0",
        "batch_size": ">= 1", "logit_floor": "> 0", "chunk": ">= 1"}

    learning_rate: float | None = None
    actions: int | None = None
    states: int = 2048
    exploring: float | None = None
    noise: int = 4
    hidden: int = 128
    value_hidden: int | None = None
    fourier: int = 0
    optimal_value: bool = False
    lookahead_noise: int = 16
    lookahead_cells: int = 128
    mirror_cells: int = 0
    layers: int = 2
    value_steps: int = 300
    policy_steps: int = 2000
    lr: float = 3e-3
    batch_size: int = 512
    logit_floor: float = 20.0
    chunk: int = 200_000


def logit_network(game: MeanFieldGame, outputs: int, hidden: int, layers: int, seed: int) -> nn.Sequential:
    """:func:`~dedafp.agents.backward.value_network` with ``outputs`` logits and its last layer at zero: the
    first policy is uniform."""
    net = value_network(game, hidden, layers, seed, outputs)
    with torch.no_grad():
        net[-1].weight.zero_()
        net[-1].bias.zero_()
    return net


@final
class LatticePolicy:
    """``π(a_j | t, x) = softmax_j net(game.observation(t, x))_j`` over the lattice ``[K, m]`` of actions.

    Played by sampling a lattice point; :meth:`distribution` gives its per-coordinate mean and standard
    deviation (the deterministic action is the mean). Plain torch, so it pickles with a checkpoint.
    """

    def __init__(self, net: nn.Module, game: MeanFieldGame, lattice: Tensor) -> None:
        self.net, self.game, self.lattice = net, game, lattice
        self.action_bound = game.action_bound

    @torch.no_grad()
    def logits(self, t: int | Tensor, x: Tensor) -> Tensor:
        """``[n, K]`` logits at time ``t`` for states ``x`` ``[n, d]``."""
        return self.net(self.game.observation(t, x).to(self.lattice.device)).to(x.device)

    def probabilities(self, t: int | Tensor, x: Tensor) -> Tensor:
        """``[n, K]`` action probabilities."""
        return torch.softmax(self.logits(t, x), dim=1)

    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per-coordinate mean and standard deviation ``[n, m]`` of the lattice action."""
        p = self.probabilities(t, x)
        lattice = self.lattice.to(x.device)
        mean = p @ lattice
        var = p @ lattice.pow(2) - mean.pow(2)
        return mean, var.clamp_min(0.0).sqrt()

    def sample(self, t: int, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Lattice actions ``[n, m]`` drawn from π(· | t, x)."""
        index = torch.multinomial(self.probabilities(t, x), 1, generator=generator).squeeze(1)
        return self.lattice.to(x.device)[index]


@final
class GreedyLatticePolicy(DeterministicPolicy):
    """Plays the lattice action of largest score ``net(game.observation(t, x))``: a deterministic policy."""

    def __init__(self, net: nn.Module, game: MeanFieldGame, lattice: Tensor) -> None:
        self.net, self.game, self.lattice = net, game, lattice
        self.action_bound = game.action_bound

    @torch.no_grad()
    def mean_action(self, t: int, x: Tensor) -> Tensor:
        """The best-scored lattice action ``[n, m]`` at time ``t`` for states ``x`` ``[n, d]``."""
        index = self.net(self.game.observation(t, x).to(self.lattice.device)).argmax(1)
        return self.lattice[index].to(x.device)


@final
class LookaheadLatticePolicy(DeterministicPolicy):
    """Plays ``argmax_j r_t(x, a_j) + mean V_{t+1}(step(t, x, a_j, ±ξ))`` over the lattice ``[K, m]`` against one
    bound field: the one-step lookahead of ``values[t + 1]`` (``values[T]`` the terminal reward), a deterministic
    policy. Its noise pairs (``noise`` draws) come from its own generator, so playing it draws nothing from
    the rollout's.

    With ``cells`` (bounded domains of at most 3 dimensions) each ``values[t]``, ``t < T``, is tabulated on
    ``cells`` per axis the first time it is read and interpolated after (:class:`TabulatedFunction`): the
    lookahead reads it at every (agent, action, draw), far more points than the table has nodes."""

    def __init__(self, game: MeanFieldGame, lattice: Tensor, field: Any, population: RepeatedRows,
                 values: dict[int, Callable[[Tensor], Tensor]], noise: int = 4, seed: int = 0,
                 cells: int = 0) -> None:
        self.game, self.lattice, self.field, self.population, self.values = game, lattice, field, population, values
        self.noise, self.action_bound = noise, game.action_bound
        self.generator = torch.Generator(device=lattice.device).manual_seed(seed)
        self.cells = table_cells(game, cells)
        self._tables: dict[int, Callable[[Tensor], Tensor]] = {}

    def _value(self, t: int) -> Callable[[Tensor], Tensor]:
        if not self.cells or t == self.game.horizon:
            return self.values[t]                   # the terminal reward is read exactly
        if t not in self._tables:
            domain = self.game.domain
            self._tables[t] = TabulatedFunction(self.values[t], domain.low, domain.high, self.cells,
                                                self.lattice.device)
        return self._tables[t]

    @torch.no_grad()
    def mean_action(self, t: int, x: Tensor) -> Tensor:
        """The best lattice action ``[n, m]`` at time ``t`` for states ``x`` ``[n, d]``."""
        x = x.to(self.lattice.device)
        noise = torch.randn(self.noise // 2, x.shape[0], self.game.state_dim, generator=self.generator,
                            device=x.device)
        candidates = self.lattice.unsqueeze(0).expand(x.shape[0], -1, -1)
        q = lattice_q_values(self.game, t, x, candidates, self.field, self.population, self._value(t + 1), noise)
        return self.lattice[q.argmax(1)]


def table_cells(game: MeanFieldGame, cells: int) -> int:
    """``cells`` where a :class:`TabulatedFunction` of the state pays (a bounded domain of at most 3 dimensions,
    ``cells`` >= 2), else 0: read the function itself."""
    return cells if cells >= 2 and game.domain.kind != "euclidean" and game.state_dim <= 3 else 0


def _exploring_share(game: MeanFieldGame, exploring: float | None) -> float:
    """``exploring``, checked against the game's exploring law; None: 0.5 where the game has one, else 0."""
    from dedafp.agents.pathwise import check_exploring_law
    if exploring is not None:
        check_exploring_law(game, exploring)
        return exploring
    try:
        check_exploring_law(game, 0.5)
    except ValueError:
        return 0.0
    return 0.5


def default_lattice_points(game: MeanFieldGame, actions: int | None) -> int:
    """``actions``, else the game's reference grid velocities (``GameSpec.grid``), else 11."""
    if actions is not None:
        return actions
    from dedafp.envs.registry import spec_of
    spec = spec_of(game)
    grid = None if spec is None else spec.grid
    return int(grid["velocities"]) if grid and "velocities" in grid else 11


class MirrorDescentLearner:
    """The mirror step: evaluates the current :class:`LatticePolicy` against a frozen population and adds
    ``η Q`` to its logits (see the module docstring). Each call's samples come from ``seed + 1000 · calls``.

    Attributes:
        policy: the current policy π^k (uniform before the first call).
        greedy: the greedy policy of the last call's V* (``optimal_value``) or Q (None before a call with
            ``greedy=True``).
        calls: completed calls.
    """

    def __init__(self, game: MeanFieldGame, config: MirrorDescentConfig, learning_rate: float,
                 device: torch.device | str = "cpu", seed: int = 0) -> None:
        self.exploring = _exploring_share(game, config.exploring)
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"omd.learning_rate must be a finite number > 0, got {learning_rate!r}")
        self.game, self.config, self.learning_rate = game, config, float(learning_rate)
        self.device, self.seed = torch.device(device), seed
        points = default_lattice_points(game, config.actions)
        center = torch.zeros(1, game.action_dim, device=self.device)
        self.lattice = action_lattice(game.action_dim, points, center, game.action_bound)
        net = logit_network(game, self.lattice.shape[0], config.hidden, config.layers, seed).to(self.device)
        self.policy = LatticePolicy(net.eval().requires_grad_(False), game, self.lattice)
        self.value_hidden = config.value_hidden if config.value_hidden is not None else config.hidden
        self.greedy: GreedyLatticePolicy | LookaheadLatticePolicy | None = None
        self.mirror_cells = table_cells(game, config.mirror_cells)
        self.calls = 0

    @torch.no_grad()
    def _lattice_q(self, t: int, x: Tensor, field: Any, population: RepeatedRows, next_value: Any,
                   generator: torch.Generator) -> Tensor:
        """``[n, K]`` Q-values (``[n, K, 2]``: of π, of V*) of every lattice action per state, ``config.chunk``
        rows (state, action, draw) a call."""
        k = self.lattice.shape[0]
        chunk = max(1, self.config.chunk // (k * self.config.noise))
        out = []
        for start in range(0, x.shape[0], chunk):
            xc = x[start:start + chunk]
            noise = torch.randn(self.config.noise // 2, xc.shape[0], self.game.state_dim, generator=generator,
                                device=self.device)
            candidates = self.lattice.unsqueeze(0).expand(xc.shape[0], -1, -1)
            out.append(lattice_q_values(self.game, t, xc, candidates, field, population, next_value, noise))
        return torch.cat(out)

    def _read_through_table(self, value: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """``value`` tabulated on ``mirror_cells`` per axis where that is set: the lattice reads it at every
        (state, action, draw), tens of times more points than the table has nodes."""
        if not self.mirror_cells:
            return value
        domain = self.game.domain
        return TabulatedFunction(value, domain.low, domain.high, self.mirror_cells, self.device)

    def update(self, population: PopulationModel, greedy: bool = False) -> dict[str, float]:
        """One mirror step against ``population`` (held fixed); returns its diagnostics: ``omd/greedy_gap``
        (Σ_t mean over μ_t of max_a Q - V: the first-order gain of the greedy policy of Q, 0 at an equilibrium on
        the lattice), ``omd/entropy`` (mean policy entropy at μ_t), ``omd/value_error`` and ``omd/logit_error``
        (relative mean squared errors of the regressions). With ``greedy`` it also builds :attr:`greedy` (after
        the mirror step, so π^k is the same either way): the lookahead of V* with ``optimal_value``, else a
        classifier of argmax Q, reporting ``omd/greedy_agreement``, the share of sampled states where it plays it."""
        c, game = self.config, self.game
        generator = torch.Generator(device=self.device).manual_seed(self.seed + 1000 * self.calls)
        repeated = RepeatedRows(population)
        field = game.bind(repeated)
        two = c.optimal_value          # values carry (V, V*) columns; V_T = V*_T is the terminal reward
        next_value: Any = ((lambda x: game.terminal_reward(x, field).unsqueeze(1).expand(-1, 2)) if two  # noqa: E731
                           else (lambda x: game.terminal_reward(x, field)))
        optimal: dict[int, Callable[[Tensor], Tensor]] = {game.horizon: lambda x: game.terminal_reward(x, field)}
        warm: nn.Module | None = None
        n_population = c.states - round(self.exploring * c.states)
        observations, targets, labels, value_errors = [], [], [], []
        gap = entropy = 0.0
        for t in reversed(range(game.horizon)):
            x = sample_states(game, population, t, c.states, self.exploring, generator, self.device)
            both = self._lattice_q(t, x, field, repeated, next_value, generator)
            if not bool(torch.isfinite(both).all()):
                raise FloatingPointError(f"non-finite mirror-descent Q-value at t={t} in {game.name}")
            q = both[..., 0] if two else both
            logits = self.policy.logits(t, x)
            p = torch.softmax(logits, dim=1)
            v = (p * q).sum(1)
            if n_population:
                gap += float((q.max(1).values - v)[:n_population].mean())
                entropy += float(-(p * torch.log(p.clamp_min(1e-30))).sum(1)[:n_population].mean()) / game.horizon
            target = logits + self.learning_rate * (q - v.unsqueeze(1))
            target = (target - target.max(1, keepdim=True).values).clamp_min(-c.logit_floor)
            observations.append(game.observation(t, x))
            targets.append(target)
            if greedy and not two:
                labels.append(q.argmax(1))
            if t > 0:
                value_target = torch.stack([v, both[..., 1].max(1).values], 1) if two else v
                value, error = fit_value(game, t, x, value_target, warm,
                                         self.seed + t, generator, hidden=self.value_hidden, layers=c.layers,
                                         lr=c.lr, steps=c.value_steps, batch_size=c.batch_size,
                                         frequencies=c.fourier)
                warm, next_value = value.net, self._read_through_table(value)
                if two:
                    optimal[t] = lambda x, value=value: value(x)[:, 1]
                value_errors.append(error)
        observations = torch.cat(observations)
        logit_error = self._fit_logits(observations, torch.cat(targets), generator)
        metrics = {"omd/greedy_gap": gap, "omd/entropy": entropy, "omd/logit_error": logit_error,
                   "omd/value_error": sum(value_errors) / max(1, len(value_errors))}
        if greedy and two:
            self.greedy = LookaheadLatticePolicy(game, self.lattice, field, repeated, optimal, c.lookahead_noise,
                                                 self.seed + 1000 * self.calls + 1, c.lookahead_cells)
        elif greedy:
            metrics["omd/greedy_agreement"] = self._fit_greedy(observations, torch.cat(labels), generator)
        self.calls += 1
        return metrics

    def _fit_logits(self, obs: Tensor, target: Tensor, generator: torch.Generator) -> float:
        """Regress a copy of the logit network on ``target`` ``[N, K]``; it becomes the policy's. Returns the
        relative mean squared error of the fit (its softmax-invariant part: each row centred)."""
        centred = target - target.mean(1, keepdim=True)

        def loss(out: Tensor, index: Tensor) -> Tensor:
            return (out - out.mean(1, keepdim=True) - centred[index]).pow(2).mean()

        net = self._train_copy(obs, loss, generator)
        with torch.no_grad():
            out = net(obs)
            error = float((out - out.mean(1, keepdim=True) - centred).pow(2).mean() / centred.var().clamp_min(1e-12))
        self.policy = LatticePolicy(net, self.game, self.lattice)
        return error

    def _fit_greedy(self, obs: Tensor, labels: Tensor, generator: torch.Generator) -> float:
        """Train a copy of the new logit network (its argmax already near the accumulated Q's) to classify
        ``labels`` ``[N]`` (cross-entropy); it becomes :attr:`greedy`. Returns its agreement with the labels."""
        net = self._train_copy(obs, lambda out, index: nn.functional.cross_entropy(out, labels[index]), generator)
        with torch.no_grad():
            agreement = float((net(obs).argmax(1) == labels).float().mean())
        self.greedy = GreedyLatticePolicy(net, self.game, self.lattice)
        return agreement

    def _train_copy(self, obs: Tensor, loss: Callable[[Tensor, Tensor], Tensor],
                    generator: torch.Generator) -> nn.Module:
        """A copy of the policy's logit network after ``policy_steps`` Adam steps on ``loss(net(obs[index]), index)``
        over minibatches (learning rate decayed linearly to 0); returned frozen."""
        c = self.config
        net = copy.deepcopy(self.policy.net).train().requires_grad_(True)
        optimizer = torch.optim.Adam(net.parameters(), lr=c.lr)
        batch = min(c.batch_size, obs.shape[0])
        for step in range(c.policy_steps):
            for group in optimizer.param_groups:
                group["lr"] = c.lr * (1.0 - step / c.policy_steps)
            index = torch.randint(obs.shape[0], (batch,), generator=generator, device=self.device)
            value = loss(net(obs[index]), index)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        return net.eval().requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        """The logit network and the call count: enough to resume a run."""
        return {"net": copy.deepcopy(self.policy.net.state_dict()), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a learner built with the same game and config."""
        self.policy.net.load_state_dict(state["net"])
        self.calls = int(state["calls"])

