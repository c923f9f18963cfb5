"""Opening a registered dataset by name for evaluation or calibration: the recipe's section
for it, where its root is (argument, recipe, ``$PARTSUP_DATA/<name>``, or the reader's own
default), and what to tell a user when there is none.
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from partsup.data.readers import layout_and_source
from partsup.errors import DataError
from partsup.manager import Registries


def recipe_dataset(name: str, split: str, recipe: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe's ``data:`` section for dataset ``name`` (preferring one with the same
    ``split``), as a plain dict; empty when the recipe names no such dataset."""
    sections = [s for s in ((recipe or {}).get("data") or {}).values()
                if isinstance(s, dict) and s.get("name") == name]
    same = [s for s in sections if s.get("split", "train") == split]
    return dict((same or sections or [{}])[0])


def dataset_root(name: str, root: str | None, recipe_section: dict[str, Any] | None = None
                 ) -> str | None:
    """Where dataset ``name`` lives: ``root`` if given, else the recipe section's root, else
    ``$PARTSUP_DATA/<name>`` when that folder exists."""
    if root:
        return str(root)
    if recipe_section and recipe_section.get("root"):
        return str(recipe_section["root"])
    base = os.environ.get("PARTSUP_DATA")
    if base and (Path(base) / name).is_dir():
        return str(Path(base) / name)
    return None


def missing_root_message(name: str, factory: Any) -> str:
    """What to tell a user who gave no root for dataset ``name``: the reader's expected layout
    (``LAYOUT``) and where to get the data (``SOURCE``)."""
    lines = [f"dataset {name!r} has no root folder: pass --data-root DIR "
             f"(or set PARTSUP_DATA so that $PARTSUP_DATA/{name} exists)."]
    help_text = layout_and_source(factory)
    if help_text:
        lines.append(help_text)
    if not (getattr(factory, "SOURCE", "") or "").strip():
        lines.append("Where to get it: see docs/datasets.md (research downloads are not bundled; "
                     "`partsup synth OUT --like NAME` writes a synthetic set in the same layout).")
    return "\n".join(lines)


def open_dataset(registries: Registries, name: str, root: str | None = None, split: str = "test",
                 recipe: dict[str, Any] | None = None,
                 options: dict[str, Any] | None = None) -> Any:
    """Build the registered reader ``name`` for ``split``.

    Reader options come from the recipe's ``data:`` section for the same dataset (see
    :func:`recipe_dataset`; e.g. ``val_cases``), updated by ``options``; the root from
    :func:`dataset_root`.

    Raises:
        RecipeError: unknown dataset name (lists the known ones) or reader option.
        DataError: no root (message with the expected layout and where to get the data), a
            missing folder or bad files (the reader's own message).
    """
    factory = registries.datasets.get(name, where="--dataset")
    section = recipe_dataset(name, split, recipe)
    where = dataset_root(name, root, section)
    kwargs = {k: v for k, v in section.items() if k not in ("name", "root", "split")}
    kwargs.update(options or {})
    if where is None:
        if not _has_default_root(factory):
            raise DataError(missing_root_message(name, factory))
        # the reader knows where its data lives (a default root of its own); it raises
        # its own message, with the layout, when that folder is absent
        return registries.datasets.build(name, where="--dataset", split=split, **kwargs)
    return registries.datasets.build(name, where="--dataset", root=where, split=split, **kwargs)


def _has_default_root(factory: Any) -> bool:
    """Whether a reader factory's ``root`` argument is optional (it has a default location)."""
    try:
        param = inspect.signature(factory).parameters.get("root")
    except (TypeError, ValueError):
        return False
    return param is not None and param.default is not inspect.Parameter.empty
