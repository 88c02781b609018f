"""MFGAN: an ergodic MFG on the torus solved as a two-network game (Cao, Guo and Laurière).

* the **generator** ``u_θ`` (value function) minimises the mean squared HJB residual plus
  ``β·(mean u)²`` (the HJB only sees ``∇u``; the penalty pins ``∫u = 0``);
* the **discriminator** ``f_ω`` (log-density, ``m = exp(f)/Z``) minimises the mean squared
  Fokker–Planck residual.

``H̄`` is never trained: the HJB residual is affine in ``H̄``, so on every batch the least-squares
``H̄`` is the batch mean of ``ν(−Δu) + ½|∇u|² + V − ln m`` and the residual is that quantity minus
its mean. Reported values come from the fixed evaluation grid: ``hbar``, the HJB averaged against m
(the ergodic cost; second-order accurate in m), and ``hbar_ls``, the uniform least-squares constant
(see :func:`dedafp.mfgan.residuals.solution_errors`).

Modes, with the same networks, batches and number of gradient steps per network:

* ``mfgan``: alternating play — one Adam step of ``u`` on the HJB loss (``m`` frozen), then one of
  ``f`` on the FP loss against the *updated* ``u`` (Gauss–Seidel order);
* ``joint``: the deep Galerkin baseline — one Adam step of both networks on the sum of both losses.

First-order problems (ν = 0): the FP residual ``−∇f·∇u − Δu`` vanishes for *every* density once
``∇u ≈ 0``, and only the FP residual (as a function of u) forces ``∇u = 0``, while only the HJB
determines m (``ln m = V − H̄`` once ``∇u = 0``). Pure alternating play gives each signal to the wrong
player and does not converge; with the value player alone also seeing the FP residual, u goes to 0
and the density player is starved, stalling far from ``m*``. The solver prevents this by default with
both cross-couplings (``density_hjb_weight`` and ``value_fp_weight``, automatically 1 when ν = 0),
warns when a first-order ``mfgan`` run is built without them, and detects the starved density player
when its coupling is off: :attr:`MFGANResult.stalled` is set and a warning logged (docs/mfgan.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dedafp.mfgan.networks import NetworkConfig, PeriodicMLP
from dedafp.mfgan.problems import PROBLEMS, ErgodicProblem, make_problem
from dedafp.mfgan.residuals import (
    FP_FORMS,
    check_finite,
    derivatives,
    fp_residual_over_m,
    hjb_lhs_minus_log_m,
    log_mean_exp,
    solution_errors,
    torus_grid,
)

logger = logging.getLogger(__name__)

MODES = ("mfgan", "joint")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class MFGANConfig:
    """One MFGAN (or joint-baseline) training run.

    Attributes:
        problem: reference problem, one of ``viscous``, ``first-order``.
        dim: space dimension d (1..8).
        mode: ``mfgan`` (alternating) or ``joint`` (deep Galerkin baseline).
        iterations: training iterations (one gradient step per network each).
        batch: collocation points per iteration, drawn uniformly on the torus.
        lr: initial Adam learning rate of both networks.
        lr_final: learning rate reached at the last iteration (cosine decay; <= lr).
        beta: weight of ``(mean u)²`` in the generator loss (> 0).
        density_hjb_weight: weight of the HJB loss in the density player's loss in ``mfgan`` mode;
            ``None`` = automatic: 1 for first-order problems (ν = 0), 0 otherwise. Ignored in ``joint``
            mode, where both networks always see both residuals.
        value_fp_weight: weight of the FP loss in the value player's loss in ``mfgan`` mode; ``None`` =
            automatic, as ``density_hjb_weight``.
        fp_form: ``log`` (FP residual divided by m; needs no Z) or ``density`` (the residual of m itself,
            with Z by quadrature on a grid of ``normaliser_points_per_dim`` points per axis).
        normaliser_points_per_dim: grid for Z in ``density`` form (0 = automatic: about 4096 points).
        eval_points_per_dim: evaluation grid (0 = automatic: 1024 for d = 1, 16 per axis for d = 4).
        monitor_points: fixed uniform points on which the residual losses are logged.
        log_every: iterations between history rows (errors and residual losses).
        network: architecture of both networks.
        seed: seed of initialisation, collocation points and monitor points.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32`` or ``float64``.
    """

    problem: str = "viscous"
    dim: int = 1
    mode: str = "mfgan"
    iterations: int = 5000
    batch: int = 256
    lr: float = 2e-3
    lr_final: float = 2e-5
    beta: float = 1.0
    density_hjb_weight: float | None = None
    value_fp_weight: float | None = None
    fp_form: str = "log"
    normaliser_points_per_dim: int = 0
    eval_points_per_dim: int = 0
    monitor_points: int = 2048
    log_every: int = 100
    network: NetworkConfig = field(default_factory=NetworkConfig)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {sorted(PROBLEMS)}, got {self.problem!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.fp_form not in FP_FORMS:
            raise ValueError(f"fp_form must be one of {FP_FORMS}, got {self.fp_form!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if not (self.device in ("cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        for name, minimum, maximum in (("dim", 1, 8), ("iterations", 1, None), ("batch", 2, None),
                                       ("normaliser_points_per_dim", 0, None), ("eval_points_per_dim", 0, None),
                                       ("monitor_points", 2, None), ("log_every", 1, None), ("seed", 0, None)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum or (
                    maximum is not None and value > maximum):
                bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
                raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
        for name in ("lr", "lr_final", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if self.lr_final > self.lr:
            raise ValueError(f"lr_final must be <= lr = {self.lr}, got {self.lr_final}")
        for name in ("density_hjb_weight", "value_fp_weight"):
            weight = getattr(self, name)
            if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                                       or not math.isfinite(weight) or weight < 0):
                raise ValueError(f"{name} must be None (automatic) or a number >= 0, got {weight!r}")
        if not isinstance(self.network, NetworkConfig):
            raise ValueError(f"network must be a NetworkConfig, got {self.network!r}")

    def make_problem(self) -> ErgodicProblem:
        """The reference problem of this run."""
        return make_problem(self.problem, self.dim)

    def resolved_cross_weights(self) -> tuple[float, float]:
        """``(density_hjb_weight, value_fp_weight)`` as used in ``mfgan`` mode (automatic: 1 when ν = 0)."""
        auto = 1.0 if self.make_problem().nu == 0 else 0.0
        return tuple(auto if w is None else float(w) for w in (self.density_hjb_weight, self.value_fp_weight))

    def resolved_eval_points_per_dim(self) -> int:
        """Grid points per axis of the evaluation grid (at most about 65536 points in all)."""
        if self.eval_points_per_dim:
            return self.eval_points_per_dim
        return max(4, min(1024, int(round(65536 ** (1 / self.dim)))))

    def resolved_normaliser_points_per_dim(self) -> int:
        """Grid points per axis for Z in the ``density`` form (about 4096 in all, 256 for d = 1)."""
        if self.normaliser_points_per_dim:
            return self.normaliser_points_per_dim
        return 256 if self.dim == 1 else max(4, int(round(4096 ** (1 / self.dim))))


@dataclass
class MFGANResult:
    """What a run returns.

    Attributes:
        config: the run's configuration.
        history: one row per ``log_every`` iterations (and the last): ``iteration``, ``loss_hjb``,
            ``loss_fp`` (monitor set), ``err_m``, ``err_u``, ``err_hbar``, ``err_hbar_ls``, ``hbar``,
            ``hbar_ls``, ``mean_u``, ``log_z``, ``grad_density`` (norm of the density player's last
            gradient) and ``seconds``.
        final: the last history row.
        u_net: the value network.
        f_net: the log-density network (unnormalised; ``m = exp(f)/Z``).
        stalled: True when the density player's signal died while the HJB residual stayed large
            (the first-order failure of pure alternating training).
        seconds: wall-clock training time.
    """

    config: MFGANConfig
    history: list[dict[str, float]]
    final: dict[str, float]
    u_net: PeriodicMLP
    f_net: PeriodicMLP
    stalled: bool
    seconds: float


@dataclass
class _Losses:
    hjb: Tensor  # mean squared HJB residual (with the least-squares H̄)
    fp: Tensor  # mean squared FP residual
    mean_u: Tensor  # batch mean of u (for the ∫u = 0 penalty)


class MFGANSolver:
    """Trains the value and density networks of one :class:`MFGANConfig`.

    Usage::

        solver = MFGANSolver(MFGANConfig(problem="viscous", dim=1, iterations=5000))
        result = solver.train()           # result.final["err_m"], result.history, ...
    """

    def __init__(self, config: MFGANConfig) -> None:
        self.config = config
        self.problem = config.make_problem()
        self.device = torch.device(config.device)
        self.dtype = DTYPES[config.dtype]
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        # Initialise the networks from the seed without touching the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.u_net = PeriodicMLP(config.dim, config.network).to(self.device, self.dtype)
            self.f_net = PeriodicMLP(config.dim, config.network).to(self.device, self.dtype)
        self.u_opt = torch.optim.Adam(self.u_net.parameters(), lr=config.lr)
        self.f_opt = torch.optim.Adam(self.f_net.parameters(), lr=config.lr)
        self.eval_points = torus_grid(config.resolved_eval_points_per_dim(), config.dim, self.device, self.dtype)
        self.monitor_points = self._sample(config.monitor_points)
        self.normaliser_points = (torus_grid(config.resolved_normaliser_points_per_dim(), config.dim, self.device,
                                             self.dtype) if config.fp_form == "density" else None)
        self.density_hjb_weight, self.value_fp_weight = config.resolved_cross_weights()
        if config.mode == "mfgan" and self.problem.nu == 0 and not (self.density_hjb_weight and self.value_fp_weight):
            logger.warning("alternating training on a first-order problem (nu = 0) with density_hjb_weight=%g, "
                           "value_fp_weight=%g: only the HJB determines m and only the FP residual drives grad u "
                           "to 0, so both cross-couplings are needed; expect no convergence (docs/mfgan.md)",
                           self.density_hjb_weight, self.value_fp_weight)
        self.iteration = 0

    # --- pieces -------------------------------------------------------------------------------
    def _sample(self, n: int) -> Tensor:
        return torch.rand(n, self.config.dim, generator=self.generator, device=self.device, dtype=self.dtype)

    def _lr(self, iteration: int) -> float:
        # Cosine decay: large steps early to find the basin, small ones late for 1e-2 accuracy.
        c = self.config
        progress = iteration / max(1, c.iterations - 1)
        return c.lr_final + 0.5 * (c.lr - c.lr_final) * (1 + math.cos(math.pi * progress))

    def _losses(self, x: Tensor, train_u: bool, train_f: bool, need_fp: bool = True) -> _Losses:
        """Both residual losses at ``x``; gradients flow only into the networks being trained.

        ``need_fp=False`` skips the FP residual (and the density's derivatives, which only it needs);
        its loss is then returned as 0.
        """
        nu = self.problem.nu
        u, u_grad, u_lap = derivatives(self.u_net, x, laplacian=True)
        if not train_u:
            u, u_grad, u_lap = u.detach(), u_grad.detach(), u_lap.detach()
        if need_fp:
            f, f_grad, f_lap = derivatives(self.f_net, x, laplacian=nu > 0)
        else:
            f, f_grad, f_lap = self.f_net(x), None, None
        if not train_f:
            f = f.detach()
            f_grad = f_grad.detach() if f_grad is not None else None
            f_lap = f_lap.detach() if f_lap is not None else None
        r = hjb_lhs_minus_log_m(self.problem, x, u_grad, u_lap, f)
        # Least-squares H̄ on this batch: the residual is r minus its mean (ln Z cancels too).
        hjb = ((r - r.mean()) ** 2).mean()
        if not need_fp:
            return _Losses(hjb=hjb, fp=torch.zeros_like(hjb), mean_u=u.mean())
        fp_residual = fp_residual_over_m(nu, u_grad, u_lap, f_grad, f_lap)
        if self.normaliser_points is not None:
            log_z = log_mean_exp(self.f_net(self.normaliser_points))
            fp_residual = torch.exp(f - log_z) * fp_residual
        fp = (fp_residual**2).mean()
        return _Losses(hjb=hjb, fp=fp, mean_u=u.mean())

    def _step(self) -> tuple[Tensor, Tensor, float]:
        """One training iteration. Returns the batch losses (HJB, FP) and the density gradient norm."""
        c = self.config
        lr = self._lr(self.iteration)
        for opt in (self.u_opt, self.f_opt):
            for group in opt.param_groups:
                group["lr"] = lr
        x = self._sample(c.batch)
        where = f"iteration {self.iteration}"
        if c.mode == "joint":
            losses = self._losses(x, train_u=True, train_f=True)
            total = losses.hjb + losses.fp + c.beta * losses.mean_u**2
            check_finite("joint loss", total.detach(), where)
            self.u_opt.zero_grad(set_to_none=True)
            self.f_opt.zero_grad(set_to_none=True)
            total.backward()
            grad_density = _grad_norm(self.f_net)
            self.u_opt.step()
            self.f_opt.step()
            return losses.hjb.detach(), losses.fp.detach(), grad_density
        # Generator: HJB against the frozen density.
        losses = self._losses(x, train_u=True, train_f=False, need_fp=bool(self.value_fp_weight))
        loss_u = losses.hjb + c.beta * losses.mean_u**2
        if self.value_fp_weight:
            loss_u = loss_u + self.value_fp_weight * losses.fp
        check_finite("generator (HJB) loss", loss_u.detach(), where)
        self.u_opt.zero_grad(set_to_none=True)
        loss_u.backward()
        self.u_opt.step()
        # Discriminator: FP (and, if enabled, HJB) against the updated, frozen value function.
        losses = self._losses(x, train_u=False, train_f=True)
        loss_f = losses.fp + self.density_hjb_weight * losses.hjb if self.density_hjb_weight else losses.fp
        check_finite("density (FP) loss", loss_f.detach(), where)
        self.f_opt.zero_grad(set_to_none=True)
        loss_f.backward()
        grad_density = _grad_norm(self.f_net)
        self.f_opt.step()
        return losses.hjb.detach(), losses.fp.detach(), grad_density

    def evaluate(self) -> dict[str, float]:
        """Errors on the evaluation grid and residual losses on the monitor points."""
        row = solution_errors(self.problem, self.u_net, self.f_net, self.eval_points)
        losses = self._losses(self.monitor_points, train_u=False, train_f=False)
        row["loss_hjb"], row["loss_fp"] = float(losses.hjb.detach()), float(losses.fp.detach())
        check_finite("monitor losses", torch.tensor([row["loss_hjb"], row["loss_fp"]]), f"iteration {self.iteration}")
        return row

    # --- loop ---------------------------------------------------------------------------------
    def train(self, callback: Callable[[dict[str, float]], None] | None = None) -> MFGANResult:
        """Run all iterations; ``callback(row)`` is called with every history row."""
        c = self.config
        history: list[dict[str, float]] = []
        started = time.perf_counter()
        while self.iteration < c.iterations:
            _, _, grad_density = self._step()
            self.iteration += 1
            if self.iteration % c.log_every == 0 or self.iteration == c.iterations:
                row = {"iteration": float(self.iteration), **self.evaluate(), "grad_density": grad_density,
                       "seconds": time.perf_counter() - started}
                history.append(row)
                if callback is not None:
                    callback(row)
        seconds = time.perf_counter() - started
        stalled = detect_stall(history) if c.mode == "mfgan" and self.density_hjb_weight == 0 else False
        if stalled:
            logger.warning("density player stalled: FP loss %.2e but HJB loss %.2e and err_m %.3f; the FP residual "
                           "gives m no signal once grad u ~ 0 (set density_hjb_weight > 0)",
                           history[-1]["loss_fp"], history[-1]["loss_hjb"], history[-1]["err_m"])
        return MFGANResult(c, history, history[-1], self.u_net, self.f_net, stalled, seconds)


# Stall thresholds. In the committed first-order runs with the value player coupled to the FP
# loss and the density player not coupled to the HJB loss, FP/HJB ends at 5e-6..6e-5 with the HJB
# loss stuck near 0.5; every other committed run ends with an HJB loss below 1e-2 or FP/HJB >= 0.21
# (docs/mfgan.md). The ratio threshold sits at least a factor 20 from both.
STALL_FP_OVER_HJB = 1e-2
STALL_HJB_FLOOR = 1e-2


def detect_stall(history: list[dict[str, float]]) -> bool:
    """True when the last row shows the starved-discriminator signature: the FP residual (the
    density player's only signal) is negligible next to an HJB residual that did not converge."""
    last = history[-1]
    return last["loss_hjb"] > STALL_HJB_FLOOR and last["loss_fp"] < STALL_FP_OVER_HJB * last["loss_hjb"]


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().reshape(-1) for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.cat(grads))) if grads else 0.0


def train(config: MFGANConfig, callback: Callable[[dict[str, float]], None] | None = None) -> MFGANResult:
    """Build a :class:`MFGANSolver` for ``config`` and train it."""
    return MFGANSolver(config).train(callback)
