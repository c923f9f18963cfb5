"""Command-line interface: ``main(argv) -> int``. Thin: parsing, then calls into the library.

Subcommands are registered by plugins through ``partsup_register_commands`` (the core's own by
the plugin :mod:`partsup.cli.commands`). Errors derived from
:class:`partsup.errors.PartsupError` print one line and exit 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.markup import escape

import partsup
from partsup.command import Context, add_command_arguments
from partsup.errors import PartsupError
from partsup.manager import Registries, make_plugin_manager


def _pre_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--plugin", action="append", default=[])
    p.add_argument("--debug", action="store_true")
    return p


def build_parser(registries: Registries, commands: Iterable[str] | None = None
                 ) -> argparse.ArgumentParser:
    """The CLI's parser: every registered command as a subcommand (its one-line help from the
    registry). Only the ``commands`` named (None: all) get their arguments, which imports their
    modules (a command registered lazily is imported on first use): the others are listed
    by ``partsup --help`` without being imported."""
    parser = argparse.ArgumentParser(
        prog="partsup",
        description="Partially supervised segmentation-based detection.")
    parser.add_argument("--version", action="version", version=f"partsup {partsup.__version__}")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import an extra plugin module (repeatable)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if commands is None else set(commands)
    for entry in registries.commands.entries():
        if wanted is not None and entry.name not in wanted:
            placeholder = sub.add_parser(entry.name, help=entry.summary, add_help=False)
            placeholder.add_argument("_rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            continue
        cmd = entry.factory() if isinstance(entry.factory, type) else entry.factory
        sp = sub.add_parser(entry.name, help=entry.summary or getattr(cmd, "help", ""),
                            description=getattr(cmd, "help", None))
        add_command_arguments(registries.pm, entry.name, cmd, sp)
        # also accepted after the subcommand (read by the pre-parser, which sees them anywhere)
        sp.add_argument("--plugin", action="append", dest="_plugin_after", default=[],
                        metavar="MODULE", help="import an extra plugin module (repeatable)")
        sp.add_argument("--debug", action="store_true", dest="_debug_after",
                        help="show tracebacks on errors")
        sp.set_defaults(_command=cmd)
    return parser


def command_named(rest: Sequence[str], registries: Registries) -> str | None:
    """The command ``rest`` (the arguments the pre-parser left) runs: its first word that is
    not an option, when it names a registered command."""
    word = next((w for w in rest if not w.startswith("-")), None)
    return word if word is not None and word in registries.commands else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    0 ok; 1 a task failed (or an unexpected error, shown as one line; ``--debug`` re-raises it);
    2 bad input (a :class:`PartsupError`: recipe, plugin, data or checkpoint problem); 130 Ctrl-C.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # answered before any plugin (and torch) is loaded
        print(f"partsup {partsup.__version__}")
        return 0
    pre, rest = _pre_parser().parse_known_args(argv)
    err = Console(stderr=True)
    shown = warnings.showwarning
    if not pre.debug:  # one line per warning, like errors (--debug: Python's own format)
        warnings.showwarning = _warning_printer(err)
    try:
        registries = Registries.from_pm(make_plugin_manager(pre.plugin))
        parser = build_parser(registries, [command_named(rest, registries) or ""])
        args = parser.parse_args(argv)
        if args.command is not None and getattr(args, "_command", None) is None:
            args = build_parser(registries, [args.command]).parse_args(argv)  # not foreseen
        if getattr(args, "_command", None) is None:
            parser.print_help()
            return 0
        ctx = Context(registries=registries, err=err, debug=pre.debug,
                      plugin_modules=list(pre.plugin))
        return int(args._command.run(args, ctx) or 0)
    except PartsupError as exc:
        if pre.debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # a bug or an unforeseen input: one line, traceback on --debug
        if pre.debug:
            raise
        err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {escape(str(exc))} "
                  f"(run again with --debug for the traceback, and please report it)",
                  highlight=False, soft_wrap=True)
        return 1
    finally:
        warnings.showwarning = shown


def _warning_printer(err: Console) -> Any:
    """A ``warnings.showwarning`` that prints ``warning: <message>`` on one line."""
    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        err.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False,
                  soft_wrap=True)
    return show


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
