"""Game factory: game names used by the CLI and configs -> :class:`MeanFieldGame` instances."""

from __future__ import annotations

from typing import Any

from dedafp.envs.base import MeanFieldGame
from dedafp.envs.lq import LQGame, lq_preset


def make_game(name: str, overrides: dict[str, Any] | None = None) -> MeanFieldGame:
    """The game ``name`` (``lq1d``, ``lq2d``) with parameter ``overrides`` (validated)."""
    overrides = dict(overrides or {})
    if name in ("lq1d", "lq2d"):
        config = lq_preset(name)
        unknown = set(overrides) - set(config.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LQ parameter(s) {sorted(unknown)}; allowed: "
                             f"{sorted(config.__dataclass_fields__)}")
        return LQGame(config.replace(**overrides), name=name)
    raise ValueError(f"unknown game {name!r}; allowed: 'lq1d', 'lq2d'")
