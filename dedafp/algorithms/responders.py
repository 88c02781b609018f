"""Best responders by name: deep RL from :mod:`dedafp.agents`, exact ones from :mod:`dedafp.reference`.

The algorithms layer is where the two meet, so that agents never import a reference solver.
"""

from __future__ import annotations

import torch

from dedafp.agents.best_response import BestResponseConfig
from dedafp.agents.policy import BestResponder
from dedafp.envs.base import MeanFieldGame
from dedafp.envs.registry import spec_of

__all__ = ["make_responder", "EXACT_RESPONDERS"]

#: The exact responders a game's spec can declare (``GameSpec.exact_responder``).
EXACT_RESPONDERS = ("riccati", "grid")


def make_responder(game: MeanFieldGame, config: BestResponseConfig, device: torch.device | str = "cpu",
                   seed: int = 0) -> BestResponder:
    """The best responder ``config.algorithm`` names, for ``game``."""
    if config.algorithm in EXACT_RESPONDERS:
        spec = spec_of(game)
        declared = None if spec is None else spec.exact_responder
        if declared != config.algorithm:
            raise ValueError(f"best_response.algorithm={config.algorithm!r} needs a game whose spec declares that "
                             f"exact responder; {game.name!r} declares {declared!r}")
        if config.algorithm == "riccati":
            from dedafp.reference.riccati_responder import RiccatiBestResponder
            return RiccatiBestResponder(game, device)
        from dedafp.reference.grid_responder import GridBestResponder
        return GridBestResponder(game, device)
    if config.algorithm == "pathwise":
        from dedafp.agents.pathwise import PathwiseBestResponder
        return PathwiseBestResponder(game, config, device, seed)
    if config.algorithm == "backward":
        from dedafp.agents.backward import BackwardBestResponder
        return BackwardBestResponder(game, config, device, seed)
    from dedafp.agents.best_response import SB3BestResponder
    return SB3BestResponder(game, config, device, seed)
