"""What a subcommand is and gets, below the CLI so plugins can use it too.

:class:`Command` is the shape of a class registered through ``partsup_register_commands``;
:class:`Context` is what its ``run`` gets (the run's registries and consoles).
:func:`add_command_arguments` gives an argparse parser a command's own arguments plus every
plugin's :class:`partsup.options.Option` rows for it (``partsup_command_options``, spec in
:mod:`partsup.hookspecs`): each row becomes an argparse argument, or a parser default when it
has no flag. :mod:`partsup.cli.main` builds its parser with it; a plugin command that runs
another command (``partsup demo``) builds that command's parser the same way.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol as TypingProtocol

import pluggy
from rich.console import Console

from partsup.manager import Registries
from partsup.options import Option, command_options


class Command(TypingProtocol):
    """A CLI subcommand. ``help`` is its one-line summary."""

    help: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, ctx: "Context") -> int: ...


@dataclass
class Context:
    """What a command gets: the run's registries (and plugin manager) and a console."""

    registries: Registries
    console: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))
    debug: bool = False
    plugin_modules: list[str] = field(default_factory=list)

    @property
    def pm(self) -> Any:
        return self.registries.pm


def add_command_arguments(pm: pluggy.PluginManager | None, name: str, command: Any,
                          parser: argparse.ArgumentParser) -> None:
    """``command.add_arguments(parser)``, then every plugin's options for ``name``
    (``partsup_command_options``), in order."""
    command.add_arguments(parser)
    for option in command_options(pm, name):
        add_option(parser, option)


def add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    """``option`` as an argument of ``parser`` (``option.flag``, its type, then its check); an
    option without a flag sets ``parser``'s default for ``option.dest``."""
    if option.flag is None:
        parser.set_defaults(**{option.dest: option.default})
        return
    kwargs: dict[str, Any] = {"dest": option.dest, "default": option.default,
                              "help": option.help}
    if option.type is not None or option.check is not None:
        kwargs["type"] = _converter(option)
    if option.metavar is not None:
        kwargs["metavar"] = option.metavar
    if option.choices is not None:
        kwargs["choices"] = option.choices
    parser.add_argument(option.flag, **kwargs)


def _converter(option: Option) -> Callable[[str], Any]:
    """``text -> option.type(text)``, then ``option.check(value)``; named after ``option.type``
    (argparse names it in ``invalid <name> value`` errors)."""
    def convert(text: str) -> Any:
        value = option.type(text) if option.type is not None else text
        if option.check is not None:
            option.check(value)
        return value
    convert.__name__ = getattr(option.type, "__name__", "str")
    return convert
