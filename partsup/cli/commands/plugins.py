"""``partsup plugins``: every registered component by kind, with its provider."""
from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from partsup.hookspecs import COMPONENT_KINDS


def _spellings(attr: str, label: str) -> set[str]:
    words = {attr, label, label + "s", *label.split("/")}
    return {w.replace("_", " ").replace("-", " ") for w in words}


def kind_attr(text: str) -> str:
    """``--kind``'s value as a registry attribute: the attribute (``backbones``,
    ``weight_transfers``) or the label the table shows (``backbone``, ``weight transfer``),
    any case, ``-`` or ``_`` for spaces.

    Raises:
        argparse.ArgumentTypeError: an unknown kind (lists the labels).
    """
    key = " ".join(text.strip().lower().replace("_", " ").replace("-", " ").split())
    for kind in COMPONENT_KINDS:
        if key in _spellings(kind.attr, kind.label):
            return kind.attr
    raise argparse.ArgumentTypeError(
        f"unknown kind {text!r}; expected one of: "
        f"{', '.join(k.label for k in COMPONENT_KINDS)} (or the plural, e.g. backbones)")


class PluginsCommand:
    name = "plugins"
    help = "list every registered component (backbones, labels, losses, ...) and its provider"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kind", type=kind_attr, metavar="KIND",
                            help="only this kind, as the table names it or its plural: "
                                 + ", ".join(k.label for k in COMPONENT_KINDS))

    def run(self, args: argparse.Namespace, ctx) -> int:
        table = Table(title="partsup components", show_lines=False)
        for col in ("kind", "name", "provider", "summary"):
            table.add_column(col, overflow="fold")
        for attr, registry in ctx.registries.all().items():
            if args.kind and attr != args.kind:
                continue
            for e in registry.entries():
                table.add_row(registry.kind, escape(e.name), escape(e.provider),
                              escape(e.summary))
        ctx.console.print(table)
        plugins = sorted(ctx.pm.get_name(p) or "?" for p in ctx.pm.get_plugins())
        ctx.console.print(f"plugins loaded: {', '.join(plugins)}")
        return 0


COMMAND = PluginsCommand
