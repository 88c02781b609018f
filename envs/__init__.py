"""Gymnasium environments of dedafp: one game per module, plus generic single and batched adapters.

Importing this package registers ``dedafp/LQ-v0`` with Gymnasium.
"""

import gymnasium

from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQConfig, LQGame, lq_preset

__all__ = ["MeanFieldGame", "LQConfig", "LQGame", "lq_preset"]

if "dedafp/LQ-v0" not in gymnasium.registry:
    gymnasium.register(id="dedafp/LQ-v0", entry_point="dedafp.envs.lq:make_lq_env")
