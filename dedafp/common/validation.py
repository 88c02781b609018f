"""One validation mechanism for every config dataclass: types from the type hints, ranges from a table.

A config class declares, next to its fields, a ``RULES`` table with one entry per numeric or
string-choice field, and is decorated with :func:`validated` (below ``@dataclass``)::

    @dataclass(frozen=True)
    @validated("fp")
    class FictitiousPlayConfig:
        RULES: ClassVar[dict[str, Rule]] = {"iterations": ">= 1", "lr": "> 0", "beta": "[0, 1]",
                                            "backend": ("nflows", "zuko")}
        iterations: int = 10
        ...
        def __post_init__(self) -> None:     # optional: cross-field rules only
            ...

On construction every field is checked:

* its type, read from the annotation (checked first): ``int`` (``True`` is not an integer), ``float`` (an int is
  accepted; NaN and ±inf never are), ``bool`` (only ``True``/``False``), ``str``, ``X | None``,
  unions, ``tuple[float, ...]`` (a list is accepted; the class may convert it), ``dict``, nested
  config dataclasses, ``Any``;
* its rule (checked after the class's own ``__post_init__``): an interval (``">= 1"``, ``"> 0"``,
  ``"<= 5"``, ``"[0, 1]"``, ``"(0, 1]"``, ``"any"`` for any finite number) for numbers, a tuple of
  allowed values for strings (a tuple may also hold one interval for the numeric part of a
  ``str | float`` field), or ``"array"`` for a vector or matrix field that also takes a number to
  broadcast: a finite number, nested lists of them or a numpy array, whatever the annotation (the
  class's own ``__post_init__`` checks the shape and converts).

No field can be forgotten: a field whose type admits a number and has no entry in ``RULES`` (or an
entry naming no field) is our bug and raises ``TypeError`` at the class's first construction, which
every config's test does. Errors are ``ValueError`` with one line naming the field, the expected
type and range and the value given: ``fp.iterations must be an integer >= 1, got 0``.

Why not pydantic (installed, 2.x)? Its dataclasses would be a second class kind beside the plain
frozen dataclasses the code base pickles, compares and ``dataclasses.replace``-s; its lax mode
coerces ``"1"`` and ``True`` to ``1`` while its strict mode refuses an int for a float field (YAML
writes ``1`` for ``1.0``); its errors are multi-line reports we would have to rewrite into the one
line the CLI prints; and its behaviour has changed across major versions (v1 -> v2), which the house
style asks us not to depend on silently. The checks we need (types of a dozen kinds, intervals,
choices, finiteness) fit in this module.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Union

__all__ = ["Rule", "validated", "check_value", "check_type", "check_range", "Interval", "parse_rule"]

#: A field's rule: an interval text (``">= 1"``, ``"(0, 1]"``, ``"any"``) or a tuple of allowed values.
Rule = str | tuple

_BOUND = re.compile(r"^\s*(>=|>|<=|<)\s*(\S+)\s*$")
_INTERVAL = re.compile(r"^\s*([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])\s*$")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A set of finite numbers: ``low < x`` (``low <= x`` if ``low_closed``) and ``x < high`` likewise."""

    low: float = -math.inf
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = True
    text: str = "any"

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def describe(self) -> str:
        """``>= 1``, ``in (0, 1]``, or empty for any finite number."""
        if self.text == "any":
            return ""
        return self.text if _BOUND.match(self.text) else f"in {self.text}"


def _is_interval(text: object) -> bool:
    return isinstance(text, str) and (text == "any" or bool(_BOUND.match(text)) or bool(_INTERVAL.match(text)))


def parse_rule(text: str) -> Interval:
    """The :class:`Interval` an interval text denotes; ``TypeError`` (our bug) if it denotes none."""
    text = text.strip()
    if text == "any":
        return Interval()
    match = _BOUND.match(text)
    if match:
        op, number = match.group(1), float(match.group(2))
        if op.startswith(">"):
            return Interval(low=number, low_closed=op == ">=", text=text)
        return Interval(high=number, high_closed=op == "<=", text=text)
    match = _INTERVAL.match(text)
    if match:
        return Interval(float(match.group(2)), float(match.group(3)), match.group(1) == "[", match.group(4) == "]",
                        text)
    raise TypeError(f"not a validation rule: {text!r} (use '>= 1', '> 0', '[0, 1]', '(0, 1]', 'any' or choices)")


def _kinds(hint: Any) -> list[Any]:
    """The members of a union hint (``int | None`` -> ``[int, NoneType]``), else ``[hint]``."""
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return list(typing.get_args(hint))
    return [hint]


def _admits_number(hint: Any) -> bool:
    return any(kind in (int, float) for kind in _kinds(hint))


def _admits_choices(hint: Any) -> bool:
    return any(kind is str for kind in _kinds(hint))


_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string",
          type(None): "null"}


def _describe_kind(kind: Any) -> str:
    if kind in _NAMES:
        return _NAMES[kind]
    origin = typing.get_origin(kind)
    if origin in (tuple, list):
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is not Ellipsis:
            return f"a pair of {_describe_kind(args[0]).removeprefix('a ').removeprefix('an ')}s"
        inner = _describe_kind(args[0]) if args else "values"
        return f"a list of {inner.removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict or kind is dict:
        return "a mapping"
    if dataclasses.is_dataclass(kind):
        return f"a {kind.__name__}"
    return getattr(kind, "__name__", str(kind))


