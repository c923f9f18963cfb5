"""``partsup plugins``: every registered component by kind, with its provider."""
from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from partsup.hookspecs import COMPONENT_KINDS


class PluginsCommand:
    name = "plugins"
    help = "list every registered component (backbones, labels, losses, ...) and its provider"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kind", choices=sorted(k.attr for k in COMPONENT_KINDS),
                            help="only this kind")

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
