"""A ``pickle`` module for ``torch.load`` that finds classes of run folders written before a module moved.

Checkpoints pickle best responses and policies by module path; the modules listed in :data:`MOVED`
have since moved, and old run folders (and the committed ``results/``) must still load.
"""

from __future__ import annotations

import pickle
from pickle import *  # noqa: F401,F403  (torch.load reads the module's whole pickle interface)

#: Old module path -> where its classes live now.
MOVED = {
    "dedafp.agents.riccati": "dedafp.reference.riccati_responder",
    "dedafp.agents.grid_response": "dedafp.reference.grid_responder",
    "dedafp.fictitious_play": "dedafp.algorithms.fictitious_play",
}


class Unpickler(pickle.Unpickler):
    """Looks classes up under their new module path."""

    def find_class(self, module: str, name: str):  # noqa: ANN201
        return super().find_class(MOVED.get(module, module), name)


def load(file, **kwargs):  # noqa: ANN001,ANN201
    return Unpickler(file, **kwargs).load()
