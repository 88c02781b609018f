"""dedafp: mean-field Nash equilibria in continuous state and action spaces with deep RL (DEDA-FP).

The public API::

    from dedafp import load_config, train, load_run
    run = train(load_config("lq2d", overrides=["fp.iterations=3"]), "runs/lq2d")
    run.average_policy.predict(t=0, x=x); run.population.log_prob(x, t=0)

    from dedafp import GameSpec, register_game, make_game        # your own game
    register_game(GameSpec("my_game", MyGame))

    from dedafp import make_algorithm, register_algorithm, Algorithm   # your own outer loop

Importing dedafp registers the built-in games and their Gymnasium ids (``dedafp/LQ-v0``, ...); the
learners (stable-baselines3 and the algorithms) are imported on first use of their names, so that
``dedafp.agents.policy`` and the games stay importable without them.
"""

from __future__ import annotations

import importlib
from typing import Any

from dedafp.envs import GameSpec, MeanFieldGame, game_spec, make_game, register_game, registered_games

__all__ = ["Algorithm", "FictitiousPlay", "GameSpec", "IterationRecord", "KernelDensityFictitiousPlay",
           "MeanFieldGame", "MixtureFictitiousPlay", "Run", "RunConfig", "configure_threads", "game_spec",
           "load_config", "load_run", "make_algorithm", "make_game", "register_algorithm", "register_game",
           "registered_algorithms", "registered_games", "train"]

__version__ = "0.2.0"

#: Public names imported on first use: name -> module.
_LAZY = {
    **dict.fromkeys(("Algorithm", "FictitiousPlay", "IterationRecord", "KernelDensityFictitiousPlay",
                     "MixtureFictitiousPlay", "make_algorithm", "register_algorithm", "registered_algorithms"),
                    "dedafp.algorithms"),
    "configure_threads": "dedafp.common.threads",
    "RunConfig": "dedafp.config", "load_config": "dedafp.config",
    "Run": "dedafp.run", "load_run": "dedafp.run", "train": "dedafp.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dedafp' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
