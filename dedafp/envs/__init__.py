"""Gymnasium environments of dedafp: one game per module, plus generic single and batched adapters.

Importing this package registers ``dedafp/LQ-v0``, ``dedafp/FourRooms-v0`` and ``dedafp/BeachBar-v0``.
"""

import gymnasium

from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQConfig, LQGame, lq_preset

__all__ = ["MeanFieldGame", "LQConfig", "LQGame", "lq_preset"]

for _id, _entry in (("dedafp/LQ-v0", "dedafp.envs.lq:make_lq_env"),
                    ("dedafp/FourRooms-v0", "dedafp.envs.gym_env:make_density_env"),
                    ("dedafp/BeachBar-v0", "dedafp.envs.gym_env:make_density_env")):
    if _id not in gymnasium.registry:
        kwargs = {} if "LQ" in _id else {"game": "four_rooms" if "FourRooms" in _id else "beach_bar"}
        gymnasium.register(id=_id, entry_point=_entry, kwargs=kwargs)
