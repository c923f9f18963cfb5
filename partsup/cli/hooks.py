"""How the commands call the two command-line hooks (specs in :mod:`partsup.hookspecs`)."""
from __future__ import annotations

import argparse
from typing import Any, Sequence

import pluggy


def add_command_arguments(pm: pluggy.PluginManager | None, name: str, command: Any,
                          parser: argparse.ArgumentParser) -> None:
    """``command.add_arguments(parser)``, then every plugin's ``partsup_command_arguments``."""
    command.add_arguments(parser)
    if pm is not None:
        pm.hook.partsup_command_arguments(command=name, parser=parser)


def count_summary(pm: pluggy.PluginManager, counts: Sequence[Any],
                  args: argparse.Namespace) -> list[str] | None:
    """A plugin's summary lines for ``counts`` (``partsup_count_summary``), or None."""
    lines = pm.hook.partsup_count_summary(counts=list(counts), args=args)
    return None if lines is None else list(lines)
