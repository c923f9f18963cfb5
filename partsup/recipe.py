"""Recipes: one flat YAML per run, validated up front.

``load_recipe(path, overrides, registries)`` reads YAML with ``yaml.safe_load``, substitutes
``${ENV_VAR}`` (or ``${ENV_VAR:-default}``) in strings, applies ``a.b=value`` overrides, fills
defaults from :data:`SCHEMA`, and validates every key: unknown keys (with the closest valid key),
wrong types, missing required values and unknown component names all raise :class:`RecipeError`
naming the file, the key path and what was expected. A component is ``{name: ..., **kwargs}``
(or just a name); its kwargs are checked against the registered factory's signature.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from partsup.errors import PartsupError, RecipeError
from partsup.registry import closest
from partsup.output.atomic import write_text

_NONE = type(None)


@dataclass(frozen=True)
class Field:
    """A plain recipe value: allowed types, default, and optional choices."""

    types: tuple[type, ...]
    default: Any = None
    required: bool = False
    choices: tuple[Any, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class Component:
    """A registry-resolved value ``{name: ..., **kwargs}`` looked up in ``Registries.<kind>``."""

    kind: str
    default: dict[str, Any] | None = None
    required: bool = False
    supplied: tuple[str, ...] = ()  # factory arguments partsup passes itself
    help: str = ""


def F(*types: type, default: Any = None, required: bool = False, choices: tuple = (),
      help: str = "") -> Field:
    return Field(tuple(types), default, required, choices, help)


NUM = (int, float)

#: The full recipe schema. Sections are dicts; leaves are Field or Component.
SCHEMA: dict[str, Any] = {
    "name": F(str, required=True, help="run / recipe name"),
    "description": F(str, default=""),
    "plugins": F(list, default=[], help="extra plugin modules to import"),
    "seed": F(int, default=0),
    "device": F(str, default="auto", choices=("auto", "cpu", "cuda")),
    "data": {
        "strong": Component("datasets", help="set A: pixel masks (and their centroids)"),
        "weak": Component("datasets", help="set B: centroid points only"),
        "val": Component("datasets", help="validation split (F1 during training, calibration)"),
        "test": Component("datasets", help="test split (evaluate)"),
        "patch": {
            "size": F(int, list, default=256, help="positive patch size: int or [h, w] in px"),
            "negative_size": F(int, list, _NONE, default=None,
                               help="negative patch size (defaults to size)"),
            "positive_fraction": F(*NUM, default=0.5),
            "strong_fraction": F(*NUM, default=0.5, help="share of samples drawn from set A"),
            "shift": F(*NUM, default=0.25,
                       help="positive patches: 9-direction translation, fraction of patch size"),
            "hard_negative_fraction": F(*NUM, default=0.0,
                                        help="share of negative patches centred on hard negatives"),
        },
        "augment": {
            "geometric": F(bool, default=True, help="paper: mirror, 9 shifts, rotations"),
            "rotations": F(int, default=8, help="number of rotation angles for positives"),
            "stain": F(bool, default=False, help="HED stain jitter"),
            "color_jitter": F(bool, default=False),
            "stain_sigma": F(*NUM, default=0.05, help="HED jitter strength (alpha, beta range)"),
        },
        "num_workers": F(int, default=0),
    },
    "labels": {
        "weak": Component("label_makers", default={"name": "concentric"}),
        "weak_set_a": Component("label_makers",
                                help="weak labels of set-A samples (default: labels.weak)"),
    },
    "loss": {
        "weak": Component("losses", default={"name": "concentric", "reduction": "mean"}),
        "strong": Component("losses", default={"name": "pixel_ce", "reduction": "mean"}),
    },
    "model": {
        "backbone": Component("backbones", required=True),
        "mode": F(str, default="transfer", choices=("transfer", "independent", "weak_only")),
        "stop_gradient": F(bool, default=True),
        "shared_backbone": F(bool, default=False),
        "transfer": Component("weight_transfers", supplied=("d_in", "d_out"),
                              default={"name": "mlp", "layers": 2, "activation": "leaky_relu"}),
    },
    "train": {
        "schedule": F(str, default="end2end", choices=("end2end", "stagewise")),
        "optimizer": Component("optimizers", supplied=("model", "iterations"),
                               default={"name": "adamw", "lr": 1.0e-3}),
        "iterations": F(int, default=1000),
        "weak_iterations": F(int, _NONE, default=None,
                             help="stagewise: iterations of the weak stage (default half)"),
        "batch_size": F(int, default=4),
        "amp": F(bool, default=True, help="bf16 autocast on GPU (ignored on CPU)"),
        "grad_clip": F(*NUM, _NONE, default=None),
        "val_every": F(int, default=500),
        "val_sweep": F(bool, default=True, help="validation F1: best over the calibrate: grid "
                       "(what calibration would reach); false: with the detect: values"),
        "checkpoint_every": F(int, default=500),
        "keep_last": F(int, default=2),
        "log_every": F(int, default=10),
    },
    "detect": {
        "w": F(*NUM, default=0.5, help="fusion weight of the weak map"),
        "sigma": F(*NUM, default=1.0, help="Gaussian smoothing sigma, px"),
        "a1": F(*NUM, default=0.0, help="keep blobs with area > a1"),
        "s1": F(*NUM, default=0.5, help="keep blobs with mean probability > s1"),
        "threshold": F(str, *NUM, default="otsu",
                       help="foreground rule: otsu (over the whole map, the paper's) or a fixed "
                            "probability in (0, 1)"),
        "area_unit": F(str, default="px", choices=("px", "um2")),
        "filters": F(list, default=[], help="extra named filters [{name: ..., ...}]"),
        "tile": F(int, default=512, help="inference tile size, px"),
        "overlap": F(int, default=64, help="inference tile overlap, px"),
        "batch_tiles": F(int, default=4),
        "tta": F(bool, default=False, help="average maps over the 8 dihedral transforms "
                 "(8x inference time)"),
    },
    "calibrate": {
        "w": F(list, default=[round(0.1 * i, 1) for i in range(11)]),
        "s1": F(list, default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
        "a1": F(list, default=[0, 20, 50, 100, 200, 300]),
        "threshold": F(list, _NONE, default=None,
                       help="foreground rules to try (otsu and/or probabilities); "
                            "default: only detect.threshold"),
    },
    "eval": {
        "protocol": F(str, default="amida13"),
        "radius_um": F(*NUM, _NONE, default=None, help="override the protocol's radius, um"),
        "radius_px": F(*NUM, _NONE, default=None,
                       help="override the protocol's radius in pixels (the paper's 20 / 32 px)"),
    },
}

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
        out: Any = {k: substitute_env(v, _join(path, k), source, env, collect)
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


def _join(path: str, key: Any) -> str:
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


def apply_override(recipe: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    """Set ``recipe[k1][k2]... = value`` after checking the path exists in the schema.

    Setting the ``name`` of a component (other than a dataset) to another component drops the
    section's other options: they were the previous component's (``--set
    model.backbone.name=tiny_cnn`` does not keep quickstart's ``arch`` and ``encoder``).
    """
    node: Any = SCHEMA
    target = recipe
    for i, key in enumerate(keys):
        path = ".".join(keys[: i + 1])
        last = i == len(keys) - 1
        if isinstance(node, dict):
            if key not in node:
                hint = closest(key, list(node))
                did = f" Did you mean {_join('.'.join(keys[:i]), hint)!r}?" if hint else ""
                raise RecipeError(f"{source}: --set {'.'.join(keys)}: unknown key {path!r}.{did}")
            node = node[key]
        elif isinstance(node, Component):
            if last and key == "name" and node.kind != "datasets" and \
                    isinstance(target.get("name"), str) and target["name"] != value:
                target.clear()  # the previous component's options
            node = None  # component kwargs: checked against the factory signature later
        if last:
            target[key] = value
        else:
            nxt = target.get(key)
            if isinstance(node, Component) or node is None:
                if isinstance(nxt, str):
                    nxt = {"name": nxt}
                if nxt is None:
                    nxt = copy.deepcopy(node.default) if isinstance(node, Component) and node.default else {}
            elif not isinstance(nxt, dict):
                nxt = {}
            target[key] = nxt
            target = nxt


def load_recipe(path: str | Path | None = None, overrides: Iterable[str] = (),
                registries: Any = None, data: dict[str, Any] | None = None,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """Read, override, default and validate a recipe; return the resolved plain dict.

    Args:
        path: the YAML file (or None with ``data``).
        overrides: ``"a.b=value"`` strings (``--set``), applied after reading.
        registries: a :class:`partsup.manager.Registries`; when given, component names and
            their keyword arguments are validated against the registered factories.
        data: an already-parsed recipe (used instead of ``path``).
    """
    source = str(path) if path is not None else "<recipe>"
    raw = copy.deepcopy(data) if data is not None else read_yaml(path)  # type: ignore[arg-type]
    for text in ordered_overrides(overrides):
        keys, value = parse_override(text)
        apply_override(raw, keys, value, source)
    raw = substitute_env(raw, "", source, env)
    resolved = _validate_section(raw, SCHEMA, "", source, registries)
    return resolved


def _validate_section(value: Any, schema: dict[str, Any], path: str, source: str,
                      registries: Any) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecipeError(f"{source}: {path or '<top>'}: expected a mapping, got {value!r}")
    for key in value:
        if key not in schema:
            hint = closest(str(key), list(schema))
            did = f" Did you mean {_join(path, hint)!r}?" if hint else ""
            raise RecipeError(f"{source}: unknown key {_join(path, key)!r}.{did} "
                              f"Valid here: {', '.join(schema)}")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        kpath = _join(path, key)
        present = key in value
        if isinstance(spec, dict):
            out[key] = _validate_section(value.get(key), spec, kpath, source, registries)
        elif isinstance(spec, Component):
            out[key] = _validate_component(value.get(key) if present else None, spec, kpath,
                                           source, registries)
        else:
            out[key] = _validate_field(value[key] if present else copy.deepcopy(spec.default),
                                       spec, kpath, source, present)
    return out


def _validate_field(value: Any, spec: Field, path: str, source: str, present: bool) -> Any:
    if spec.required and (not present or value is None):
        raise RecipeError(f"{source}: missing required value {path!r} ({_types(spec.types)})")
    if value is None and _NONE in spec.types:
        return None
    if value is None and not present:
        return None
    ok = any(_is(value, t) for t in spec.types)
    if not ok:
        raise RecipeError(f"{source}: {path}: expected {_types(spec.types)}, got {value!r}")
    if spec.choices and value not in spec.choices:
        raise RecipeError(f"{source}: {path}: expected one of "
                          f"{', '.join(map(str, spec.choices))}, got {value!r}")
    if float in spec.types and isinstance(value, int) and int not in spec.types:
        value = float(value)
    return value


def _is(value: Any, t: type) -> bool:
    if t is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, t)


def _types(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
             list: "a list", dict: "a mapping", _NONE: "null"}
    seen: list[str] = []
    for t in types:
        n = names.get(t, t.__name__)
        if n not in seen:
            seen.append(n)
    return " or ".join(seen)


def _validate_component(value: Any, spec: Component, path: str, source: str,
                        registries: Any) -> dict[str, Any] | None:
    if value is None:
        if spec.required:
            raise RecipeError(f"{source}: missing required value {path!r} "
                              f"(a {spec.kind} component: {{name: ..., options}})")
        value = copy.deepcopy(spec.default)
        if value is None:
            return None
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or "name" not in value:
        raise RecipeError(f"{source}: {path}: expected a component {{name: ..., options}}, "
                          f"got {value!r}")
    if not isinstance(value["name"], str):
        raise RecipeError(f"{source}: {path}.name: expected a string, got {value['name']!r}")
    if registries is not None:
        registry = getattr(registries, spec.kind)
        kwargs = {k: v for k, v in value.items() if k != "name"}
        registry.check_kwargs(value["name"], kwargs, where=f"{source}: {path}",
                              supplied=spec.supplied)
    return value


def component_kwargs(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Split a resolved component into (name, kwargs)."""
    return spec["name"], {k: v for k, v in spec.items() if k != "name"}


def save_resolved(recipe: dict[str, Any], run_dir: str | Path) -> Path:
    """Write the fully resolved recipe to ``run_dir/recipe.yaml`` (atomically)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dest = run_dir / "recipe.yaml"
    return write_text(dest, yaml.safe_dump(recipe, sort_keys=False))


def load_run(path: str | Path, overrides: Iterable[str] = (), modules: Iterable[str] = (),
             env: dict[str, str] | None = None) -> tuple[dict[str, Any], Any]:
    """Read a recipe, build the run's plugin manager (including the recipe's ``plugins:`` and
    ``modules`` from ``--plugin``), and validate the recipe against its registries.

    Returns ``(resolved_recipe, registries)``.
    """
    from partsup.manager import Registries, make_plugin_manager

    raw = read_yaml(path)
    for text in ordered_overrides(overrides):
        keys, value = parse_override(text)
        apply_override(raw, keys, value, str(path))
    extra = raw.get("plugins") or []
    if not isinstance(extra, list) or not all(isinstance(m, str) for m in extra):
        raise RecipeError(f"{path}: plugins: expected a list of module names, got {extra!r}")
    plugins = list(dict.fromkeys([*modules, *extra]))
    registries = Registries.from_pm(make_plugin_manager(plugins))
    recipe = load_recipe(path, registries=registries, data=raw, env=env)
    recipe["plugins"] = plugins  # recorded in the run: predict/evaluate/calibrate load them
    try:
        registries.pm.hook.partsup_configure(recipe=recipe)
    except PartsupError:
        raise
    except Exception as exc:
        raise RecipeError(f"{path}: a plugin rejected the recipe: {type(exc).__name__}: {exc}") from exc
    return recipe, registries
