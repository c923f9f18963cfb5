"""Typed option rows: what a plugin adds to (or sets as a default of) a command.

A plugin answers ``partsup_command_options(command)`` (:mod:`partsup.hookspecs`) with a list of
:class:`Option`; the CLI turns each into an argparse argument (:mod:`partsup.command`), and the
Python API reads their defaults (:func:`option_defaults`), so both see the same values.
:func:`check_range` is the usual ``check`` of a numeric option. No argparse here: this module
imports only :mod:`partsup.errors` from partsup.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from partsup.errors import PartsupError


@dataclass(frozen=True)
class Option:
    """One option of a command.

    ``dest``: the name its value goes by (``options[dest]`` in the hooks that take the
    command's options). ``default``: its value when not given. ``help``: the ``--help`` text.
    ``flag``: the command-line flag (e.g. ``"--box-area"``); None makes a default-only value with
    no flag (e.g. ``default_mpp``, ``label`` of ``partsup predict``). ``type``: turns the
    command-line text into the value (None: the text itself). ``metavar``, ``choices``: as in
    argparse. ``check``: called with a value given on the command line (after ``type``) or
    through the Python API; raises :class:`partsup.errors.PartsupError` (one line) to refuse it.
    """

    dest: str
    default: Any = None
    help: str | None = None
    flag: str | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: Sequence[Any] | None = None
    check: Callable[[Any], None] | None = None


def command_options(pm: Any, command: str) -> list[Option]:
    """Every plugin's :class:`Option` rows for ``command`` (``partsup_command_options`` of the
    plugin manager ``pm``), in the order pluggy calls the plugins; None when ``pm`` is None."""
    if pm is None:
        return []
    found = pm.hook.partsup_command_options(command=command)
    return [option for options in found if options for option in options]


def option_defaults(options: Sequence[Option], base: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """``base`` updated by each option's ``dest -> default`` (later rows win, as argparse's
    ``set_defaults`` does)."""
    out = dict(base or {})
    for option in options:
        out[option.dest] = option.default
    return out


def check_range(option: str, value: float, low: float, high: float, unit: str) -> None:
    """PartsupError unless ``low <= value <= high`` (NaN and inf are refused); ``option`` names
    the option in the message (e.g. ``"--mpp"``), ``unit`` its unit (e.g. ``"um/px"``)."""
    if not (math.isfinite(value) and low <= value <= high):
        raise PartsupError(f"{option} must be between {low:g} and {high:g} {unit}, got {value:g}")