def _matches(kind: Any, value: Any) -> bool:
    """``value`` has the type ``kind`` (elements of tuples checked too)."""
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    if kind is bool:
        return type(value) is bool
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str)
    origin = typing.get_origin(kind)
    if origin is Union or origin is types.UnionType:
        return any(_matches(k, value) for k in typing.get_args(kind))
    if origin is typing.Literal:
        return value in typing.get_args(kind)
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(kind)
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(args[0], v) for v in value)
        return len(args) == len(value) and all(_matches(a, v) for a, v in zip(args, value, strict=True))
    if origin is dict or kind is dict:
        return isinstance(value, dict)
    if isinstance(kind, type):
        return isinstance(value, kind)
    return True   # a hint we do not model (a Protocol, a callable): the class's own checks judge it


def _is_array(value: Any) -> bool:
    if hasattr(value, "tolist") and hasattr(value, "dtype"):     # a numpy array or scalar
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return all(_is_array(v) for v in value)
    return _matches(float, value)


def _parts(rule: Rule | None) -> tuple[tuple, Interval]:
    """A rule's string choices and its interval."""
    items = rule if isinstance(rule, tuple) else () if rule is None else (rule,)
    choices = tuple(c for c in items if not _is_interval(c))
    intervals = [parse_rule(c) for c in items if _is_interval(c)]
    return choices, intervals[0] if intervals else Interval()


def _expected(hint: Any, rule: Rule | None, with_type: bool = True) -> str:
    """``an integer >= 1``, ``None or in (0, 1)``, ``one of ('a', 'b') or a finite number > 0``."""
    choices, interval = _parts(rule)
    kinds = sorted(_kinds(hint), key=lambda k: k is not type(None))
    parts = []
    for kind in kinds:
        if kind is type(None):
            parts.append("None")
        elif kind is str and choices:
            parts.append(f"one of {choices}")
        elif kind in (int, float):
            bound = interval.describe()
            if kind is float and not with_type and bound.startswith("in "):    # "in (0, 1]", not "a number in"
                parts.append(bound)
            else:
                parts.append(_describe_kind(kind) + (f" {bound}" if bound else ""))
        else:
            parts.append(_describe_kind(kind))
    return " or ".join(dict.fromkeys(parts))


def check_type(name: str, hint: Any, value: Any, rule: Rule | None = None) -> None:
    """``ValueError`` naming ``name`` unless ``value`` has the hint's type (numbers finite), or is an
    ``"array"`` field's number or nested lists of numbers."""
    if rule == "array":
        if not _is_array(value):
            raise ValueError(f"{name} must be a finite number or a list of finite numbers (rows of a matrix), "
                             f"got {value!r}")
    elif not _matches(hint, value):
        raise ValueError(f"{name} must be {_expected(hint, rule)}, got {value!r}")


def check_range(name: str, hint: Any, value: Any, rule: Rule | None = None) -> None:
    """``ValueError`` naming ``name`` unless a well-typed ``value`` lies in its rule's interval or choices."""
    if rule == "array":
        return
    choices, interval = _parts(rule)
    if isinstance(value, str) and choices and value not in choices:
        raise ValueError(f"{name} must be {_expected(hint, rule)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value not in interval:
        raise ValueError(f"{name} must be {_expected(hint, rule, with_type=False)}, got {value!r}")


def check_value(name: str, hint: Any, value: Any, rule: Rule | None = None) -> None:
    """Check one value against its type hint and rule; ``ValueError`` naming ``name`` otherwise."""
    check_type(name, hint, value, rule)
    check_range(name, hint, value, rule)


def validated(section: str) -> Callable[[type], type]:
    """Class decorator (written below ``@dataclass``): check every field on construction.

    ``section`` prefixes field names in messages (``"fp"`` -> ``fp.iterations``; ``""`` for none).
    Order: every field's type (and finiteness), then the class's own ``__post_init__`` if any (it
    sees well-typed values: cross-field rules, conversions, or a more specific message for a range),
    then every field's range or choices.
    """
    def decorate(cls: type) -> type:
        own = cls.__dict__.get("__post_init__")
        table: list[tuple[str, Any, Rule | None]] = []

        def build(instance: Any) -> None:
            hints = typing.get_type_hints(type(instance))
            rules: dict[str, Rule] = dict(getattr(cls, "RULES", {}))
            names = [f.name for f in dataclasses.fields(instance)]
            unknown = sorted(set(rules) - set(names))
            missing = [n for n in names if n not in rules
                       and (_admits_number(hints[n]) or (_admits_choices(hints[n]) and n in rules))]
            if unknown or missing:
                raise TypeError(f"{cls.__name__}.RULES: rules for unknown fields {unknown}, "
                                f"numeric fields without a rule {missing}")
            for n in names:
                if isinstance(rules.get(n), str) and not (_is_interval(rules[n]) or rules[n] == "array"):
                    raise TypeError(f"{cls.__name__}.RULES[{n!r}]: {rules[n]!r} is not an interval; "
                                    f"write choices as a tuple")
                table.append((n, hints[n], rules.get(n)))

        def __post_init__(self: Any) -> None:
            if not table:
                build(self)
            prefix = f"{section}." if section else ""
            for name, hint, rule in table:
                check_type(prefix + name, hint, getattr(self, name), rule)
            if own is not None:
                own(self)
            for name, hint, rule in table:
                check_range(prefix + name, hint, getattr(self, name), rule)

        __post_init__.__doc__ = "Check every field (:func:`dedafp.common.validation.validated`)" + (
            f", then: {own.__doc__}" if own is not None and own.__doc__ else ".")
        cls.__post_init__ = __post_init__
        return cls
    return decorate
