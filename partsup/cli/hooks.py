"""Two command-line hooks, and how the commands call them.

The specs below belong in :mod:`partsup.hookspecs` (the lead moves them there when the branches
merge); until then :func:`ensure_specs` adds them to a plugin manager that lacks them, so a
plugin's implementations are checked against them before the first call.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import pluggy

hookspec = pluggy.HookspecMarker("partsup")


@hookspec
def partsup_command_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    """Add options to (or set defaults of) the CLI subcommand ``command``, after its own.

    Called for all plugins. ``partsup predict`` reads two defaults a plugin may set with
    ``parser.set_defaults``: ``default_mpp`` (um/px when neither ``--mpp`` nor the image gives
    one) and ``label`` (the detected objects' class name, given to writers as ``info["label"]``).
    """


@hookspec(firstresult=True)
def partsup_count_summary(counts: Sequence[Any], args: argparse.Namespace) -> list[str] | None:
    """The summary lines ``partsup predict`` prints for the counts of its images.

    ``counts`` are :class:`partsup.prediction.ImageCount` (detections, width and height in px,
    mpp in um/px), ``args`` the command's parsed options (plugins' own included). First non-None
    result wins; when every plugin abstains the core prints the total and the count per mm^2.
    """


def ensure_specs(pm: pluggy.PluginManager) -> None:
    """Add the specs above to ``pm`` unless it has them already (e.g. from partsup.hookspecs)."""
    for name in ("partsup_command_arguments", "partsup_count_summary"):
        caller = getattr(pm.hook, name, None)
        if caller is None or caller.spec is None:
            pm.add_hookspecs(sys.modules[__name__])
            return


def add_command_arguments(pm: pluggy.PluginManager | None, name: str, command: Any,
                          parser: argparse.ArgumentParser) -> None:
    """``command.add_arguments(parser)``, then every plugin's ``partsup_command_arguments``."""
    command.add_arguments(parser)
    if pm is not None:
        ensure_specs(pm)
        pm.hook.partsup_command_arguments(command=name, parser=parser)


def count_summary(pm: pluggy.PluginManager, counts: Sequence[Any],
                  args: argparse.Namespace) -> list[str] | None:
    """A plugin's summary lines for ``counts`` (``partsup_count_summary``), or None."""
    ensure_specs(pm)
    lines = pm.hook.partsup_count_summary(counts=list(counts), args=args)
    return None if lines is None else list(lines)
