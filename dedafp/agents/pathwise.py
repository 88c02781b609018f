"""Pathwise best responses: back-propagate the return through simulated trajectories.

Every game is a pure torch function of batched tensors whose randomness is an explicit standard
normal ``noise`` (:mod:`dedafp.envs.base`). For a deterministic policy ``a = bound · tanh(f_θ(obs))``
(``obs = game.observation(t, x)``) the return of one agent is then a function of θ, its start state
and its noise; with the noise drawn and held fixed (reparameterisation), the gradient of the
Monte Carlo mean return of many agents is an unbiased estimate of the gradient of the expected
return wherever the dynamics and rewards are differentiable (back-propagation through time, the
"analytic" or "stochastic value" gradient of Heess et al., *Learning Continuous Control Policies by
Stochastic Value Gradients*, NeurIPS 2015, SVG(∞)). The population is frozen: its field
(``game.bind(population)``) enters the rewards, and a density reward differentiates the population
model's ``log_prob`` in ``x`` (the flow, the kernel estimate, the grid cache and the exact Gaussian
are all differentiable in ``x``); only the policy's parameters are updated, no gradient accumulates
in the population model.

What the gradient does at the games' kinks:
    * LQ: none; the only non-linearity is the policy's ``tanh`` bound.
    * Beach bar: the reflection at 0 and 1 and ``|x - b|`` are piecewise linear; the gradient is
      exact except on a set of measure zero (unbiased).
    * Four rooms: a move that touches a wall or leaves the square is rejected (``x_{t+1} = x``).
      On a rejected step the gradient sees ``∂x_{t+1}/∂a = 0`` and ``∂x_{t+1}/∂x = I``; on an
      accepted one ``∂x_{t+1}/∂a = dt``. The return jumps where a proposal starts or stops
      touching a wall; that jump has no pathwise derivative, so the estimate is the gradient with
      the set of rejected steps held fixed: biased near walls, blind to a door unless the density
      reward's own gradient leads there. ``dedafp.benchmarks.best_response`` measures the share of
      rejected steps and the bias against a finite difference with common noise.

Usage::

    config = BestResponseConfig(algorithm="pathwise", pathwise_steps=600)
    responder = PathwiseBestResponder(game, config, device="cpu", seed=0)
    policy = responder.learn(population)          # a PathwisePolicy (plain torch, no SB3)
    policy.mean_action(3, x)                      # [n, action_dim]
    responder.history                             # mean training return of every Adam step
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, final

import torch
from torch import Tensor, nn

from dedafp.agents.policy import BestResponder, DeterministicPolicy
from dedafp.envs.base import MeanFieldGame
from dedafp.population.base import PopulationModel

if TYPE_CHECKING:
    from dedafp.agents.best_response import BestResponseConfig

__all__ = ["PathwiseBestResponder", "PathwisePolicy", "check_exploring_law", "policy_network", "start_schedule"]


def policy_network(game: MeanFieldGame, hidden: int, layers: int, generator_seed: int) -> nn.Sequential:
    """An MLP ``obs_dim -> hidden (x layers, tanh) -> action_dim``, initialised from ``generator_seed``.

    The last layer starts near zero (weights scaled by 0.01), so the first policy plays ``a ≈ 0``.
    The global torch RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        sizes = [game.obs_dim] + [hidden] * layers
        modules: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            modules += [nn.Linear(n_in, n_out), nn.Tanh()]
        last = nn.Linear(sizes[-1], game.action_dim)
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.zero_()
        return nn.Sequential(*modules, last)


@final
class PathwisePolicy(DeterministicPolicy):
    """``a = bound · tanh(net(game.observation(t, x)))``: the pathwise best response, deterministic.

    Plain torch modules only, so a snapshot pickles and reloads without stable-baselines3.
    ``t`` is an int or a tensor ``[n]``.
    """

    def __init__(self, net: nn.Module, game: MeanFieldGame) -> None:
        self.net = net
        self.game = game
        self.action_bound = game.action_bound

    def action(self, t: int | Tensor, x: Tensor) -> Tensor:
        """Differentiable action ``[n, action_dim]`` in physical units (the training path)."""
        device = next(self.net.parameters()).device
        obs = self.game.observation(t, x).to(device)
        return (torch.tanh(self.net(obs)) * self.action_bound).to(x.device)

    @torch.no_grad()
    def mean_action(self, t: int | Tensor, x: Tensor) -> Tensor:
        return self.action(t, x)


