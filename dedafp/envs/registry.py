"""The game registry: one :class:`GameSpec` per game, found by name or by a reference to user code.

A game module declares its spec and registers it (``register_game(GameSpec(...))``); everything
the framework knows about a game beyond the :class:`~dedafp.envs.base.MeanFieldGame` interface
lives in the spec: config defaults, the reference evaluator, the exact best responder, the
reference grid, how the N-player simulator couples agents, and the Gymnasium id.

A *game reference* is what a user types after ``dedafp train``:

* a registered name: ``lq2d``, ``four_rooms``, ...;
* a Python file: ``path/to/my_game.py`` (its one :class:`GameSpec`, or ``path/to/my_game.py:SPEC``);
* a module attribute: ``my_package.games:SPEC``.

Usage::

    from dedafp.envs.registry import GameSpec, register_game, make_game
    register_game(GameSpec("my_game", MyGame, defaults={"fp": {"iterations": 5}}))
    game = make_game("my_game", {"speed": 2.0})
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedafp.envs.base import MeanFieldGame

__all__ = ["GameSpec", "GameSource", "register_game", "registered_games", "game_spec", "spec_of", "make_game",
           "resolve_game", "is_reference", "COUPLINGS"]

#: How agents feel each other in the N-player game: the others' mean (LQ) or a log-density reward.
COUPLINGS = ("mean", "density")


@dataclass(frozen=True)
class GameSpec:
    """Everything dedafp knows about one game.

    Attributes:
        name: the name used on the command line and in configs (letters, digits, ``_``, ``-``).
        factory: ``factory(**overrides) -> MeanFieldGame``; validates the overrides.
        defaults: per-section config defaults (``{"fp": {"iterations": 20}, "flow": {...}}``),
            applied before a config file and ``--set``.
        algorithm: the outer loop ``dedafp train GAME`` runs unless ``--algorithm`` names another
            (a registered algorithm: ``dedafp``, ``omd``, ...).
        evaluator: reference evaluator, ``evaluator(game, eval_agents, iterations, device, seed)``,
            or ``"module:attribute"`` naming one (imported only when used), or None.
        exact_responder: the ``best_response.algorithm`` that solves this game exactly
            (``"riccati"``, ``"grid"``), or None.
        grid: fields of the reference grid (:class:`dedafp.reference.grid.GridConfig`), or None.
        coupling: one of :data:`COUPLINGS` for the N-player simulator, or None (not simulable).
        gym_id: Gymnasium id to register (``"dedafp/MyGame-v0"``), or None.
        progress_columns: metrics of the evaluator the progress table shows beside the training ones.
        description: one line for listings.
    """

    name: str
    factory: Callable[..., MeanFieldGame]
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    algorithm: str = "dedafp"
    evaluator: Callable[..., Any] | str | None = None
    exact_responder: str | None = None
    grid: Mapping[str, Any] | None = None
    coupling: str | None = None
    gym_id: str | None = None
    progress_columns: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"GameSpec.name must be letters, digits, '_' or '-', got {self.name!r}")
        if not callable(self.factory):
            raise TypeError(f"GameSpec.factory of {self.name!r} must be callable, got {self.factory!r}")
        if not isinstance(self.defaults, Mapping) or not all(isinstance(v, Mapping) for v in self.defaults.values()):
            raise ValueError(f"GameSpec.defaults of {self.name!r} must map section names to mappings")
        if self.coupling is not None and self.coupling not in COUPLINGS:
            raise ValueError(f"GameSpec.coupling of {self.name!r} must be one of {COUPLINGS} or None, "
                             f"got {self.coupling!r}")

    def make(self, overrides: Mapping[str, Any] | None = None) -> MeanFieldGame:
        """The game with parameter ``overrides`` (validated by the factory)."""
        game = self.factory(**dict(overrides or {}))
        if not isinstance(game, MeanFieldGame):
            raise TypeError(f"the factory of game {self.name!r} returned {type(game).__name__}, "
                            f"not a MeanFieldGame")
        return game

    def make_evaluator(self, game: MeanFieldGame, eval_agents: int, iterations: int, device: Any = "cpu",
                       seed: int = 0) -> Any:
        """The reference evaluator of ``game``, or None if the game has none."""
        if self.evaluator is None:
            return None
        build = _load_attribute(self.evaluator) if isinstance(self.evaluator, str) else self.evaluator
        return build(game, eval_agents, iterations, device, seed)


@dataclass(frozen=True)
class GameSource:
    """Where a game came from, recorded in a run folder so a resumed or loaded run finds the same game.

    Attributes:
        reference: what the user gave (a name, a file path, ``module:attribute``).
        name: the spec's name.
        path: absolute path of the file defining it (None for a registered built-in).
        sha256: hash of that file's bytes (None for a built-in).
    """

    reference: str
    name: str
    path: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_REGISTRY: dict[str, GameSpec] = {}
_BY_REFERENCE: dict[str, tuple[GameSpec, GameSource]] = {}
_FROM_REFERENCES: set[str] = set()


def register_game(spec: GameSpec, replace: bool = False) -> GameSpec:
    """Add ``spec`` to the registry (and its Gymnasium id to Gymnasium's); returns it.

    Registering a different spec under a taken name raises unless ``replace``.
    """
    if not isinstance(spec, GameSpec):
        raise TypeError(f"register_game expects a GameSpec, got {type(spec).__name__}")
    old = _REGISTRY.get(spec.name)
    if old is not None and old != spec and not replace:
        raise ValueError(f"a game named {spec.name!r} is already registered; pass replace=True or rename it")
    _REGISTRY[spec.name] = spec
    if spec.gym_id is not None:
        import gymnasium
        if spec.gym_id not in gymnasium.registry or replace:
            gymnasium.register(id=spec.gym_id, entry_point="dedafp.envs.gym_env:make_registered_env",
                               kwargs={"game": spec.name})
    return spec


def registered_games() -> tuple[str, ...]:
    """Names of every registered game, sorted."""
    return tuple(sorted(_REGISTRY))


def is_reference(text: str) -> bool:
    """Whether ``text`` points at user code (a ``.py`` file or ``module:attribute``), not a registered name."""
    return text.endswith(".py") or ".py:" in text or ":" in text or "/" in text


def _load_attribute(reference: str) -> Any:
    module, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot import {reference!r}: {error}") from None


def _file_module(path: Path, sha: str) -> Any:
    # Named by content, so an edited file is imported afresh and an unchanged one once.
    name = f"dedafp_user_game_{path.stem}_{sha[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"cannot import game file {path}")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise ValueError(f"game file {path} failed to import: {type(error).__name__}: {error}") from None
    return module


def _as_spec(value: Any, where: str) -> GameSpec:
    if isinstance(value, GameSpec):
        return value
    if inspect.isclass(value) and issubclass(value, MeanFieldGame):
        return GameSpec(getattr(value, "name", value.__name__), value)
    raise ValueError(f"{where} is a {type(value).__name__}; expected a GameSpec or a MeanFieldGame subclass")


def _resolve_file(reference: str, path_text: str, attribute: str | None, expected_sha: str | None,
                  stored_path: str | None) -> tuple[GameSpec, GameSource]:
    path = Path(path_text)
    if not path.is_file() and stored_path is not None and Path(stored_path).is_file():
        path = Path(stored_path)
    if not path.is_file():
        raise ValueError(f"game file {path_text} does not exist" +
                         (f" (nor {stored_path}, where the run found it)" if stored_path else ""))
    path = path.resolve()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if expected_sha is not None and sha != expected_sha:
        raise ValueError(f"game file {path} changed since the run was trained (sha256 {sha[:12]} vs "
                         f"{expected_sha[:12]}); restore it or train a new run")
    module = _file_module(path, sha)
    if attribute:
        if not hasattr(module, attribute):
            raise ValueError(f"game file {path} has no attribute {attribute!r}")
        spec = _as_spec(getattr(module, attribute), f"{path}:{attribute}")
    else:
        specs = [v for v in vars(module).values() if isinstance(v, GameSpec)]
        if len(specs) != 1:
            raise ValueError(f"game file {path} must define exactly one GameSpec (found {len(specs)}); "
                             f"or name it: {path_text}:ATTRIBUTE")
        spec = specs[0]
    return spec, GameSource(reference, spec.name, str(path), sha)


def resolve_game(reference: str, source: GameSource | Mapping[str, Any] | None = None) -> tuple[GameSpec, GameSource]:
    """The spec a game reference names, and where it came from.

    ``source`` is what a run folder recorded: the file is then looked up where it was (if the
    reference is relative and the working directory moved) and must be unchanged.
    """
    if not isinstance(reference, str) or not reference:
        raise ValueError(f"env must be a game name or a reference to a game, got {reference!r}")
    if isinstance(source, Mapping):
        source = GameSource(**source)
    if reference in _REGISTRY and not is_reference(reference):
        return _REGISTRY[reference], GameSource(reference, reference)
    if not is_reference(reference):
        raise ValueError(f"unknown game {reference!r}; registered: {', '.join(registered_games())}; "
                         f"or give a game file (path/to/game.py) or module:attribute")
    cached = _BY_REFERENCE.get(reference)
    if cached is not None and (source is None or source.sha256 is None):
        return cached
    path_text, _, attribute = reference.rpartition(":") if ".py:" in reference else (reference, "", "")
    if path_text.endswith(".py") or "/" in path_text:
        resolved = _resolve_file(reference, path_text, attribute or None,
                                 None if source is None else source.sha256,
                                 None if source is None else source.path)
    else:
        spec = _as_spec(_load_attribute(reference), reference)
        module_file = getattr(sys.modules.get(reference.partition(":")[0]), "__file__", None)
        resolved = spec, GameSource(reference, spec.name, module_file)
    # Registered by name too, so that tools holding only the game (its ``name``) find the spec; a
    # user game may not take the name of a game registered by code, but replaces one loaded from a file.
    register_game(resolved[0], replace=resolved[0].name in _FROM_REFERENCES)
    _FROM_REFERENCES.add(resolved[0].name)
    _BY_REFERENCE[reference] = resolved
    return resolved


def game_spec(reference: str) -> GameSpec:
    """The :class:`GameSpec` of a registered name or game reference."""
    return resolve_game(reference)[0]


def spec_of(game: MeanFieldGame) -> GameSpec | None:
    """The registered spec of ``game`` (by its ``name``), or None for a game built outside the registry."""
    return _REGISTRY.get(getattr(game, "name", None))


def make_game(reference: str, overrides: Mapping[str, Any] | None = None) -> MeanFieldGame:
    """The game ``reference`` names, with parameter ``overrides`` (validated by its factory)."""
    return game_spec(reference).make(overrides)
