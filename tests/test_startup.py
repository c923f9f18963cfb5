"""CLI start-up (issue 24, item 3): describing the registries and refusing a bad input import no
torch. Registrations are lazy ("module:attr" entries, commands registered by module name); the
lazy tables name the same objects as the modules' own tables, and the summaries read from the
source are the docstrings' first paragraphs."""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from partsup.errors import PluginError
from partsup.manager import load
from partsup.registry import Registry, first_doc_line, source_summary

LIGHT_COMMANDS = [["--help"], ["plugins"], ["plugins", "--kind", "backbone"], ["datasets"],
                  ["predict", "/no/such/file.png"]]


def test_help_plugins_datasets_and_a_missing_input_do_not_import_torch(tmp_path):
    """Each command runs in one fresh process, in turn; after each, torch is not imported."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from partsup.cli.main import main
        report = []
        for argv in {LIGHT_COMMANDS!r}:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(argv)
                except SystemExit as exc:
                    rc = exc.code
            report.append({{"argv": argv, "rc": rc, "torch": "torch" in sys.modules,
                            "out": out.getvalue(), "err": err.getvalue()}})
        print(json.dumps(report))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**_env(), "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    report = {" ".join(r["argv"]): r for r in json.loads(proc.stdout)}
    assert [name for name, r in report.items() if r["torch"]] == []
    assert report["--help"]["rc"] == 0 and "predict" in report["--help"]["out"]
    assert report["plugins"]["rc"] == 0 and "fcn32s" in report["plugins"]["out"]
    assert "FCN-32s (VGG16" in report["plugins"]["out"]  # a summary read from the source
    assert "smp" in report["plugins --kind backbone"]["out"]
    assert report["datasets"]["rc"] == 0 and "folder" in report["datasets"]["out"]
    missing = report["predict /no/such/file.png"]
    assert missing["rc"] == 2
    assert missing["err"].strip().splitlines() == [
        "error: /no/such/file.png: no such file or folder"]
    assert not (tmp_path / "predictions").exists()


def _env() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if k != "PARTSUP_DISABLE_PLUGINS"}


def test_a_command_is_imported_only_when_it_runs():
    code = ("import sys\nfrom partsup.cli.main import main\nmain(['plugins'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('partsup.cli.commands.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['partsup.cli.commands.plugins']"


def test_lazy_tables_name_the_modules_own_components():
    """builtin.CORE_NAMES and the bundled plugins' LAZY tables: the same names and the same
    objects as the tables next to the code (a component added there must be added here)."""
    from partsup import builtin
    assert set(builtin.CORE_NAMES) == set(builtin.CORE_COMPONENTS)
    for kind, (module, attr) in builtin.CORE_COMPONENTS.items():
        table = getattr(importlib.import_module(module), attr)
        mod = importlib.import_module(module)
        assert {n: getattr(mod, a) for n, a in builtin.CORE_NAMES[kind].items()} == table, kind
    import partsup_concentric
    import partsup_mitosis
    from partsup_concentric import labels, losses
    from partsup_mitosis import amibr, formats, protocols, readers
    owned = {(partsup_mitosis, "datasets"): {**readers.DATASETS, **amibr.DATASETS},
             (partsup_mitosis, "protocols"): protocols.PROTOCOLS,
             (partsup_mitosis, "writers"): formats.WRITERS,
             (partsup_concentric, "label_makers"): labels.LABEL_MAKERS,
             (partsup_concentric, "losses"): losses.LOSSES}
    for (plugin, kind), table in owned.items():
        lazy = {n: _resolve(t) for n, t in plugin.LAZY[kind].items()}
        assert lazy == table, (plugin.__name__, kind)
    for name, (target, help) in partsup_mitosis.COMMANDS.items():
        command = _resolve(target)
        assert (command.name, command.help) == (name, help)


def _resolve(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_core_commands_are_described_from_their_source():
    import pkgutil
    from pathlib import Path

    import partsup.cli.commands as commands
    names = [m.name for m in pkgutil.iter_modules(commands.__path__)]
    assert {"predict", "plugins", "datasets", "train"} <= set(names)
    for name in names:
        command = importlib.import_module(f"partsup.cli.commands.{name}").COMMAND
        described = commands.describe(Path(commands.__path__[0]) / f"{name}.py")
        assert described == (command.name, command.help)


def test_every_summary_read_from_source_is_the_docstring_summary():
    """What `partsup plugins` shows without importing equals the factory's own docstring line,
    for every lazy entry of the core and the bundled plugins."""
    lazy = 0
    for registry in load().all().values():
        for entry in registry.entries():
            if entry.target is None:
                continue
            lazy += 1
            summary = entry.summary
            assert not entry.loaded, (registry.kind, entry.name)  # told without importing
            if registry.kind != "command" and entry.provider != "stain (partsup)":
                assert summary == first_doc_line(entry.factory), (registry.kind, entry.name)
    assert lazy >= 30


def test_lazy_entry_imports_its_module_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_plugin_mod.py").write_text(
        'def make(width: int = 2):\n    """A tiny factory.\n\n    More text."""\n'
        '    return width\n\nNOT_CALLABLE = 3\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("widget")
    reg.register("tiny", "lazy_plugin_mod:make", provider="mine")
    assert "lazy_plugin_mod" not in sys.modules
    assert reg.entry("tiny").summary == "A tiny factory."  # from the source: still not imported
    assert "lazy_plugin_mod" not in sys.modules and not reg.entry("tiny").loaded
    assert reg.build("tiny", width=5) == 5 and reg.entry("tiny").loaded
    with pytest.raises(Exception, match="expected an integer"):
        reg.build("tiny", width="x")  # the signature's types are checked as for eager entries
    with pytest.raises(PluginError, match="registered twice: by mine and by other"):
        reg.register("tiny", "lazy_plugin_mod:make", provider="other")
    with pytest.raises(PluginError, match="expected a callable or 'package.module:attr'"):
        reg.register("bad", "not a target", provider="mine")
    reg.register("gone", "no_such_module_here:make", provider="mine")
    with pytest.raises(PluginError, match="mine: widget 'gone' .*failed to import"):
        reg.get("gone")
    reg.register("three", "lazy_plugin_mod:NOT_CALLABLE", provider="mine")
    with pytest.raises(PluginError, match="is not callable"):
        reg.get("three")
    assert source_summary("no_such_module_here:make") is None
