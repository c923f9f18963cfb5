"""Recipe values: what a plain value (:class:`Field`) or a component (:class:`Component`) of
:data:`partsup.recipe.SCHEMA` allows, and the checks of one plain value (type, choices, lower
bound), each refused in one line naming the file and the key path."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from partsup.errors import RecipeError
from partsup.registry import describe_type, type_matches

NUM = (int, float)
NONE = type(None)


@dataclass(frozen=True)
class Field:
    """A plain recipe value: allowed types (or, for a field derived from a config dataclass, its
    annotation), default, optional choices, and an optional lower bound on a number (``at_least``
    inclusive, ``above`` exclusive; null, where allowed, is not checked)."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] = ()
    help: str = ""
    annotation: Any = None  # when set, checked with partsup.registry.type_matches
    at_least: float | None = None
    above: float | None = None


@dataclass(frozen=True)
class Component:
    """A registry-resolved value ``{name: ..., **kwargs}`` looked up in ``Registries.<kind>``."""

    kind: str
    default: dict[str, Any] | None = None
    required: bool = False
    supplied: tuple[str, ...] = ()  # factory arguments partsup passes itself
    help: str = ""
    positive: tuple[str, ...] = ()  # keyword arguments that must be finite numbers > 0


def plain_value(*types: type, default: Any = None, required: bool = False, choices: tuple = (),
                help: str = "", at_least: float | None = None,
                above: float | None = None) -> Field:
    """A plain (non-component) recipe value of one of ``types`` (numbers: ``>= at_least``,
    ``> above``)."""
    return Field(tuple(types), default, required, choices, help, at_least=at_least, above=above)


def _yaml_value(value: Any) -> Any:
    """A dataclass default as YAML reads it back (tuples become lists)."""
    if isinstance(value, (tuple, list)):
        return [_yaml_value(v) for v in value]
    return value


def config_fields(cls: type, help: dict[str, str]) -> dict[str, Field]:
    """The recipe section of a config dataclass: one :class:`Field` per dataclass field, with
    the field's default and its annotation as the type (tuples read as YAML lists), so the
    recipe's defaults cannot drift from the class's. ``help`` describes fields for users."""
    hints = typing.get_type_hints(cls)
    out: dict[str, Field] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} has no default: a recipe value needs one")
        out[f.name] = Field((), _yaml_value(default), help=help.get(f.name, ""),
                            annotation=hints[f.name])
    return out


def validate_field(value: Any, spec: Field, path: str, source: str, present: bool) -> Any:
    if spec.required and (not present or value is None):
        raise RecipeError(f"{source}: missing required value {path!r} ({describe_types(spec.types)})")
    if value is None and NONE in spec.types:
        return None
    if value is None and not present:
        return None
    if spec.annotation is not None:
        if not type_matches(value, spec.annotation):
            raise RecipeError(f"{source}: {path}: expected {describe_type(spec.annotation)}, "
                              f"got {value!r}")
        return value
    ok = any(is_type(value, t) for t in spec.types)
    if not ok:
        raise RecipeError(f"{source}: {path}: expected {describe_types(spec.types)}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise RecipeError(f"{source}: {path}: expected one of "
                          f"{', '.join(map(str, spec.choices))}, got {value!r}")
    if float in spec.types and isinstance(value, int) and int not in spec.types:
        value = float(value)
    check_bound(value, spec, path, source)
    return value


def check_bound(value: Any, spec: Field, path: str, source: str) -> None:
    """Refuse a number under the field's lower bound (NaN too), naming the key and the rule."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for bound, ok, rule in ((spec.at_least, lambda b: value >= b, ">="),
                            (spec.above, lambda b: value > b, ">")):
        if bound is not None and not ok(bound):
            none = " (or null)" if NONE in spec.types else ""
            raise RecipeError(f"{source}: {path}: must be {rule} {bound:g}{none}, got {value!r}")


def is_type(value: Any, t: type) -> bool:
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def describe_types(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             list: "a list", dict: "a mapping", NONE: "null"}
    seen: list[str] = []
    for t in types:
        n = names.get(t, t.__name__)
        if n not in seen:
            seen.append(n)
    return " or ".join(seen)
