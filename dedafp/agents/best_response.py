"""Best responders: deep RL with stable-baselines3 (PPO or SAC), trained against a frozen population.

The agent observes ``(2t/T - 1, normalised x)`` in the natively batched
:class:`~dedafp.envs.vec_env.BatchedMeanFieldVecEnv`; the population enters only through the
game's field (the LQ mean flow, or the density in the rewards). The learned best response is
played deterministically (its mean action): fictitious play averages best responses, not their
exploration noise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.sac.policies import SACPolicy
from torch import Tensor, nn

from dedafp.agents.policy import BestResponder, DeterministicPolicy
from dedafp.common.validation import Rule, validated
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.vec_env import BatchedMeanFieldVecEnv
from dedafp.population.base import PopulationModel

__all__ = ["ALGORITHMS", "DEEP_RL", "BestResponder", "BestResponseConfig", "DeterministicPolicy", "MLPPolicy",
           "SB3BestResponder", "ScaledReward", "actor_network"]

ALGORITHMS = ("ppo", "sac", "riccati", "grid", "pathwise", "backward")
#: The deep-RL best responders (stable-baselines3); riccati and grid are exact, pathwise is
#: gradient ascent through the simulated game (:mod:`dedafp.agents.pathwise`), backward is neural
#: backward induction through it (:mod:`dedafp.agents.backward`).
DEEP_RL = ("ppo", "sac")


@dataclass(frozen=True)
@validated("best_response")
class BestResponseConfig:
    """How each iteration's best response is computed.

    Attributes:
        algorithm: ``"ppo"``, ``"sac"`` (stable-baselines3), ``"riccati"`` (exact, LQ only),
            ``"grid"`` (exact on the reference grid, density games only), ``"pathwise"``
            (back-propagation of the return through simulated trajectories,
            :class:`~dedafp.agents.pathwise.PathwiseBestResponder`) or ``"backward"`` (neural backward
            induction over sampled states and an action lattice,
            :class:`~dedafp.agents.backward.BackwardBestResponder`).
        total_steps: environment steps of the first best response (>= 1).
        warm_start: continue training the previous best response instead of starting afresh
            (PPO, SAC and pathwise).
        warm_steps: environment steps of later best responses when ``warm_start`` (>= 1).
        num_envs: agents stepped together in the batched VecEnv (>= 1).
        hidden: width of the actor and critic hidden layers (>= 1); also the pathwise policy's.
        layers: number of hidden layers (>= 1); also the pathwise policy's.
        lr: Adam learning rate of PPO and SAC (> 0); pathwise has ``pathwise_lr``.
        lr_decay: decay the learning rate linearly to 0 over each call (PPO, SAC and pathwise).
        gamma: discount (in (0, 1]); 1 is right for the finite-horizon games.
        n_steps: PPO rollout length per env (>= 1).
        batch_size: minibatch size (>= 1).
        n_epochs: PPO epochs per rollout (>= 1).
        log_std_init: PPO initial log standard deviation of the exploration noise.
        gae_lambda: PPO GAE λ in [0, 1].
        clip_range: PPO clip range (> 0).
        ent_coef: PPO entropy bonus (>= 0).
        buffer_size: SAC replay buffer size (>= 1).
        learning_starts: SAC steps before learning (>= 0).
        gradient_steps: SAC gradient steps per vector step (>= 1).
        exploring_starts: share of the training agents whose episodes start spread over the whole
            domain (``game.exploring_states``) instead of from μ_0, in [0, 1). A best response must be
            good from every state; in the density games the rewarding regions (empty rooms) lie
            behind doors that agents started in μ_0 rarely find by chance. Used by PPO, SAC and pathwise.
        start_times: share of the training agents, in [0, 1], that start their episodes at a time
            ``t ~ Uniform{0..T-1}`` instead of t = 0, with ``x`` drawn from the frozen population at
            that t (``population.sample(t, n)``), or from ``game.exploring_states`` for exploring
            agents (the share applies to both groups); each agent then runs to the horizon. A best
            response must be good at every (t, x) the average policy visits, not only along paths
            from μ_0. 0 (the default) keeps every episode from t = 0, exactly as before.
        reward_scale: the learner sees rewards multiplied by this (> 0). Returns of order 10
            make the critic's loss dominate PPO's clipped gradient norm; scaling them down lets
            the actor learn (the best response itself is unchanged by a positive scale).
        keep_best: after training, play whichever of the new and the stored best responses earns
            the most against the frozen population (deterministic returns, the same agents and
            noise for all). Deep RL sometimes returns a policy far worse than one it found before
            (four-rooms, PPO warm-started on a population that moved: return -68 where a stored
            response earns over 100); fictitious play with the better candidate stays a valid
            approximate best-response scheme. Costs one rollout per stored response.
        pathwise_steps: Adam steps of the first pathwise best response (and of every one without
            ``warm_start``), integer >= 1. One step simulates ``pathwise_agents`` whole episodes.
        pathwise_warm_steps: Adam steps of later pathwise best responses with ``warm_start`` (>= 1).
        pathwise_agents: agents simulated per Adam step (the Monte Carlo batch), integer >= 1.
        pathwise_lr: Adam learning rate of the pathwise policy (> 0).
        pathwise_max_grad_norm: the gradient of the mean return (reward units per parameter) is
            clipped to this Euclidean norm before each Adam step (> 0).
        backward_states: states sampled per time step by the backward responder (>= 1); a share
            ``exploring_starts`` from the game's exploring law, the rest from the population's μ_t.
        backward_actions: lattice actions scored per state and refinement round (>= 2 per action
            coordinate: ``round(backward_actions ** (1 / action_dim))`` points per coordinate).
        backward_refine: further rounds, each a lattice as wide as one spacing of the previous one
            around every state's best action (>= 0).
        backward_noise: noise draws per (state, action) in the Q-value's expectation, played as
            antithetic pairs ±ξ (even, >= 2).
        backward_hidden: width of the backward responder's value networks, one per time step (>= 1;
            ``layers`` deep); its policy network is ``hidden`` wide.
        backward_fit_steps: Adam steps of each time step's value regression (>= 1).
        backward_policy_steps: Adam steps of the policy regression on the best actions of every sampled
            (t, x), spread over the backward pass (1/T of them after each time step) and as many again
            at its end (>= 1).
        backward_lr: Adam learning rate of both regressions, decayed linearly to 0 (> 0).
        backward_chunk: (state, action) rows scored per batched call, a memory bound (>= 1).
        backward_density_nodes: on a box or periodic domain of at most 3 dimensions the backward
            responder reads the population's log-density from a table of this many nodes per t,
            built once per call and interpolated (>= 0; 0 queries the population model directly).
    """

    RULES: ClassVar[dict[str, Rule]] = {
        "algorithm": ALGORITHMS, "total_steps": ">= 1", "warm_steps": ">= 1", "num_envs": ">= 1", "hidden": ">= 1",
        "layers": ">= 1", "lr": "> 0", "gamma": "(0, 1]", "n_steps": ">= 1", "batch_size": ">= 1",
        "n_epochs": ">= 1", "log_std_init": "any", "gae_lambda": "[0, 1]", "clip_range": "> 0", "ent_coef": ">= 0",
        "buffer_size": ">= 1", "learning_starts": ">= 0", "gradient_steps": ">= 1", "reward_scale": "> 0",
        "exploring_starts": "[0, 1)", "start_times": "[0, 1]", "pathwise_steps": ">= 1",
        "pathwise_warm_steps": ">= 1", "pathwise_agents": ">= 1", "pathwise_lr": "> 0",
        "pathwise_max_grad_norm": "> 0", "backward_states": ">= 1", "backward_actions": ">= 1",
        "backward_refine": ">= 0", "backward_noise": ">= 2", "backward_hidden": ">= 1", "backward_fit_steps": ">= 1",
        "backward_policy_steps": ">= 1", "backward_lr": "> 0", "backward_chunk": ">= 1",
        "backward_density_nodes": ">= 0"}

    algorithm: str = "ppo"
    total_steps: int = 300_000
    warm_start: bool = True
    warm_steps: int = 150_000
    num_envs: int = 16
    hidden: int = 128
    layers: int = 2
    lr: float = 3e-4
    lr_decay: bool = True
    gamma: float = 1.0
    n_steps: int = 256
    batch_size: int = 1024
    n_epochs: int = 20
    log_std_init: float = -2.0
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    buffer_size: int = 200_000
    learning_starts: int = 2_000
    gradient_steps: int = 1
    reward_scale: float = 0.1
    exploring_starts: float = 0.0
    keep_best: bool = False
    start_times: float = 0.0
    pathwise_steps: int = 600
    pathwise_warm_steps: int = 200
    pathwise_agents: int = 1024
    pathwise_lr: float = 3e-3
    pathwise_max_grad_norm: float = 10.0
    backward_states: int = 2048
    backward_actions: int = 49
    backward_refine: int = 1
    backward_noise: int = 4
    backward_hidden: int = 64
    backward_fit_steps: int = 300
    backward_policy_steps: int = 4000
    backward_lr: float = 1e-3
    backward_chunk: int = 262_144
    backward_density_nodes: int = 8192

    def __post_init__(self) -> None:
        """start_times keeps its own wording (the shared checks then confirm the range)."""
        if not 0 <= self.start_times <= 1:
            raise ValueError(f"best_response.start_times must be a number in [0, 1], got {self.start_times!r}")
        if isinstance(self.backward_noise, int) and self.backward_noise % 2:
            raise ValueError(f"best_response.backward_noise must be an even integer >= 2 (antithetic pairs), "
                             f"got {self.backward_noise!r}")


class ScaledReward(VecEnvWrapper):
    """Multiplies rewards by a constant (what the learner sees; episode infos keep true returns)."""

    def __init__(self, venv: VecEnv, scale: float) -> None:
        super().__init__(venv)
        self.scale = scale

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return obs, rewards * self.scale, dones, infos


class MLPPolicy(DeterministicPolicy):
    """A deterministic actor network on the game's observation: ``a = bound · clip(net(obs), -1, 1)``.

    Plain torch modules only, so a snapshot pickles and reloads without stable-baselines3 state.
    """

    def __init__(self, net: nn.Module, game: MeanFieldGame) -> None:
        self.net = net
        self.game = game
        self.action_bound = game.action_bound

    @torch.no_grad()
    def mean_action(self, t: int, x: Tensor) -> Tensor:
        device = next(self.net.parameters()).device
        action = self.net(self.game.observation(t, x).to(device)).to(x.device)
        return action.clamp(-1.0, 1.0) * self.action_bound


def actor_network(policy: BasePolicy) -> nn.Module:
    """The deterministic actor of an SB3 PPO or SAC policy as one ``nn.Sequential`` (a copy)."""
    if isinstance(policy, ActorCriticPolicy):
        net = nn.Sequential(policy.features_extractor, policy.mlp_extractor.policy_net, policy.action_net)
    elif isinstance(policy, SACPolicy):
        net = nn.Sequential(policy.actor.features_extractor, policy.actor.latent_pi, policy.actor.mu, nn.Tanh())
    else:
        raise TypeError(f"unsupported stable-baselines3 policy {type(policy).__name__}")
    return copy.deepcopy(net)


class SB3BestResponder(BestResponder):
    """PPO or SAC best responses on the batched VecEnv, optionally warm-started across iterations."""

    def __init__(self, game: MeanFieldGame, config: BestResponseConfig, device: torch.device | str = "cpu",
                 seed: int = 0) -> None:
        if config.algorithm not in DEEP_RL:
            raise ValueError(f"SB3BestResponder needs algorithm 'ppo' or 'sac', got {config.algorithm!r}")
        self.game = game
        self.config = config
        self.device = torch.device(device)
        self.seed = seed
        self.model: BaseAlgorithm | None = None
        self.calls = 0

    def _lr(self) -> float | object:
        lr = self.config.lr
        return (lambda progress: lr * progress) if self.config.lr_decay else lr

    def _build(self, env: VecEnv, seed: int | None = None) -> BaseAlgorithm:
        """A fresh SB3 model on ``env``, seeded with ``seed`` (default: the responder's seed).

        SB3 seeds torch, the action space and ``env`` (for its next reset) with this seed.
        """
        model = self._algorithm(env, self.seed if seed is None else seed)
        # A silent logger: SB3's default one creates a /tmp/SB3-<date> folder for every model.
        model.set_logger(Logger(folder=None, output_formats=[]))
        return model

    def _algorithm(self, env: VecEnv, seed: int) -> BaseAlgorithm:
        c = self.config
        net = [c.hidden] * c.layers
        if c.algorithm == "ppo":
            return PPO("MlpPolicy", env, learning_rate=self._lr(), n_steps=c.n_steps, batch_size=c.batch_size,
                       n_epochs=c.n_epochs, gamma=c.gamma, gae_lambda=c.gae_lambda, clip_range=c.clip_range,
                       ent_coef=c.ent_coef, seed=seed, device=self.device, verbose=0,
                       policy_kwargs={"net_arch": {"pi": net, "vf": net}, "log_std_init": c.log_std_init})
        return SAC("MlpPolicy", env, learning_rate=self._lr(), buffer_size=c.buffer_size,
                   learning_starts=c.learning_starts, batch_size=c.batch_size, gamma=c.gamma,
                   train_freq=1, gradient_steps=c.gradient_steps, seed=seed, device=self.device,
                   verbose=0, policy_kwargs={"net_arch": net})

    def call_seed(self) -> int:
        """Seed of the next call: ``seed + 1000 · calls`` (its env noise, and a fresh model's initialisation).

        A function of the call count only, so a run resumed with ``calls`` restored replays the same
        noise, and every call sees noise of its own.
        """
        return self.seed + 1000 * self.calls

    def _env(self, population: PopulationModel, seed: int) -> VecEnv:
        env = BatchedMeanFieldVecEnv(self.game, population, self.config.num_envs, seed=seed, device=self.device,
                                     exploring_starts=self.config.exploring_starts,
                                     start_times=self.config.start_times)
        return ScaledReward(env, self.config.reward_scale) if self.config.reward_scale != 1.0 else env

    def learn(self, population: PopulationModel) -> MLPPolicy:
        seed = self.call_seed()
        env = self._env(population, seed)
        steps = self.config.total_steps
        if self.model is None or not self.config.warm_start:
            # The model is seeded with the call's seed too: SB3 reseeds the env with the model's
            # seed, so a model seeded with self.seed replayed the first call's noise on every call.
            self.model = self._build(env, seed)
        else:
            self.model.set_env(env)       # learn() below resets it: the new population from t = 0
            steps = self.config.warm_steps
        self.model.learn(total_timesteps=steps, reset_num_timesteps=True)
        self.calls += 1
        return MLPPolicy(actor_network(self.model.policy), self.game)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The model's optimizers by name: PPO has one on its policy; SAC one each on actor and critic,
        and one on the entropy coefficient when that is learned."""
        assert self.model is not None
        policy = self.model.policy
        if isinstance(self.model, PPO):
            return {"policy": policy.optimizer}
        found = {"actor": policy.actor.optimizer, "critic": policy.critic.optimizer}
        if getattr(self.model, "ent_coef_optimizer", None) is not None:
            found["ent_coef"] = self.model.ent_coef_optimizer
        return found

    def state_dict(self) -> dict | None:
        """What a checkpoint needs to continue warm-started training exactly: the policy, every optimizer, the
        call count, and for SAC the learned entropy coefficient, the replay buffer (a warm-started SAC
        keeps learning from the transitions of earlier calls) and its action space's generator.

        None before the first call (nothing to continue from).
        """
        if self.model is None:
            return None
        state = {"policy": self.model.policy.state_dict(), "calls": self.calls,
                 "optimizers": {name: opt.state_dict() for name, opt in self._optimizers().items()}}
        if isinstance(self.model, SAC):
            state["log_ent_coef"] = getattr(self.model, "log_ent_coef", None)
            state["replay_buffer"] = self.model.replay_buffer
            # Warm calls start with learning_starts random actions drawn by the action space's own generator.
            state["action_space_rng"] = self.model.action_space.np_random.bit_generator.state
        return state

    def load_state_dict(self, state: dict, population: PopulationModel) -> None:
        """Restore :meth:`state_dict`; the model is rebuilt on an env over ``population``.

        Building a model reseeds torch's global generator: callers restore their RNG states after this.
        """
        self.model = self._build(self._env(population, 0))
        self.model.policy.load_state_dict(state["policy"])
        if isinstance(self.model, SAC):
            if state.get("log_ent_coef") is not None:
                with torch.no_grad():
                    self.model.log_ent_coef.copy_(state["log_ent_coef"])
            self.model.replay_buffer = state["replay_buffer"]
            self.model.action_space.np_random.bit_generator.state = state["action_space_rng"]
        # Checkpoints written before SAC was saved hold PPO's single optimizer under "optimizer".
        saved = state.get("optimizers") or {"policy": state["optimizer"]}
        for name, optimizer in self._optimizers().items():
            optimizer.load_state_dict(saved[name])
        self.calls = state["calls"]