def start_schedule(game: MeanFieldGame, n: int, exploring_starts: float, start_times: float,
                   generator: torch.Generator, device: torch.device) -> tuple[Tensor, Tensor]:
    """Start times ``[n]`` (int64) and exploring flags ``[n]`` (bool) of ``n`` training agents.

    The last ``round(exploring_starts · n)`` agents are exploring; in each of the two groups the first
    ``round(start_times · size)`` agents start at ``t ~ Uniform{0..T-1}``, the others at 0.
    """
    exploring = torch.zeros(n, dtype=torch.bool, device=device)
    n_explore = round(exploring_starts * n)
    exploring[n - n_explore:] = True
    timed = torch.zeros(n, dtype=torch.bool, device=device)
    for start, size in ((0, n - n_explore), (n - n_explore, n_explore)):
        timed[start:start + round(start_times * size)] = True
    times = torch.zeros(n, dtype=torch.long, device=device)
    count = int(timed.sum())
    if count:
        times[timed] = torch.randint(game.horizon, (count,), generator=generator, device=device)
    return times, exploring


def check_exploring_law(game: MeanFieldGame, exploring_starts: float) -> None:
    """``ValueError`` at construction, not at the first call, if ``exploring_starts > 0`` on a game without
    an exploring law."""
    if exploring_starts > 0:
        try:
            game.exploring_states(1, torch.Generator().manual_seed(0))
        except NotImplementedError as error:
            raise ValueError(str(error)) from error


