"""Backward best responses: neural dynamic programming through the simulated game, from t = T down to 0.

Every game is a pure torch function of batched tensors with explicit noise (:mod:`dedafp.envs.base`),
so a simulator can be started at any ``(t, x)``. Against a frozen population this makes the best
response a finite-horizon control problem that backward induction solves with regression on
sampled states instead of a grid (the "deep backward dynamic programming" of Huré, Pham,
Bachouch and Langrené, *Deep neural networks algorithms for stochastic control problems on finite
horizon: convergence analysis*, SIAM J. Numer. Anal. 59(1), 2021; fitted value iteration in the
sense of Munos and Szepesvári, JMLR 2008). For t = T-1, ..., 0:

    states    x_i ~ a mix of the population's μ_t and the game's exploring law (the whole domain)
    actions   a_j on a lattice over [-bound, bound]^m, refined around the best one
    Q_t(x, a) = r_t(x, a) + mean_k V_{t+1}(step(t, x, a, ±ξ_k))        (antithetic noise pairs)
    a*_i      = argmax_j Q_t(x_i, a_j)
    π(t, x)   = a network regressed on a*_i over every (s, i) sampled so far, s >= t
    V_t       = a network regressed on the realised return of a*_i at t, then π, from x_i
    (V_T is the terminal reward itself)

Regressing V_t on max_j Q_t instead (plain fitted value iteration) overshoots: the max picks the
value network's own overshoots at density edges, and the bias compounds over the horizon (a third
of the return over 40 four-rooms steps). The realised returns are those of a policy actually
played, so V_t is a (noisy, unbiased) value of π, as in the performance iteration of Huré et al.

Only the game's own ``step``, ``reward`` and ``terminal_reward`` are called, with the frozen field:
no gradient of the dynamics is taken, so walls, reflections and rejected moves (where the pathwise
gradient is biased, :mod:`dedafp.agents.pathwise`) cost nothing, and a door is found wherever the
state sample reaches the room behind it. What it needs instead: a state sample that covers where
the best response goes (the exploring law, ``exploring_starts``), a lattice fine enough for the
action (``backward_actions`` candidates per refinement round) and a value network that resolves the
value's jumps across thin walls (``backward_hidden``). The cost grows with the lattice, so it suits
games with few action dimensions (every shipped game has at most two).

Usage::

    config = BestResponseConfig(algorithm="backward", exploring_starts=0.5)
    responder = BackwardBestResponder(game, config, device="cpu", seed=0)
    policy = responder.learn(population)      # a PathwisePolicy (plain torch, no SB3)
    responder.fit_errors                      # relative regression error of every V_t, t = T-1..0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import torch
from torch import Tensor, nn

from dedafp.agents.pathwise import PathwisePolicy, check_exploring_law, policy_network
from dedafp.agents.policy import BestResponder
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel
from dedafp.population.grid_cache import reward_table

if TYPE_CHECKING:
    from dedafp.agents.best_response import BestResponseConfig

__all__ = ["BackwardBestResponder", "action_lattice", "sample_states", "lattice_q_values", "fit_value", "value_network",
           "ValueFunction", "RepeatedRows", "FourierFeatures"]


def action_lattice(action_dim: int, points: int, center: Tensor, half_width: float | Tensor) -> Tensor:
    """``points ** action_dim`` actions ``[K, action_dim]`` on a regular lattice ``center ± half_width``."""
    axis = torch.linspace(-1.0, 1.0, points, device=center.device)
    grids = torch.meshgrid(*([axis] * action_dim), indexing="ij")
    offsets = torch.stack([g.reshape(-1) for g in grids], dim=1)
    return center + offsets * half_width


class FourierFeatures(nn.Module):
    """``obs -> (obs, sin(π j u), cos(π j u))`` for every state coordinate ``u = obs[:, 1:]`` (in [-1, 1]) and
    ``j = 1..frequencies``: fixed features that let a small network resolve a value's sharp walls and doors
    (an MLP on raw coordinates learns them slowly, Tancik et al., NeurIPS 2020). Periodic on [-1, 1], so a
    periodic domain's wrap-around is smooth."""

    def __init__(self, frequencies: int) -> None:
        super().__init__()
        self.register_buffer("angular", torch.pi * torch.arange(1, frequencies + 1, dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        phase = (obs[:, 1:, None] * self.angular).flatten(1)
        return torch.cat([obs, torch.sin(phase), torch.cos(phase)], dim=1)


def value_network(game: MeanFieldGame, hidden: int, layers: int, seed: int, outputs: int = 1,
                  frequencies: int = 0) -> nn.Sequential:
    """An MLP ``obs_dim -> hidden (x layers, SiLU) -> outputs``, initialised from ``seed`` without touching the
    global torch RNG; with ``frequencies`` > 0 it reads :class:`FourierFeatures` of the observation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inputs = game.obs_dim + 2 * frequencies * (game.obs_dim - 1)
        sizes = [inputs] + [hidden] * layers
        modules: list[nn.Module] = [FourierFeatures(frequencies)] if frequencies else []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            modules += [nn.Linear(n_in, n_out), nn.SiLU()]
        return nn.Sequential(*modules, nn.Linear(sizes[-1], outputs))


@final
class ValueFunction:
    """``V_t(x) = scale · net(obs) + shift``: the regressed value of one time step, targets standardised.

    ``[n]`` for one fitted target; ``[n, h]`` for ``h`` targets fitted together (``shift``, ``scale`` ``[h]``).
    """

    def __init__(self, net: nn.Module, game: MeanFieldGame, t: int, shift: float | Tensor,
                 scale: float | Tensor) -> None:
        self.net, self.game, self.t, self.shift, self.scale = net, game, t, shift, scale

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        out = self.net(self.game.observation(self.t, x))
        if not isinstance(self.shift, Tensor):
            out = out.squeeze(1)
        return out * self.scale + self.shift


class RepeatedRows(PopulationModel):
    """A population whose ``log_prob`` answers a batch of states repeated in blocks once per distinct state.

    The lattice repeats every sampled state once per candidate action; a density reward then asks
    for the same log-density ``K`` times. When ``repeats`` is set and the batch is such blocks, the
    wrapped model is queried once per block; otherwise it is queried as is. Everything else is the
    wrapped model's.
    """

    def __init__(self, population: PopulationModel) -> None:
        self.population = population
        self.dim, self.horizon = population.dim, population.horizon
        self.repeats = 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.population, name)

    def log_prob(self, x: Tensor, t: int) -> Tensor:
        k = self.repeats
        if k > 1 and x.shape[0] % k == 0:
            blocks = x.reshape(-1, k, x.shape[1])
            if bool((blocks == blocks[:, :1]).all()):
                return self.population.log_prob(blocks[:, 0], t).repeat_interleave(k)
        return self.population.log_prob(x, t)

    def sample(self, t: int, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.population.sample(t, n, generator=generator)

    def mean(self, t: int) -> Tensor:
        return self.population.mean(t)

    @property
    def device(self) -> torch.device:
        return self.population.device


def sample_states(game: MeanFieldGame, population: PopulationModel, t: int, n: int, exploring: float,
                  generator: torch.Generator, device: torch.device) -> Tensor:
    """``n`` states ``[n, d]`` at time ``t``: the first from the population's μ_t, the last ``round(exploring · n)``
    from the game's exploring law."""
    n_explore = round(exploring * n)
    parts = []
    if n - n_explore:
        parts.append(population.sample(t, n - n_explore, generator=generator).to(device))
    if n_explore:
        parts.append(game.exploring_states(n_explore, generator, device))
    return torch.cat(parts).float()


def lattice_q_values(game: MeanFieldGame, t: int, x: Tensor, actions: Tensor, field: Any, population: RepeatedRows,
                     next_value: Callable[[Tensor], Tensor], noise: Tensor) -> Tensor:
    """``[n, K]`` Q-values ``r_t(x, a) + mean V_{t+1}(step(t, x, a, ±ξ))`` of states ``x`` ``[n, d]`` for
    per-state candidates ``actions`` ``[n, K, m]``; ``[n, K, h]`` where ``next_value`` gives ``h`` values a state.

    ``noise`` is ``[pairs, n, d]``; each pair is played as +ξ and -ξ, the same for every candidate of a
    state. ``population`` is the one ``field`` reads, so a density reward is queried once per state.
    """
    n, k, _ = actions.shape
    xs = x.repeat_interleave(k, dim=0)
    flat = actions.reshape(n * k, -1)
    population.repeats = k
    reward = game.reward(t, xs, flat, field)
    population.repeats = 1
    total: Tensor | float = 0.0
    for xi in noise:                                       # [n, d] each: +ξ and -ξ, shared by a state's candidates
        for sign in (1.0, -1.0):
            draw = (sign * xi).repeat_interleave(k, dim=0)
            total = total + next_value(game.step(t, xs, flat, field, draw))
    mean = torch.as_tensor(total) / (2 * noise.shape[0])
    if mean.dim() == 2:
        reward = reward.unsqueeze(1)
    return (reward + mean).reshape(n, k, *mean.shape[1:])


def fit_value(game: MeanFieldGame, t: int, x: Tensor, target: Tensor, warm: nn.Module | None, seed: int,
              generator: torch.Generator, *, hidden: int, layers: int, lr: float, steps: int,
              batch_size: int, frequencies: int = 0) -> tuple[ValueFunction, float]:
    """``V_t`` regressed on ``target`` ``[n]`` (or ``h`` targets ``[n, h]`` by one network with ``h`` outputs) at
    states ``x`` (standardised targets, Adam decayed linearly to 0, warm-started from a copy of ``warm``); returns
    it and the relative mean squared error of the fit (the mean over targets)."""
    outputs = 1 if target.dim() == 1 else target.shape[1]
    net = copy.deepcopy(warm) if warm is not None else value_network(game, hidden, layers, seed, outputs, frequencies)
    net = net.to(x.device).train().requires_grad_(True)
    if target.dim() == 1:
        shift: float | Tensor = float(target.mean())
        scale: float | Tensor = float(target.std().clamp_min(1e-6))
        y = ((target - shift) / scale).unsqueeze(1)
    else:
        shift, scale = target.mean(0), target.std(0).clamp_min(1e-6)
        y = (target - shift) / scale
    obs = game.observation(t, x)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    batch = min(batch_size, x.shape[0])
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1.0 - step / steps)
        index = torch.randint(x.shape[0], (batch,), generator=generator, device=x.device)
        loss = (net(obs[index]) - y[index]).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        error = float((net(obs) - y).pow(2).mean())
    return ValueFunction(net, game, t, shift, scale), error


class BackwardBestResponder(BestResponder):
    """Best responses by neural backward induction over sampled states and a refined action lattice.

    Each call samples ``backward_states`` states per time step (a share ``exploring_starts`` from
    ``game.exploring_states``, the rest from the frozen population's μ_t), scores
    ``backward_actions`` lattice actions per state (then ``backward_refine`` rounds of a lattice
    half as wide around each state's best), with ``backward_noise`` antithetic noise draws per
    (state, action), and regresses a value network per time step (``backward_hidden`` x ``layers``,
    warm-started from the next time's, ``backward_fit_steps`` Adam steps) on the realised returns of
    the best action followed by the policy built so far. The policy is one ``hidden`` x ``layers``
    tanh network regressed on the best actions of every (t, x) sampled so far: ``1/T`` of
    ``backward_policy_steps`` after each time step (the realised returns of earlier times play it), all
    of them again at the end; warm-started from the previous call's with ``warm_start``.
    Each call's samples come from ``seed + 1000 · calls``; :meth:`state_dict` resumes a run.

    Attributes:
        fit_errors: relative mean squared error of each V_t regression of the last call (t = T-1..0).
        policy_error: relative mean squared error of the policy regression of the last call.
        values: the regressed V_t of the last call, by t = 1..T-1 (for diagnostics).
        calls: number of completed calls.
    """

    def __init__(self, game: MeanFieldGame, config: BestResponseConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        if config.algorithm != "backward":
            raise ValueError(f"BackwardBestResponder needs algorithm 'backward', got {config.algorithm!r}")
        check_exploring_law(game, config.exploring_starts)
        points = round(config.backward_actions ** (1.0 / game.action_dim))
        if points < 2:
            raise ValueError(f"best_response.backward_actions={config.backward_actions} gives fewer than 2 lattice "
                             f"points per action coordinate for {game.action_dim} coordinates; use at least "
                             f"{2 ** game.action_dim}")
        self.game = game
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.points = points
        self.net: nn.Sequential | None = None
        self.calls = 0
        self.fit_errors: list[float] = []
        self.policy_error = math.nan
        self.values: dict[int, ValueFunction] = {}

    def _q_values(self, t: int, x: Tensor, actions: Tensor, field: Any, population: RepeatedRows,
                  next_value: Any, noise: Tensor) -> Tensor:
        return lattice_q_values(self.game, t, x, actions, field, population, next_value, noise)

    def _best_actions(self, t: int, x: Tensor, field: Any, population: RepeatedRows, next_value: Any,
                      generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Best lattice action ``[n, m]`` and its Q-value ``[n]`` at every state, lattice refined."""
        c, game = self.config, self.game
        bound = game.action_bound
        pairs = max(1, c.backward_noise // 2)
        n = x.shape[0]
        best_q = torch.empty(n, device=self.device)
        best_a = torch.empty(n, game.action_dim, device=self.device)
        center = torch.zeros(1, 1, game.action_dim, device=self.device)
        half_width = bound
        chunk = max(1, c.backward_chunk // (self.points ** game.action_dim))
        for start in range(0, n, chunk):
            xc = x[start:start + chunk]
            center_c = center.expand(xc.shape[0], 1, -1)
            width = half_width
            for _ in range(c.backward_refine + 1):
                # The same noise for every candidate of a state: Q-differences between its actions carry
                # no noise of their own (common random numbers), and ±ξ cancels the first-order term.
                round_noise = torch.randn(pairs, xc.shape[0], game.state_dim, generator=generator, device=self.device)
                candidates = action_lattice(game.action_dim, self.points, center_c, width).clamp(-bound, bound)
                q = self._q_values(t, xc, candidates, field, population, next_value, round_noise)
                value, index = q.max(dim=1)
                center_c = candidates.gather(1, index.view(-1, 1, 1).expand(-1, 1, game.action_dim))
                width = width / (self.points - 1)
            best_q[start:start + chunk] = value
            best_a[start:start + chunk] = center_c[:, 0]
        return best_a, best_q

    def _fit_value(self, t: int, x: Tensor, target: Tensor, warm: nn.Module | None, seed: int,
                   generator: torch.Generator) -> tuple[ValueFunction, float]:
        c = self.config
        return fit_value(self.game, t, x, target, warm, seed, generator, hidden=c.backward_hidden, layers=c.layers,
                         lr=c.backward_lr, steps=c.backward_fit_steps, batch_size=c.batch_size)

    def _train_policy(self, optimizer: torch.optim.Optimizer, obs: Tensor, target: Tensor, steps: int,
                      lr: float, generator: torch.Generator) -> None:
        """``steps`` Adam steps of the policy regression ``tanh(net(obs)) ≈ target`` (targets in [-1, 1])."""
        assert self.net is not None
        batch = min(self.config.batch_size, obs.shape[0])
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = lr * (1.0 - step / steps)
            index = torch.randint(obs.shape[0], (batch,), generator=generator, device=self.device)
            loss = (torch.tanh(self.net(obs[index])) - target[index]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def _realised_returns(self, t: int, x: Tensor, action: Tensor, field: Any, generator: torch.Generator) -> Tensor:
        """``[n]`` returns from ``(t, x)``: ``action`` at t, then the current policy network to the horizon."""
        game = self.game
        policy = PathwisePolicy(self.net, game)
        total = torch.zeros(x.shape[0], device=self.device)
        a = action
        for s in range(t, game.horizon):
            if s > t:
                a = policy.action(s, x)
            total = total + game.reward(s, x, a, field)
            x = game.step(s, x, a, field, torch.randn(x.shape, generator=generator, device=self.device))
        return total + game.terminal_reward(x, field)

    def _density_table(self, population: PopulationModel) -> PopulationModel:
        """The population the rewards read: a log-density table of it on a bounded low-dimensional domain.

        Rewards are queried some 10^6 times per call (every lattice row's next state, every realised
        return's step); a table built once (``backward_density_nodes`` nodes per t) answers them by
        interpolation. Its error is the grid cache's (:mod:`dedafp.population.grid_cache`). A population
        that is a table already (the loop's, ``fp.reward_density_nodes``) is used as is.
        """
        return reward_table(population, self.game.domain, self.config.backward_density_nodes)

    def learn(self, population: PopulationModel) -> PathwisePolicy:
        c, game = self.config, self.game
        seed = self.seed + 1000 * self.calls
        generator = torch.Generator(device=self.device).manual_seed(seed)
        repeated = RepeatedRows(self._density_table(population))
        field = game.bind(repeated)
        if self.net is None or not c.warm_start:
            self.net = policy_network(game, c.hidden, c.layers, seed).to(self.device)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=c.backward_lr)
        per_time = max(1, c.backward_policy_steps // game.horizon)
        # V_T is the terminal reward itself; one density query per next state.
        next_value: Any = lambda x: game.terminal_reward(x, field)  # noqa: E731
        warm: nn.Module | None = None
        obs_pool, target_pool = [], []
        self.fit_errors, self.values = [], {}
        for t in reversed(range(game.horizon)):
            x = sample_states(game, population, t, c.backward_states, c.exploring_starts, generator, self.device)
            with torch.no_grad():
                best_a, best_q = self._best_actions(t, x, field, repeated, next_value, generator)
            if not bool(torch.isfinite(best_q).all()):
                raise FloatingPointError(f"non-finite backward Q-value at t={t} in {game.name}")
            obs_pool.append(game.observation(t, x))
            target_pool.append(best_a / game.action_bound)
            obs, target = torch.cat(obs_pool), torch.cat(target_pool)
            self._train_policy(optimizer, obs, target, per_time, c.backward_lr, generator)
            if t > 0:
                # The value regressed is that of a policy actually played (best action now, the policy
                # network later), not the max of the Q estimate: a max over estimates that overshoot
                # (a smooth network across a density edge) compounds by up to a third of the return
                # over 40 steps on four-rooms, and drives the greedy action towards the overshoot.
                returns = self._realised_returns(t, x, best_a, field, generator)
                value, error = self._fit_value(t, x, returns, warm, seed + t, generator)
                warm, next_value = value.net, value
                self.fit_errors.append(error)
                self.values[t] = value
        self._train_policy(optimizer, obs, target, c.backward_policy_steps, c.backward_lr, generator)
        with torch.no_grad():
            fitted = torch.tanh(self.net(obs))
            self.policy_error = float((fitted - target).pow(2).mean() / target.var().clamp_min(1e-12))
        self.calls += 1
        snapshot = copy.deepcopy(self.net).eval().requires_grad_(False)
        return PathwisePolicy(snapshot, game)

    def state_dict(self) -> dict[str, Any]:
        """The policy network (a copy; None before the first call) and the call count: enough to resume a run."""
        return {"net": None if self.net is None else copy.deepcopy(self.net.state_dict()), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any], population: PopulationModel | None = None) -> None:
        """Restore :meth:`state_dict` into a responder built with the same game and config."""
        self.calls = int(state["calls"])
        if state["net"] is None:
            self.net = None
            return
        self.net = policy_network(self.game, self.config.hidden, self.config.layers, self.seed).to(self.device)
        self.net.load_state_dict(state["net"])
