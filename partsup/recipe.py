"""Recipes: one flat YAML per run, validated up front.

``load_recipe(path, overrides, registries)`` reads YAML with ``yaml.safe_load``, substitutes
``${ENV_VAR}`` (or ``${ENV_VAR:-default}``) in strings, applies ``a.b=value`` overrides, fills
defaults from :data:`SCHEMA`, and validates every key: unknown keys (with the closest valid key),
wrong types, missing required values and unknown component names all raise :class:`RecipeError`
naming the file, the key path and what was expected. A component is ``{name: ..., **kwargs}``
(or just a name); its kwargs are checked against the registered factory's signature.

``task:`` says what a recipe trains: ``segment`` (the default: the two-branch detector) or
``classify`` (a crop classifier, section ``classifier:``); keys only one task reads
(:data:`TASK_ONLY`) are refused in the other's recipes and left out of its resolved recipe, so a
segment recipe needs no ``classifier:`` and a classify recipe no ``labels:`` or ``model:``.

Sections that configure a dataclass (``data.patch``: :class:`PatchConfig`, ``data.augment``:
:class:`AugmentConfig`) are derived from its fields (:func:`config_fields`), so their defaults
live only in the dataclass. Reading YAML, ``${ENV}`` and ``--set`` parsing live in
:mod:`partsup.recipe_yaml`. Components that only plugins provide (``labels.weak``,
``loss.weak``) have no default: a recipe names them.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from partsup.data.sampling import AugmentConfig, PatchConfig
from partsup.errors import PartsupError, RecipeError
from partsup.hookspecs import KIND_BY_ATTR
from partsup.manager import Registries, make_plugin_manager
from partsup.output.atomic import write_text
from partsup.recipe_yaml import (join_key, ordered_overrides, parse_override, read_yaml,  # noqa: F401
                                 safe_load, substitute_env)
from partsup.recipe_fields import NONE as _NONE
from partsup.recipe_fields import (NUM, Component, Field, config_fields, is_type,  # noqa: F401
                                   plain_value, validate_field)
from partsup.registry import closest, component_kwargs

__all__ = ["SCHEMA", "TASKS", "TASK_ONLY", "Component", "Field", "apply_override",
           "component_kwargs", "config_fields", "load_recipe", "load_run", "ordered_overrides",
           "parse_override", "plain_value", "read_yaml", "safe_load", "save_resolved",
           "substitute_env"]

PATCH_HELP = {
    "size": "positive patch size: int or [h, w] in px",
    "negative_size": "negative patch size (defaults to size)",
    "strong_fraction": "share of samples drawn from set A",
    "shift": "positive patches: 9-direction translation, fraction of patch size",
    "negative_tries": "tries to place a negative patch where no object is",
    "hard_negative_fraction": "share of negative patches centred on hard negatives",
}
AUGMENT_HELP = {
    "geometric": "paper: mirror, 9 shifts, rotations",
    "rotations": "number of rotation angles for positives",
    "stain": "HED stain jitter",
    "stain_sigma": "HED jitter strength (alpha, beta range)",
    "jitter": "colour jitter: brightness, contrast, saturation, hue",
}

#: what a recipe trains (``task:``)
TASKS = ("segment", "classify")
#: keys that only one task reads (``key path -> task``): a recipe of the other task may not set
#: them, and its resolved recipe leaves them out
TASK_ONLY = {
    "classifier": "classify", "data.train": "classify", "data.negatives": "classify",
    "data.strong": "segment", "data.weak": "segment", "data.patch": "segment",
    "data.mpp": "segment", "labels": "segment", "loss": "segment", "model": "segment",
    "detect": "segment", "calibrate": "segment", "eval": "segment", "train.schedule": "segment",
    "train.weak_iterations": "segment", "train.val_sweep": "segment",
}

#: The full recipe schema. Sections are dicts; leaves are Field or Component.
SCHEMA: dict[str, Any] = {
    "name": plain_value(str, required=True, help="run / recipe name"),
    "description": plain_value(str, default=""),
    "plugins": plain_value(list, default=[], help="extra plugin modules to import"),
    "seed": plain_value(int, default=0),
    "device": plain_value(str, default="auto", choices=("auto", "cpu", "cuda")),
    "task": plain_value(str, default="segment", choices=TASKS,
                        help="segment: the two-branch detector; classify: a crop classifier "
                             "(docs/training.md)"),
    "classifier": {
        "crop_um": plain_value(*NUM, required=True, above=0,
                               help="side of the square crop around each point, micrometres"),
        "mpp": plain_value(*NUM, _NONE, default=None, above=0,
                           help="um/px the classifier works at (default: its training "
                                "samples' um/px, when they agree)"),
        "heads": plain_value(dict, required=True,
                             help="{head: [class, ...]}: a labelling head's classes are point "
                                  "labels"),
        "verify": plain_value(dict, _NONE, default=None,
                              help="{head, positive}: the head whose classes are positive "
                                   "(every point) and negative (hard negatives, mined "
                                   "candidates); null: none"),
        "model": Component("classifiers", supplied=("heads",), default={"name": "cnn"},
                           help="the crop network"),
    },
    "data": {
        "train": Component("datasets", required=True,
                           help="task classify: the training split (its points and hard "
                                "negatives)"),
        "strong": Component("datasets", help="set A: pixel masks (and their centroids)"),
        "weak": Component("datasets", help="set B: centroid points only"),
        "val": Component("datasets", help="validation split (F1 during training, calibration)"),
        "test": Component("datasets", help="test split (evaluate)"),
        "negatives": {
            "hard": plain_value(bool, default=True,
                                help="the training split's hard negatives are negatives"),
            "mined": plain_value(str, _NONE, default=None,
                                 help="folder of <image id>.csv detections (what partsup "
                                      "predict writes) on training images: more negatives"),
            "jitter_um": plain_value(*NUM, default=0.0, at_least=0,
                                     help="every training crop's centre moves by up to this, "
                                          "micrometres"),
        },
        "patch": config_fields(PatchConfig, PATCH_HELP),
        "augment": config_fields(AugmentConfig, AUGMENT_HELP),
        "normalize": Component("normalizers",
                               help="colour normalisation to a reference, in training and "
                                    "prediction: {name, reference: image file}; null: none"),
        "num_workers": plain_value(int, default=0, at_least=0),
        "mpp": plain_value(*NUM, _NONE, default=None,
                           help="um/px the model works at: predict resamples inputs of known "
                                "um/px to it (default: training sets it from its samples' "
                                "um/px when they agree; else predict uses the plugin's "
                                "default um/px)"),
    },
    "labels": {
        "weak": Component("label_makers", required=True,
                          help="weak targets rendered from points (a plugin's label maker)"),
        "weak_set_a": Component("label_makers",
                                help="weak labels of set-A samples (default: labels.weak)"),
    },
    "loss": {
        "weak": Component("losses", required=True, help="loss of the weak branch"),
        "strong": Component("losses", default={"name": "pixel_ce", "reduction": "mean"}),
    },
    "model": {
        "backbone": Component("backbones", required=True),
        "mode": plain_value(str, default="transfer",
                            choices=("transfer", "independent", "weak_only")),
        "stop_gradient": plain_value(bool, default=True),
        "shared_backbone": plain_value(bool, default=False),
        "transfer": Component("weight_transfers", supplied=("d_in", "d_out"),
                              default={"name": "mlp", "layers": 2, "activation": "leaky_relu"}),
    },
    "train": {
        "schedule": plain_value(str, default="end2end", choices=("end2end", "stagewise")),
        "optimizer": Component("optimizers", supplied=("model", "iterations"),
                               default={"name": "adamw", "lr": 1.0e-3}, positive=("lr",)),
        "iterations": plain_value(int, default=1000, at_least=1),
        "weak_iterations": plain_value(int, _NONE, default=None,
                                       help="stagewise: iterations of the weak stage "
                                            "(default half)"),
        "batch_size": plain_value(int, default=4, at_least=1),
        "amp": plain_value(bool, default=True, help="bf16 autocast on GPU (ignored on CPU)"),
        "grad_clip": plain_value(*NUM, _NONE, default=None, above=0),
        "val_every": plain_value(int, default=500, at_least=0),
        "val_sweep": plain_value(bool, default=True,
                                 help="validation F1: best over the calibrate: grid (what "
                                      "calibration would reach); false: with the detect: values"),
        "checkpoint_every": plain_value(int, default=500, at_least=1),
        "keep_last": plain_value(int, default=2, at_least=1),
        "log_every": plain_value(int, default=10, at_least=1),
    },
    "detect": {
        "w": plain_value(*NUM, default=0.5, help="fusion weight of the weak map"),
        "sigma": plain_value(*NUM, default=1.0, help="Gaussian smoothing sigma, px"),
        "a1": plain_value(*NUM, default=0.0, help="keep blobs with area > a1"),
        "s1": plain_value(*NUM, default=0.5, help="keep blobs with mean probability > s1"),
        "threshold": plain_value(str, *NUM, default="otsu",
                                 help="foreground rule: otsu (over the whole map, the "
                                      "paper's) or a fixed probability in (0, 1)"),
        "area_unit": plain_value(str, default="px", choices=("px", "um2")),
        "filters": plain_value(list, default=[], help="extra named filters [{name: ..., ...}]"),
        "tile": plain_value(int, default=512, help="inference tile size, px"),
        "overlap": plain_value(int, default=64, help="inference tile overlap, px"),
        "batch_tiles": plain_value(int, default=4),
        "tta": plain_value(bool, default=False, help="average maps over the 8 dihedral transforms "
                           "(8x inference time)"),
    },
    "calibrate": {
        "w": plain_value(list, default=[round(0.1 * i, 1) for i in range(11)]),
        "s1": plain_value(list, default=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8]),
        "a1": plain_value(list, default=[0, 20, 50, 100, 200, 300]),
        "threshold": plain_value(list, _NONE, default=None,
                                 help="foreground rules to try (otsu and/or probabilities); "
                                      "default: only detect.threshold"),
    },
    "eval": {
        "protocol": plain_value(str, _NONE, default=None,
                                help="matching protocol (default: the dataset's own protocol, "
                                     "else the core's microns protocol)"),
        "radius_um": plain_value(*NUM, _NONE, default=None,
                                 help="override the protocol's radius, um"),
        "radius_px": plain_value(*NUM, _NONE, default=None,
                                 help="override the protocol's radius in pixels (the "
                                      "paper's 20 / 32 px)"),
    },
}

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
                did = f" Did you mean {join_key('.'.join(keys[:i]), hint)!r}?" if hint else ""
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
                registries: Registries | None = None, data: dict[str, Any] | None = None,
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
    present = isinstance(raw, dict) and "task" in raw
    task = validate_field(raw["task"] if present else SCHEMA["task"].default, SCHEMA["task"],
                          "task", source, present)
    resolved = _validate_section(raw, SCHEMA, "", source, registries, task)
    return resolved


def _validate_section(value: Any, schema: dict[str, Any], path: str, source: str,
                      registries: Registries | None, task: str = "segment") -> dict[str, Any]:
    """The resolved ``value`` of the schema section at ``path`` (keys of another task than
    ``task`` refused when given, left out otherwise: :data:`TASK_ONLY`)."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecipeError(f"{source}: {path or '<top>'}: expected a mapping, got {value!r}")
    for key in value:
        if key not in schema:
            hint = closest(str(key), list(schema))
            did = f" Did you mean {join_key(path, hint)!r}?" if hint else ""
            raise RecipeError(f"{source}: unknown key {join_key(path, key)!r}.{did} "
                              f"Valid here: {', '.join(schema)}")
        owner = TASK_ONLY.get(join_key(path, key), task)
        if owner != task:
            raise RecipeError(f"{source}: {join_key(path, key)!r} belongs to task: {owner} "
                              f"recipes; this one is task: {task} (remove the key, or set "
                              f"task: {owner})")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        kpath = join_key(path, key)
        if TASK_ONLY.get(kpath, task) != task:
            continue
        present = key in value
        if isinstance(spec, dict):
            out[key] = _validate_section(value.get(key), spec, kpath, source, registries, task)
        elif isinstance(spec, Component):
            out[key] = _validate_component(value.get(key) if present else None, spec, kpath,
                                           source, registries)
        else:
            out[key] = validate_field(value[key] if present else copy.deepcopy(spec.default),
                                       spec, kpath, source, present)
    return out