class PathwiseBestResponder(BestResponder):
    """Best responses by gradient ascent on the simulated mean return (Adam, clipped gradients).

    Each Adam step simulates ``pathwise_agents`` agents for one episode with fresh noise against the
    frozen population's field and back-propagates their mean return into the policy network
    (``hidden`` x ``layers``, tanh). Agents start from μ_0, from ``game.exploring_states`` (a share
    ``exploring_starts``), and a share ``start_times`` of each group at ``t ~ Uniform{0..T-1}`` with
    ``x`` drawn from the frozen population at that t (or from the exploring law); a late starter
    earns rewards from its start time on. With ``warm_start`` the network of the previous call is
    trained on (``pathwise_warm_steps`` steps) instead of a fresh one (``pathwise_steps``); each call
    has a fresh Adam and, with ``lr_decay``, a learning rate decayed linearly to 0.

    Each call's noise comes from its own seed, ``seed + 1000 · calls``: two calls see different
    noise, the same seed reproduces a run, and :meth:`state_dict` (network and call count)
    resumes one.

    Attributes:
        history: mean training return (true reward units, start-time agents included) of every Adam
            step of the last call.
        grad_norms: gradient norm before clipping of every Adam step of the last call.
        calls: number of completed calls.
    """

    def __init__(self, game: MeanFieldGame, config: BestResponseConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        if config.algorithm != "pathwise":
            raise ValueError(f"PathwiseBestResponder needs algorithm 'pathwise', got {config.algorithm!r}")
        check_exploring_law(game, config.exploring_starts)
        self.game = game
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.net: nn.Sequential | None = None
        self.calls = 0
        self.history: list[float] = []
        self.grad_norms: list[float] = []

    def call_seed(self) -> int:
        """Seed of the next call: ``seed + 1000 · calls`` (its noise, and a fresh network's initialisation)."""
        return self.seed + 1000 * self.calls

    def _fresh_net(self, seed: int) -> nn.Sequential:
        c = self.config
        return policy_network(self.game, c.hidden, c.layers, seed).to(self.device)

    def simulate(self, policy: PathwisePolicy, field: Any, population: PopulationModel, n: int,
                 generator: torch.Generator) -> Tensor:
        """Returns ``[n]`` of ``n`` agents playing ``policy`` for one episode, differentiable in its parameters.

        Agents with a late start time ``s`` are simulated from t = 0 like the others (their states
        before ``s`` are discarded, gradient included) so that every step is one batched call with
        an int time; their returns count from ``s`` on.
        """
        c, game, device = self.config, self.game, self.device
        times, exploring = start_schedule(game, n, c.exploring_starts, c.start_times, generator, device)
        x = torch.empty(n, game.state_dim, device=device)
        plain = ~exploring
        x[plain] = game.initial_states(int(plain.sum()), generator, device)
        if bool(exploring.any()):
            x[exploring] = game.exploring_states(int(exploring.sum()), generator, device)
        returns = torch.zeros(n, device=device)
        for t in range(game.horizon):
            if t > 0:
                starting = times == t
                count = int(starting.sum())
                if count:
                    x = torch.where(starting.unsqueeze(1), self._start_states(t, starting, exploring, population,
                                                                              generator, x), x)
            a = policy.action(t, x)
            reward = game.reward(t, x, a, field)
            returns = returns + torch.where(times <= t, reward, torch.zeros_like(reward))
            x = game.step(t, x, a, field, torch.randn(x.shape, generator=generator, device=device))
        return returns + game.terminal_reward(x, field)

    def _start_states(self, t: int, starting: Tensor, exploring: Tensor, population: PopulationModel,
                      generator: torch.Generator, like: Tensor) -> Tensor:
        """``[n, d]`` states (only the rows of ``starting`` matter): μ_t of the population or the exploring law."""
        out = torch.zeros_like(like)
        with torch.no_grad():
            from_population = starting & ~exploring
            k = int(from_population.sum())
            if k:
                out[from_population] = population.sample(t, k, generator=generator).to(out)
            k = int((starting & exploring).sum())
            if k:
                out[starting & exploring] = self.game.exploring_states(k, generator, self.device).to(out)
        return out

    def learn(self, population: PopulationModel) -> PathwisePolicy:
        c = self.config
        seed = self.call_seed()
        generator = torch.Generator(device=self.device).manual_seed(seed)
        field = self.game.bind(population)
        steps = c.pathwise_steps
        if self.net is None or not c.warm_start:
            self.net = self._fresh_net(seed)
        else:
            steps = c.pathwise_warm_steps
        policy = PathwisePolicy(self.net, self.game)
        params = list(self.net.parameters())
        optimizer = torch.optim.Adam(params, lr=c.pathwise_lr)
        self.history, self.grad_norms = [], []
        for step in range(steps):
            if c.lr_decay:
                for group in optimizer.param_groups:
                    group["lr"] = c.pathwise_lr * (1.0 - step / steps)
            returns = self.simulate(policy, field, population, c.pathwise_agents, generator)
            mean = returns.mean()
            if not torch.isfinite(mean):
                raise FloatingPointError(f"non-finite pathwise return at Adam step {step} in {self.game.name}")
            # Gradients of the policy only: the population model's parameters (a flow) stay untouched.
            grads = torch.autograd.grad(-mean, params)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
            norm = torch.nn.utils.clip_grad_norm_(params, c.pathwise_max_grad_norm)
            optimizer.step()
            self.history.append(float(mean.detach()))
            self.grad_norms.append(float(norm))
        self.calls += 1
        snapshot = copy.deepcopy(self.net).eval().requires_grad_(False)
        return PathwisePolicy(snapshot, self.game)

    def state_dict(self) -> dict[str, Any]:
        """The network (None before the first call) and the call count: enough to resume a run."""
        return {"net": None if self.net is None else self.net.state_dict(), "calls": self.calls}

    def load_state_dict(self, state: dict[str, Any], population: PopulationModel | None = None) -> None:
        """Restore :meth:`state_dict` into a responder built with the same game and config.

        ``population`` (the responders' common signature) is not needed here.
        """
        self.calls = int(state["calls"])
        if state["net"] is None:
            self.net = None
            return
        self.net = self._fresh_net(self.seed)
        self.net.load_state_dict(state["net"])

