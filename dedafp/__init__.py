"""dedafp: mean-field Nash equilibria in continuous state and action spaces with deep RL (DEDA-FP).

The public API::

    from dedafp import load_config, train, load_run
    run = train(load_config("lq2d", overrides=["fp.iterations=3"]), "runs/lq2d")
    run.average_policy.predict(t=0, x=x); run.population.log_prob(x, t=0)

    from dedafp import GameSpec, register_game, make_game        # your own game
    register_game(GameSpec("my_game", MyGame))

    from dedafp import make_algorithm, register_algorithm, Algorithm   # your own outer loop

Importing dedafp registers the built-in games and their Gymnasium ids (``dedafp/LQ-v0``, ...).
"""

from dedafp.algorithms import (
    Algorithm,
    FictitiousPlay,
    IterationRecord,
    KernelDensityFictitiousPlay,
    MixtureFictitiousPlay,
    make_algorithm,
    register_algorithm,
    registered_algorithms,
)
from dedafp.common.threads import configure_threads
from dedafp.config import RunConfig, load_config
from dedafp.envs import GameSpec, MeanFieldGame, game_spec, make_game, register_game, registered_games
from dedafp.run import Run, load_run, train

__all__ = ["Algorithm", "FictitiousPlay", "GameSpec", "IterationRecord", "KernelDensityFictitiousPlay",
           "MeanFieldGame", "MixtureFictitiousPlay", "Run", "RunConfig", "configure_threads", "game_spec",
           "load_config", "load_run", "make_algorithm", "make_game", "register_algorithm", "register_game",
           "registered_algorithms", "registered_games", "train"]

__version__ = "0.2.0"
