"""A command's options from the plugins (``partsup_command_options``, spec in
:mod:`partsup.hookspecs`): each :class:`partsup.options.Option` becomes an argparse argument,
or a parser default when it has no flag."""
from __future__ import annotations

import argparse
from typing import Any, Callable

import pluggy

from partsup.options import Option, command_options


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
