"""The mean-field-game laboratory for generative models (Zhang and Katsoulakis, arXiv 2304.13534).

A score-based generative model on 2-D Gaussian mixtures under a variance-preserving noising SDE,
trained by denoising score matching with an optional penalty on the residual of the HJB equation that
the log-density of the noised data satisfies; exact marginals and scores make every metric exact.
Self-contained: imports nothing from the rest of dedafp. See docs/lab.md.
"""

from dedafp.lab.hjb import hjb_residual
from dedafp.lab.metrics import evaluation_points, mean_squared_residual, sliced_w2, weighted_score_error
from dedafp.lab.sampler import reverse_sde_sample
from dedafp.lab.score import PotentialNet, dsm_loss, time_features
from dedafp.lab.sde import VPSDE, GaussianMixture, ring_mixture
from dedafp.lab.study import StudyConfig, run_sgm_study
from dedafp.lab.train import SGMConfig, TrainResult, train_sgm

__all__ = [
    "VPSDE", "GaussianMixture", "ring_mixture",
    "PotentialNet", "dsm_loss", "time_features", "hjb_residual", "reverse_sde_sample",
    "evaluation_points", "weighted_score_error", "mean_squared_residual", "sliced_w2",
    "SGMConfig", "TrainResult", "train_sgm", "StudyConfig", "run_sgm_study",
]
