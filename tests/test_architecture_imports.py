"""The import graph of ``partsup/`` and ``plugins/``: no cycle, and no import climbs a layer.

Every module is parsed with :mod:`ast` (nothing is imported); an edge ``a -> b`` is any import of
``b`` in ``a``: at module level or inside a function (a function-level import that dodges a
cycle is still a cycle). Imports under ``if TYPE_CHECKING:`` never run and are not edges.
``from partsup.x import y`` is an edge to ``partsup.x.y`` when that is a module, else to
``partsup.x``. Importing a submodule also runs its parent packages' ``__init__``; those implicit
edges are left out (every module would otherwise reach ``partsup/__init__``).

The layer order is :data:`LAYERS` (lowest first), the table of docs/architecture.md's
"Layers" section (a test keeps the two the same): a module may import only from its own layer
or a lower one. A name stands for the module or package and everything under it; the longest
name that matches a module gives its layer. ``partsup`` itself (the public API) is outside the
table: it may import anything, and any module may import it. The bundled plugins
(``plugins/partsup_*``) sit above the core, in the layer after the last.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "partsup"
PLUGINS = REPO / "plugins"
DOC = REPO / "docs" / "architecture.md"

#: the core's layers, lowest first (docs/architecture.md, "Layers")
LAYERS: tuple[tuple[str, ...], ...] = (
    ("partsup.errors", "partsup.types", "partsup.hookspecs", "partsup.options",
     "partsup.output.atomic", "partsup.output.outdir"),
    ("partsup.registry", "partsup.recipe_yaml", "partsup.recipe_fields", "partsup.recipe", "partsup.runtime",
     "partsup.manager", "partsup.command", "partsup.builtin", "partsup.data.sampling"),
    ("partsup.model", "partsup.data", "partsup.slides"),
    ("partsup.checkpoint",),
    ("partsup.inference", "partsup.output"),
    ("partsup.evaluation",),
    ("partsup.prediction",),
    ("partsup.training",),
    ("partsup.plugin",),
    ("partsup.cli", "partsup.__main__"),
)
#: the layer of every module under plugins/ (above the whole core)
PLUGIN_LAYER = len(LAYERS) + 1
#: the top-level API: outside the layers (imports anything; anything may import it)
TOP = "partsup"
#: import cycles in plugins/ known and not yet broken, each as its sorted modules; empty this
#: when they are gone (the test fails on an entry that no longer is a cycle)
KNOWN_PLUGIN_CYCLES: list[list[str]] = []


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """``dotted name -> file`` for every module under ``root`` (packages as their name)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)
    visit(tree)
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``partsup`` modules that module ``name`` (file ``path``) imports."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join([*base, *([node.module] if node.module else [])])
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                       for a in node.names]
        for target in targets:
            while target and target not in modules:  # ``import partsup.a.b`` of a non-module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def all_modules() -> dict[str, Path]:
    """``dotted name -> file`` of every module of the core and of every bundled plugin."""
    out = module_names(PACKAGE)
    for package in sorted(PLUGINS.glob("partsup_*/__init__.py")):
        out.update(module_names(package.parent))
    return out


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """``module -> the modules it imports``, over the core and the bundled plugins."""
    modules = all_modules() if modules is None else modules
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int | None:
    """The layer (1 = lowest) of a core module (the longest matching name in ``layers``),
    :data:`PLUGIN_LAYER` for a plugin module, None for ``partsup`` itself or an unknown one."""
    if not module.startswith(f"{TOP}."):
        return None if module == TOP else PLUGIN_LAYER
    best: tuple[int, int] | None = None
    for number, names in enumerate(layers, start=1):
        for name in names:
            if (module == name or module.startswith(f"{name}.")) and \
                    (best is None or len(name) > best[1]):
                best = (number, len(name))
    return best[0] if best else None