def _validate_component(value: Any, spec: Component, path: str, source: str,
                        registries: Registries | None) -> dict[str, Any] | None:
    if value is None:
        if spec.required:
            label = KIND_BY_ATTR[spec.kind].label
            known = getattr(registries, spec.kind).names() if registries is not None else []
            hint = f"; registered: {', '.join(known)}" if known else ""
            raise RecipeError(f"{source}: missing required value {path!r} (a {label} "
                              f"component: {{name: ..., options}}{hint})")
        value = copy.deepcopy(spec.default)
        if value is None:
            return None
    name, kwargs = component_kwargs(value, f"{source}: {path}")
    if registries is not None:
        getattr(registries, spec.kind).check_kwargs(name, kwargs, where=f"{source}: {path}",
                                                    supplied=spec.supplied)
    for key in spec.positive:
        v = kwargs.get(key, 1.0)
        if not (is_type(v, float) and math.isfinite(v) and v > 0):
            raise RecipeError(f"{source}: {path}.{key}: must be a number > 0, got {v!r}")
    return value if isinstance(value, dict) else {"name": name}


def save_resolved(recipe: dict[str, Any], run_dir: str | Path) -> Path:
    """Write the fully resolved recipe to ``run_dir/recipe.yaml`` (atomically)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dest = run_dir / "recipe.yaml"
    return write_text(dest, yaml.safe_dump(recipe, sort_keys=False))


def load_run(path: str | Path, overrides: Iterable[str] = (), modules: Iterable[str] = (),
             env: dict[str, str] | None = None) -> tuple[dict[str, Any], Registries]:
    """Read a recipe, build the run's plugin manager (including the recipe's ``plugins:`` and
    ``modules`` from ``--plugin``), and validate the recipe against its registries.

    Returns ``(resolved_recipe, registries)``.
    """
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
