"""PDE-based solver family: ergodic MFGs on the torus solved as a GAN (MFGAN), against exact solutions,
and the SDE model of GAN training (Cao, Guo and Laurière; Cao and Guo)."""

from dedafp.mfgan.gan_sde import (
    LinearGANConfig,
    drift_matrix,
    gap_slope,
    max_stable_lr,
    noise_covariance,
    sde_stationary_covariance,
    sgd_stationary_covariance,
    simulate_sgd,
)
from dedafp.mfgan.networks import NetworkConfig, PeriodicFeatures, PeriodicMLP
from dedafp.mfgan.problems import PROBLEMS, ErgodicProblem, first_order, make_problem, viscous
from dedafp.mfgan.residuals import (
    derivatives,
    fp_residual_over_m,
    hjb_lhs_minus_log_m,
    log_mean_exp,
    solution_errors,
    torus_grid,
)
from dedafp.mfgan.solver import MODES, MFGANConfig, MFGANResult, MFGANSolver, detect_stall, train

__all__ = [
    "ErgodicProblem", "PROBLEMS", "make_problem", "viscous", "first_order",
    "NetworkConfig", "PeriodicFeatures", "PeriodicMLP",
    "derivatives", "hjb_lhs_minus_log_m", "fp_residual_over_m", "log_mean_exp", "solution_errors", "torus_grid",
    "MODES", "MFGANConfig", "MFGANResult", "MFGANSolver", "detect_stall", "train",
    "LinearGANConfig", "drift_matrix", "noise_covariance", "max_stable_lr", "sgd_stationary_covariance",
    "sde_stationary_covariance", "gap_slope", "simulate_sgd",
]
