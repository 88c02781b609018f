"""The average policy: a Gaussian MLP over (t, x) fitted by behavioural cloning.

Fictitious play's average policy is the occupancy-weighted mixture of all best responses so far.
DEDA-FP represents it by one network fitted by maximum likelihood (Gaussian NLL) to the
``(t, x, a)`` samples every best response contributed (its *played* actions, never training noise).
:class:`FictitiousPlayBuffer` keeps those samples per iteration and draws minibatches giving every
iteration the same total weight, which is what fictitious play's uniform average requires.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from dedafp.common.validation import Rule, validated
from dedafp.envs.base import MeanFieldGame


@dataclass(frozen=True)
@validated("average_policy")
class AveragePolicyConfig:
    """Network and training budget of the behaviour-cloned average policy.

    Attributes:
        hidden: width of each hidden layer (>= 1).
        layers: number of hidden layers (>= 1).
        steps: Adam steps per refit (>= 0); the network is warm-started across iterations.
        batch_size: samples per step (>= 1).
        lr: Adam learning rate (> 0), cosine-decayed within each refit.
        buffer_capacity: maximum samples kept over all iterations (None: unbounded). When full,
            every iteration is subsampled to the same share, so the weighting stays uniform.
        warm_start: continue from the previous fit instead of refitting from the initial weights.
            Off by default: after a fit to one deterministic best response the learned spread is
            tiny, and warm-started refits then stall far from the mixture (measured on lq2d: 27
            vs 0.56 exploitability after two exact best responses).
        initial_std: action standard deviation of the untrained policy, in units of
            ``action_bound`` (> 0); small, so the initial policy is close to ``a = 0``.
        beta: β of the β-NLL loss in [0, 1] (0: plain NLL). The minimiser is the same (conditional
            mean and variance); β > 0 only speeds up fitting the mean where the spread is wide.
            Used with ``components = 1`` only.
        components: Gaussian components of the action distribution (>= 1). One is the paper's
            choice; several let the average keep apart best responses that go different ways
            from the same state (a single Gaussian averages "left" and "right" into "straight on").
        fixed_std: ``"auto"`` (default): a fixed 0.02 where the run's best responses are deep RL (``ppo``,
            ``sac``) and one component is cloned, else learned (:func:`resolve_fixed_std`, called by
            :func:`~dedafp.config.load_config` and by the loop; an ``AveragePolicy`` built on its own learns it).
            None (the paper's choice): the standard deviation is learned by maximum likelihood.
            A number in (0, 1): the standard deviation is fixed at that many
            ``action_bound`` and only the mean E[a | t, x] is fitted (the loss is then a squared
            error). As dt -> 0 the population's flow depends on the policy only through that mean
            (Fokker-Planck); at finite dt the mean policy lacks the Var(a | t, x)·dt² part of each
            step's variance (on lq1d, dt = 0.1: 5% too little population variance at T against
            0.6% for a learned spread). It pays where best responses disagree and walls reject
            steps: one Gaussian spread wide between "up through one door" and "right through
            another" proposes steps none of them takes, and the squared error fits the mean fast
            where the NLL's mean gradient is damped by the spread. Measured on four-rooms (buffer
            of 5 exact best responses; worst error in mass per room at T against their exact
            average): 0.03-0.06 with ``fixed_std = 0.05``, 0.12-0.35 with a learned spread. And
            where deep-RL best responses disagree by their own noise (PPO on a unimodal equilibrium),
            a learned spread follows that disagreement and plays it as noise: with PPO responses the
            mean-only clone (0.02) ended lower on all three games measured (crowd_circle 0.0051 against
            0.0066 at k = 10 over 3 seeds; beach bar 0.327 / 0.393 against 0.449 / 0.827; lq2d 0.302
            against 0.359), hence ``"auto"``.
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "hidden": ">= 1", "layers": ">= 1", "steps": ">= 0", "batch_size": ">= 1", "lr": "> 0",
        "buffer_capacity": ">= 1", "initial_std": "(0, 1)", "beta": "[0, 1]", "components": ">= 1",
        "fixed_std": ("auto", "(0, 1)")}

    hidden: int = 64
    layers: int = 2
    steps: int = 1500
    batch_size: int = 2048
    lr: float = 3e-3
    buffer_capacity: int | None = None
    warm_start: bool = False
    initial_std: float = 0.01
    beta: float = 0.5
    components: int = 1
    fixed_std: float | str | None = "auto"

    def __post_init__(self) -> None:
        """fixed_std needs a single component."""
        if _fixed(self.fixed_std) and self.components != 1:
            raise ValueError(f"average_policy.fixed_std needs components = 1, got components = {self.components}")


#: ``average_policy.fixed_std="auto"`` resolves to this spread for these best responders (else to a learned one).
AUTO_FIXED_STD = 0.02
MEAN_ONLY_RESPONDERS = ("ppo", "sac")