def climbs(graph: dict[str, set[str]]) -> list[str]:
    """``a (layer i) -> b (layer j)`` for every import of a higher layer (j > i)."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                out.append(f"{a} (layer {la}) -> {b} (layer {lb})")
    return out


def doc_layers(text: str) -> tuple[tuple[str, ...], ...]:
    """The core's layers from the table of the "## Layers" section of ``text``: rows
    ``| n | `name`, `name` |`` numbered 1, 2, ... (a row naming ``plugins/`` is the plugins')."""
    section = ("\n" + text).split("\n## Layers", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*)\|\s*$", line)
        if m:
            assert int(m.group(1)) == len(rows) + 1, f"layer rows out of order: {line}"
            rows.append(tuple(re.findall(r"`([^`]+)`", m.group(2))))
    assert rows and any("plugins/" in n for n in rows[-1]), "the last row names plugins/"
    return tuple(rows[:-1])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one
    module (Tarjan), each starting at its alphabetically first module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return [_cycle_in(comp, graph) for comp in sorted(components)]


def _cycle_in(comp: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through ``comp[0]`` inside the component (breadth-first)."""
    members = set(comp)
    start = comp[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return comp


def test_graph_sees_module_and_function_level_imports(tmp_path):
    pkg = tmp_path / "partsup"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from partsup.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from partsup import a\n")
    modules = module_names(pkg)
    graph = {n: imports_of(n, p, modules) for n, p in modules.items()}
    assert graph["partsup.a"] == {"partsup.sub.b"}
    assert graph["partsup.sub.b"] == {"partsup.a"}
    assert graph["partsup.c"] == set()
    assert cycles(graph) == [["partsup.a", "partsup.sub.b", "partsup.a"]]


def in_core(module: str) -> bool:
    return module == TOP or module.startswith(f"{TOP}.")


def test_no_import_cycle_in_partsup():
    found = [c for c in cycles(import_graph()) if any(in_core(m) for m in c)]
    assert not found, "import cycles in partsup/: " + "; ".join(" -> ".join(c) for c in found)


def test_no_import_cycle_in_plugins():
    found = [c for c in cycles(import_graph()) if not any(in_core(m) for m in c)]
    known = [c for c in found if sorted(set(c)) in KNOWN_PLUGIN_CYCLES]
    new = [c for c in found if c not in known]
    assert not new, "import cycles in plugins/: " + "; ".join(" -> ".join(c) for c in new)
    gone = [k for k in KNOWN_PLUGIN_CYCLES if k not in [sorted(set(c)) for c in known]]
    assert not gone, f"no longer cycles, remove them from KNOWN_PLUGIN_CYCLES: {gone}"


def test_no_import_climbs_a_layer():
    found = climbs(import_graph())
    assert not found, ("imports from a higher layer (order: docs/architecture.md, Layers):\n"
                       + "\n".join(found))


def test_every_core_module_has_a_layer():
    lost = sorted(m for m in module_names(PACKAGE) if m != TOP and layer_of(m) is None)
    assert not lost, f"modules in no layer (add them to docs/architecture.md, Layers): {lost}"
    assert layer_of("partsup.plugin") == 9 and layer_of("partsup.cli.main") == 10


def test_layer_table_in_the_docs_is_the_one_checked():
    assert doc_layers(DOC.read_text()) == LAYERS


def test_layer_checker_sees_climbs_and_the_longest_name(tmp_path):
    assert layer_of("partsup.output.atomic") == 1 and layer_of("partsup.output.writers") == 5
    assert layer_of("partsup_mitosis.counts") == PLUGIN_LAYER and layer_of(TOP) is None
    graph = {"partsup.checkpoint.files": {"partsup.training.run", "partsup.errors"},
             "partsup.training.run": {"partsup.checkpoint.files", TOP},
             TOP: {"partsup.cli.main"}, "partsup.cli.main": {TOP, "partsup_stain"},
             "partsup_stain": {"partsup.cli.main"}}
    assert climbs(graph) == [
        "partsup.checkpoint.files (layer 4) -> partsup.training.run (layer 8)",
        f"partsup.cli.main (layer 10) -> partsup_stain (layer {PLUGIN_LAYER})"]
    table = "## Layers\n\n| layer | modules |\n|---|---|\n| 1 | `a.b`, `c` |\n| 2 | `plugins/` |\n"
    assert doc_layers(table) == (("a.b", "c"),)
