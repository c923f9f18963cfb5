"""The public plugin API, :mod:`partsup.plugin`: the bundled plugins import partsup's names from
it alone, every name it lists resolves, importing it stays cheap (no torch), and the table of
docs/plugins.md ("The plugin API") lists exactly its names."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import partsup.plugin

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
#: plugin code outside plugins/ that the docs and tests present as an example of a plugin
EXAMPLES = (REPO / "tests" / "tiny_plugin.py",
            *sorted((REPO / "docs" / "examples").rglob("*.py")))
API = "partsup.plugin"


def partsup_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of a ``partsup`` module in ``path`` (function-level
    and ``TYPE_CHECKING`` ones included), other than :data:`API`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [(node.lineno, m) for m in modules
                  if (m == "partsup" or m.startswith("partsup.")) and m != API]
    return found


def offenders(paths: list[Path]) -> list[str]:
    return [f"{p.relative_to(REPO)}:{line}: {module}"
            for p in paths for line, module in partsup_imports(p)]


def test_bundled_plugins_import_only_the_plugin_api():
    paths = sorted(PLUGINS.rglob("*.py"))
    assert len({p.relative_to(PLUGINS).parts[0] for p in paths}) >= 5, "no bundled plugins found"
    bad = offenders(paths + list(EXAMPLES))
    assert not bad, ("plugins import partsup only through partsup.plugin (docs/plugins.md, "
                     "The plugin API); these import internals:\n" + "\n".join(bad))


def test_checker_sees_every_kind_of_import(tmp_path):
    mod = tmp_path / "p.py"
    mod.write_text("import partsup\nfrom partsup.plugin import hookimpl\n"
                   "from partsup import hookimpl\nimport partsup.errors as e\n"
                   "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from partsup.types import Sample\n"
                   "def f():\n    from partsup.model.partial import Branch\n"
                   "from partsup_mitosis.synth import generate\nfrom . import sibling\n")
    assert partsup_imports(mod) == [(1, "partsup"), (3, "partsup"), (4, "partsup.errors"),
                                    (7, "partsup.types"), (9, "partsup.model.partial")]


def test_every_exported_name_resolves():
    names = partsup.plugin.__all__
    assert len(names) == len(set(names)) and names == sorted(names)
    for name in names:
        value = getattr(partsup.plugin, name)
        assert value is not None, name
        assert name in dir(partsup.plugin)
    namespace: dict = {}
    exec("from partsup.plugin import *", namespace)
    assert set(names) <= set(namespace)
    try:
        partsup.plugin.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc) and "partsup.plugin" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_exports_are_the_home_modules_objects():
    """Each name is its home module's object, and no home module is above the plugin API
    (``partsup.cli``, layer 10; the import walk of test_architecture_imports.py does not see
    these string imports)."""
    import importlib
    for name, module in partsup.plugin._EXPORTS.items():
        assert not module.startswith(("partsup.cli", "partsup.__main__", "partsup.plugin")), module
        assert getattr(partsup.plugin, name) is getattr(importlib.import_module(module), name)


def test_importing_the_plugin_api_does_not_load_torch():
    code = ("import sys, partsup.plugin\n"
            "from partsup.plugin import hookimpl, Option, DataError, check_range, Sample\n"
            "assert 'torch' not in sys.modules, 'partsup.plugin imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr


def documented_names() -> list[str]:
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split("\n## The plugin API\n", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", section, re.M)]


def test_docs_table_lists_exactly_the_exports():
    documented = documented_names()
    assert len(documented) == len(set(documented)), "a name is listed twice"
    assert sorted(documented) == partsup.plugin.__all__, (
        f"missing from docs/plugins.md: {sorted(set(partsup.plugin.__all__) - set(documented))}; "
        f"not exported: {sorted(set(documented) - set(partsup.plugin.__all__))}")