def _fixed(value: float | str | None) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_fixed_std(config: AveragePolicyConfig, responder: str) -> AveragePolicyConfig:
    """``config`` with ``fixed_std="auto"`` replaced: :data:`AUTO_FIXED_STD` for one component cloned from
    :data:`MEAN_ONLY_RESPONDERS`' best responses, else None (learned); other values unchanged."""
    if config.fixed_std != "auto":
        return config
    mean_only = responder in MEAN_ONLY_RESPONDERS and config.components == 1
    return dataclasses.replace(config, fixed_std=AUTO_FIXED_STD if mean_only else None)


class FictitiousPlayBuffer:
    """``(t, x, a)`` samples grouped by fictitious-play iteration, sampled with equal iteration weights.

    A minibatch index first draws an iteration uniformly, then a sample of that iteration, so the
    weighting is right whatever the chunks' sizes. With a ``capacity``, adding the k-th chunk
    subsamples every chunk to at most ``capacity // k`` samples (uniformly, without replacement).

    ``newest_weight`` (None: fictitious play's 1/k, the default) gives the k-th chunk the share
    ``max(newest_weight, 1/k)`` of the average when it is added, the older ones keeping theirs in
    proportion (damped fictitious play, :mod:`dedafp.algorithms.damped`); 1 keeps only the newest.
    """

    def __init__(self, capacity: int | None = None, generator: torch.Generator | None = None,
                 newest_weight: float | None = None) -> None:
        if newest_weight is not None and (isinstance(newest_weight, bool) or not isinstance(newest_weight, (int, float))
                                          or not (math.isfinite(newest_weight) and 0 < newest_weight <= 1)):
            raise ValueError(f"newest_weight must be None or a number in (0, 1], got {newest_weight!r}")
        self.capacity = capacity
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.newest_weight = None if newest_weight is None else float(newest_weight)
        #: Share of each stored iteration in the average (sums to 1; uniform without ``newest_weight``).
        self.weights: list[float] = []
        self.times: list[Tensor] = []
        self.states: list[Tensor] = []
        self.actions: list[Tensor] = []
        # The stored samples concatenated once per change, not once per minibatch: concatenating at
        # every draw made a cloning step cost O(buffer), i.e. cloning grew linearly with k.
        self._flat: tuple[Tensor, Tensor, Tensor] | None = None

    def __len__(self) -> int:
        """Number of iterations stored."""
        return len(self.times)

    @property
    def sizes(self) -> list[int]:
        """Number of samples kept for each iteration."""
        return [t.shape[0] for t in self.times]

    def add(self, times: Tensor, states: Tensor, actions: Tensor) -> None:
        """Append one iteration's samples: ``times [n]`` ints, ``states [n, d]``, ``actions [n, d_a]``."""
        if not (times.shape[0] == states.shape[0] == actions.shape[0] > 0):
            raise ValueError(f"times, states and actions must share a non-zero first dimension, got "
                             f"{tuple(times.shape)}, {tuple(states.shape)}, {tuple(actions.shape)}")
        if not (torch.isfinite(states).all() and torch.isfinite(actions).all()):
            raise FloatingPointError("best-response samples contain NaN or inf")
        self._flat = None
        self.times.append(times.long().cpu())
        self.states.append(states.float().cpu())
        self.actions.append(actions.float().cpu())
        k = len(self.times)
        share = 1.0 / k if self.newest_weight is None else max(self.newest_weight, 1.0 / k)
        self.weights = [(1.0 - share) * w for w in self.weights] + [share]
        if self.capacity is not None:
            share = max(1, self.capacity // len(self.times))
            for i, size in enumerate(self.sizes):
                if size > share:
                    keep = torch.randperm(size, generator=self.generator)[:share]
                    self.times[i], self.states[i], self.actions[i] = (
                        self.times[i][keep], self.states[i][keep], self.actions[i][keep])

    def sample(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """A minibatch ``(times, states, actions)`` of ``n`` samples, iteration j drawn with ``weights[j]``."""
        if not self.times:
            raise RuntimeError("the buffer is empty")
        sizes = torch.tensor(self.sizes)
        offsets = torch.cumsum(sizes, 0) - sizes
        if self.newest_weight is None:
            iteration = torch.randint(len(self.times), (n,), generator=self.generator)
        else:
            iteration = torch.multinomial(torch.tensor(self.weights, dtype=torch.float64), n, replacement=True,
                                          generator=self.generator)
        within = (torch.rand(n, generator=self.generator) * sizes[iteration]).long()
        index = offsets[iteration] + within
        if self._flat is None:
            self._flat = (torch.cat(self.times), torch.cat(self.states), torch.cat(self.actions))
        times, states, actions = self._flat
        return times[index], states[index], actions[index]

    def state_dict(self) -> dict:
        """The stored samples and the sampler's generator state."""
        return {"times": self.times, "states": self.states, "actions": self.actions,
                "capacity": self.capacity, "generator": self.generator.get_state(),
                "newest_weight": self.newest_weight, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.times, self.states, self.actions = state["times"], state["states"], state["actions"]
        self._flat = None
        self.capacity = state["capacity"]
        self.generator.set_state(state["generator"])
        # Checkpoints written before the weighting option hold uniform buffers.
        self.newest_weight = state.get("newest_weight")
        k = len(self.times)
        self.weights = state["weights"] if "weights" in state else [1.0 / k for _ in range(k)]


class AveragePolicy(nn.Module):
    """Gaussian MLP policy ``a ~ N(μ(t, x), diag σ(t, x)²)`` on the game's observation of (t, x),
    or a mixture of ``components`` such Gaussians with state-dependent weights.

    Internally actions are divided by ``action_bound``; :meth:`distribution` returns physical units
    (for a mixture: its mean and per-coordinate standard deviation).
    """

    LOG_STD_MIN, LOG_STD_MAX = -7.0, 1.0

    def __init__(self, game: MeanFieldGame, config: AveragePolicyConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        super().__init__()
        self.game = game
        self.config = config
        self.action_bound = game.action_bound
        self.action_dim = game.action_dim
        self.seed = seed
        self.net = self._initial_network().to(device)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)

    def _initial_network(self) -> nn.Sequential:
        """The seeded initial network: mean 0, std ``initial_std · action_bound`` everywhere."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers: list[nn.Module] = []
            width = self.game.obs_dim
            for _ in range(self.config.layers):
                layers += [nn.Linear(width, self.config.hidden), nn.Tanh()]
                width = self.config.hidden
            k, d = self.config.components, self.action_dim
            layers.append(nn.Linear(width, k * 2 * d + (k if k > 1 else 0)))
            net = nn.Sequential(*layers)
            head = net[-1]
            nn.init.zeros_(head.bias)
            if k == 1:
                nn.init.zeros_(head.weight)
            else:   # small random weights break the symmetry between components
                nn.init.normal_(head.weight, std=0.01)
            nn.init.constant_(head.bias[k * d:2 * k * d], math.log(self.config.initial_std))
        return net

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def split_output(self, out: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The network's output ``[n, width]`` as means and log-stds ``[n, K, d_a]`` (units of action_bound)
        and component logits ``[n, K]`` (None for one component)."""
        k, d = self.config.components, self.action_dim
        mean = out[:, :k * d].reshape(-1, k, d)
        fixed = self.config.fixed_std
        if _fixed(fixed):
            log_std = torch.full_like(mean, math.log(float(fixed)))      # type: ignore[arg-type]
        else:
            log_std = out[:, k * d:2 * k * d].reshape(-1, k, d).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        return mean, log_std, (out[:, 2 * k * d:] if k > 1 else None)

    def _normalised(self, t: int | Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Component log-weights ``[n, K]``, means and log-stds ``[n, K, d_a]`` (units of action_bound)."""
        mean, log_std, logits = self.split_output(self.net(self.game.observation(t, x.to(self.device))))
        log_weight = torch.log_softmax(logits, dim=-1) if logits is not None else mean.new_zeros(mean.shape[0], 1)
        return log_weight, mean, log_std

    @torch.no_grad()
    def distribution(self, t: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std ``[n, action_dim]`` of the action at time ``t`` for states ``x`` ``[n, d]``."""
        log_weight, mean, log_std = self._normalised(t, x)
        weight = log_weight.exp().unsqueeze(-1)
        mixture_mean = (weight * mean).sum(1)
        second = (weight * (mean**2 + (2 * log_std).exp())).sum(1)
        std = (second - mixture_mean**2).clamp_min(0).sqrt()
        return mixture_mean * self.action_bound, std * self.action_bound

    @torch.no_grad()
    def sample(self, t: int, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Actions ``[n, action_dim]`` drawn from the (mixture) distribution, unclipped."""
        log_weight, mean, log_std = self._normalised(t, x)
        rows = torch.arange(mean.shape[0], device=mean.device)
        component = (torch.multinomial(log_weight.exp(), 1, generator=generator)[:, 0]
                     if self.config.components > 1 else torch.zeros_like(rows))
        noise = torch.randn(mean.shape[0], self.action_dim, generator=generator, device=mean.device)
        return (mean[rows, component] + log_std[rows, component].exp() * noise) * self.action_bound

    def predict(self, t: int, x: Tensor, deterministic: bool = False,
                generator: torch.Generator | None = None) -> Tensor:
        """Actions ``[n, action_dim]`` for a batch of states at time ``t`` (clipped to the bound)."""
        from dedafp.agents.policy import act
        return act(self, t, x, deterministic, generator)

    def _losses(self, times: Tensor, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample NLL ``[n]`` (normalised units) and the training loss (β-NLL for one component)."""
        log_weight, mean, log_std = self._normalised(times.to(self.device), states)
        target = (actions.to(self.device) / self.action_bound).unsqueeze(1)
        per_dim = 0.5 * ((target - mean) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
        nll = -torch.logsumexp(log_weight - per_dim.sum(-1), dim=1)
        if self.config.components > 1:
            return nll, nll.mean()
        # β-NLL (Seitzer et al., 2022): weighting each term by σ^(2β), held constant, keeps the
        # mean's gradient from vanishing where the spread is large; same minimiser.
        weight = (2 * self.config.beta * log_std).exp().detach()
        return nll, (weight * per_dim).sum(-1).mean()

    def nll(self, times: Tensor, states: Tensor, actions: Tensor) -> Tensor:
        """Mean negative log-likelihood (nats, physical action units) of the samples."""
        nll, _ = self._losses(times, states, actions)
        return nll.mean() + self.action_dim * math.log(self.action_bound)

    def fit(self, buffer: FictitiousPlayBuffer, steps: int | None = None) -> float:
        """Behavioural cloning on ``buffer``. Returns the mean NLL of the last 10% of steps.

        Starts from the initial weights unless ``config.warm_start``.
        """
        steps = self.config.steps if steps is None else steps
        if not self.config.warm_start:
            self.net.load_state_dict(self._initial_network().state_dict())
            self.optimizer = torch.optim.Adam(self.parameters(), lr=self.config.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, max(steps, 1))
        losses = []
        offset = self.action_dim * math.log(self.action_bound)
        for _ in range(steps):
            nll, loss = self._losses(*buffer.sample(self.config.batch_size))
            if not torch.isfinite(loss):
                raise FloatingPointError("behavioural-cloning loss became non-finite")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            schedule.step()
            losses.append(nll.mean().item() + offset)
        tail = losses[-max(1, steps // 10):]
        return float(np.mean(tail)) if losses else float("nan")

    def save(self, path: str, optimizer: bool = True) -> None:
        """Save config and weights, and the optimizer state unless ``optimizer=False`` (a third of the size).

        Load with :meth:`load` given the same game.
        """
        state = {"config": dataclasses.asdict(self.config), "net": self.net.state_dict()}
        if optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        torch.save(state, path)

    @classmethod
    def load(cls, path: str, game: MeanFieldGame, device: torch.device | str = "cpu") -> AveragePolicy:
        """Rebuild a policy saved with :meth:`save`."""
        state = torch.load(path, map_location=device, weights_only=False)
        policy = cls(game, AveragePolicyConfig(**state["config"]), device)
        policy.net.load_state_dict(state["net"])
        if "optimizer" in state:
            policy.optimizer.load_state_dict(state["optimizer"])
        return policy


@torch.no_grad()
def action_spreads(average: AveragePolicy, best_responses: list, buffer: FictitiousPlayBuffer,
                   per_iteration: int = 256) -> dict[str, float]:
    """Why the cloned average is as wide as it is: its spread against the best responses' disagreement.

    At the first ``per_iteration`` stored states of every iteration (no random draw): ``bc/spread``, the
    average's action standard deviation (mean over states and action coordinates, physical units), and
    ``bc/br_spread``, the standard deviation of the stored best responses' deterministic actions at the
    same (t, x), weighted as the average weights them. A maximum-likelihood Gaussian matches the second
    where the best responses disagree, and playing it adds that much action noise at every step, which
    no best response (each deterministic) has: the mixture is an episode mixture, the Gaussian a
    state-wise one.
    """
    if len(best_responses) != len(buffer):
        raise ValueError(f"{len(best_responses)} best responses for a buffer of {len(buffer)} iterations")
    times = torch.cat([t[:per_iteration] for t in buffer.times])
    states = torch.cat([x[:per_iteration] for x in buffer.states])
    weights = torch.tensor(buffer.weights, dtype=torch.float32)
    spread, br_spread = torch.zeros(times.shape[0]), torch.zeros(times.shape[0])
    for t in times.unique().tolist():
        rows = times == t
        x = states[rows].to(average.device)
        spread[rows] = average.distribution(t, x)[1].mean(-1).cpu()
        actions = torch.stack([policy.mean_action(t, x).cpu() for policy in best_responses])   # [k, n, d_a]
        mean = torch.einsum("k,knd->nd", weights, actions)
        variance = torch.einsum("k,knd->nd", weights, (actions - mean) ** 2)
        br_spread[rows] = variance.sqrt().mean(-1)
    return {"bc/spread": float(spread.mean()), "bc/br_spread": float(br_spread.mean())}
