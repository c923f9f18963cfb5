"""Recipe text: YAML reading, ``${ENV_VAR}`` substitution and ``--set`` override parsing.

Nothing here knows the schema (:mod:`partsup.recipe` validates). ``1e-3`` reads as a number
(YAML 1.2), malformed YAML is a one-line :class:`RecipeError` naming file, line and column, and
an unset environment variable is a one-line error naming every key that uses it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from partsup.errors import RecipeError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(value: Any, path: str, source: str, env: dict[str, str] | None = None,
                   missing: dict[str, list[str]] | None = None) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of ``value``.

    A variable that is not set (and has no default) raises a RecipeError naming every unset
    variable, where each is used, and how to fix it (or, with ``missing``, is collected there:
    variable -> recipe keys).
    """
    env = os.environ if env is None else env
    collect: dict[str, list[str]] = {} if missing is None else missing
    if isinstance(value, dict):
        out: Any = {k: substitute_env(v, join_key(path, k), source, env, collect)
                    for k, v in value.items()}
    elif isinstance(value, list):
        out = [substitute_env(v, f"{path}[{i}]", source, env, collect)
               for i, v in enumerate(value)]
    elif isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in env:
                return env[var]
            if default is not None:
                return default
            collect.setdefault(var, []).append(path)
            return m.group(0)
        out = _ENV.sub(repl, value)
    else:
        out = value
    if missing is None and collect:
        raise RecipeError(f"{source}: "
                          + "; ".join(_unset_hint(v, keys) for v, keys in collect.items()))
    return out


def _unset_hint(var: str, keys: list[str]) -> str:
    """``KEYS: environment variable ${VAR} is not set (how to fix it)``."""
    fixes = [f"export {var}=..."]
    if any(k.startswith("data.") and k.endswith(".root") for k in keys):
        fixes = [f"export {var}=<the folder holding the datasets> (`partsup datasets` shows "
                 f"each one's layout and where to get it; `partsup synth` writes synthetic ones)"]
    if any(k.endswith(".weights") for k in keys):
        key = next(k for k in keys if k.endswith(".weights"))
        fixes = [f"export {var}=<the folder with the weight file> (docs/backbones.md says how "
                 f"to get it)", f"train from random weights with --set {key}=null"]
    return (f"{', '.join(keys)}: environment variable ${{{var}}} is not set ("
            + ", or ".join(fixes) + f", or write ${{{var}:-default}} in the recipe)")


def join_key(path: str, key: Any) -> str:
    """``"a.b"`` + ``c`` -> ``"a.b.c"`` (a key path in messages)."""
    return f"{path}.{key}" if path else str(key)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` / ``2E+5`` as numbers (YAML 1.2; YAML 1.1
    needs a dot, ``1.0e-3``, and reads ``1e-3`` as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that also reads scientific notation without a dot as a number."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file with :func:`safe_load`; malformed YAML is a one-line RecipeError."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe {p} not found")
    try:
        data = safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{p}:{where}: malformed YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: a recipe must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> (["a", "b"], 3); the value is parsed as YAML (safe)."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise RecipeError(f"--set {text!r}: empty key")
    try:
        value = safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def ordered_overrides(overrides: Iterable[str]) -> list[str]:
    """``--set`` texts with the ones that set a component's ``name`` first (so that
    ``--set model.backbone.width=16`` given before ``...name=tiny_cnn`` still applies)."""
    items = list(overrides)
    return sorted(items, key=lambda t: not t.split("=", 1)[0].strip().endswith(".name"))
