"""Games of dedafp: one game per module, each registering its :class:`GameSpec`, plus generic adapters.

Importing this package registers the built-in games (``lq1d``, ``lq2d``, ``four_rooms``,
``beach_bar``) and their Gymnasium ids ``dedafp/LQ-v0``, ``dedafp/FourRooms-v0``, ``dedafp/BeachBar-v0``.
"""

from dedafp.envs import beach_bar, four_rooms, lq  # noqa: F401  (each module registers its game)
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQConfig, LQGame, lq_preset
from dedafp.envs.registry import GameSpec, game_spec, make_game, register_game, registered_games, resolve_game

__all__ = ["MeanFieldGame", "LQConfig", "LQGame", "lq_preset", "GameSpec", "game_spec", "make_game",
           "register_game", "registered_games", "resolve_game"]
