"""CLI subcommands: each module defines ``COMMAND``, a class following :class:`partsup.command.Command`.

This package is also the plugin that registers them: :func:`partsup.manager.make_plugin_manager`
registers it by name (``partsup.cli.commands``) right after :mod:`partsup.builtin`, so the core
below the CLI never imports the CLI. Each command is registered lazily (``"module:COMMAND"``):
its ``name`` and ``help`` are read from the module's source, and the module (with what it
imports, e.g. torch) is imported only when the command runs.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

from partsup.hookspecs import Register, hookimpl


def describe(path: Path) -> tuple[str, str] | None:
    """``(name, help)`` of the class a command module's source assigns to ``COMMAND`` (its
    ``name`` and ``help`` string constants), read with :mod:`ast`; None when the source does
    not tell them plainly (then the module is imported to ask)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    command = next((node.value.id for node in tree.body if isinstance(node, ast.Assign)
                    and isinstance(node.value, ast.Name)
                    and any(isinstance(t, ast.Name) and t.id == "COMMAND" for t in node.targets)),
                   None)
    body = next((node.body for node in tree.body
                 if isinstance(node, ast.ClassDef) and node.name == command), [])
    constants = {t.id: node.value.value for node in body if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                 for t in node.targets if isinstance(t, ast.Name)}
    if "name" not in constants or "help" not in constants:
        return None
    return constants["name"], constants["help"]


@hookimpl
def partsup_register_commands(register: Register) -> None:
    """Register the ``COMMAND`` of every module of this package (in module-name order), each
    as a lazy ``"partsup.cli.commands.<module>:COMMAND"`` entry with its ``help``."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        target = f"{__name__}.{info.name}"
        described = describe(Path(__path__[0]) / f"{info.name}.py")
        if described is not None:
            name, help = described
            register(name, f"{target}:COMMAND", summary=help)
            continue
        command = getattr(importlib.import_module(target), "COMMAND", None)
        if command is not None:
            register(getattr(command, "name", info.name), command,
                     summary=getattr(command, "help", None))
