"""CLI subcommands: each module defines ``COMMAND``, a class following :class:`partsup.command.Command`.

This package is also the plugin that registers them: :func:`partsup.manager.make_plugin_manager`
registers it by name (``partsup.cli.commands``) right after :mod:`partsup.builtin`, so the core
below the CLI never imports the CLI.
"""
from __future__ import annotations

import importlib
import pkgutil

from partsup.hookspecs import Register, hookimpl


@hookimpl
def partsup_register_commands(register: Register) -> None:
    """Register the ``COMMAND`` of every module of this package (in module-name order)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "COMMAND", None)
        if command is not None:
            register(getattr(command, "name", info.name), command,
                     summary=getattr(command, "help", None))
