"""Plugin manager, hooks, blocking, and one-line errors for bad plugins."""
from __future__ import annotations

import argparse
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from partsup import hookspecs
from partsup.command import add_option
from partsup.cli.main import main
from partsup.errors import PluginError, RecipeError
from partsup.hookspecs import COMPONENT_KINDS
from partsup import hookimpl
from partsup.manager import Registries, load, make_plugin_manager
from partsup.options import Option, command_options
from partsup.types import Blobs

REPO = Path(__file__).resolve().parents[1]
HOOK_NAMES = sorted(n for n, _ in inspect.getmembers(hookspecs, inspect.isfunction)
                    if n.startswith("partsup_"))


class AllHooks:
    """Implements every hook, recording each call, so every hook is exercised here."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _reg(self, hook: str, register) -> None:
        self.calls.append(hook)
        register(f"t_{hook.removeprefix('partsup_register_')}", lambda **kw: kw)

    @hookimpl
    def partsup_register_backbones(self, register):
        self._reg("partsup_register_backbones", register)

    @hookimpl
    def partsup_register_weight_transfers(self, register):
        self._reg("partsup_register_weight_transfers", register)

    @hookimpl
    def partsup_register_label_makers(self, register):
        self._reg("partsup_register_label_makers", register)

    @hookimpl
    def partsup_register_losses(self, register):
        self._reg("partsup_register_losses", register)

    @hookimpl
    def partsup_register_classifiers(self, register):
        self._reg("partsup_register_classifiers", register)

    @hookimpl
    def partsup_register_datasets(self, register):
        self._reg("partsup_register_datasets", register)

    @hookimpl
    def partsup_register_normalizers(self, register):
        self._reg("partsup_register_normalizers", register)

    @hookimpl
    def partsup_register_filters(self, register):
        self._reg("partsup_register_filters", register)

    @hookimpl
    def partsup_register_protocols(self, register):
        self._reg("partsup_register_protocols", register)

    @hookimpl
    def partsup_register_writers(self, register):
        self._reg("partsup_register_writers", register)

    @hookimpl
    def partsup_register_optimizers(self, register):
        self._reg("partsup_register_optimizers", register)

    @hookimpl
    def partsup_register_commands(self, register):
        self.calls.append("partsup_register_commands")

        class Hello:
            name = "hello"
            help = "say hello (test command)"

            def add_arguments(self, parser):
                parser.add_argument("--who", default="world")

            def run(self, args, ctx):
                ctx.console.print(f"hello {args.who}")
                return 0
        register("hello", Hello)

    @hookimpl
    def partsup_fuse(self, weak, strong, params):
        self.calls.append("partsup_fuse")
        if params.get("mode") == "max":
            return np.maximum(weak, strong)
        return None

    @hookimpl
    def partsup_filter_candidates(self, blobs, mpp, params):
        self.calls.append("partsup_filter_candidates")
        return np.asarray(blobs.score) > 0.2

    @hookimpl
    def partsup_default_checkpoint(self):
        self.calls.append("partsup_default_checkpoint")
        return "/models/default.pt"

    @hookimpl
    def partsup_command_options(self, command):
        self.calls.append("partsup_command_options")
        if command == "hello":
            return [Option("who", "plugin")]  # no flag: sets another command's default
        return None

    @hookimpl
    def partsup_count_summary(self, counts, options):
        self.calls.append("partsup_count_summary")
        return [f"{len(counts)} images, hpf {options['hpf']}"]

    @hookimpl
    def partsup_slide_outputs(self, slide, options):
        self.calls.append("partsup_slide_outputs")
        return [f"slide {slide}"]

    @hookimpl
    def partsup_configure(self, recipe):
        self.calls.append("partsup_configure")
        if recipe.get("name") == "forbidden":
            raise ValueError("name 'forbidden' is reserved")


def test_every_hook_is_documented_and_exercised():
    docs = (REPO / "docs" / "plugins.md").read_text()
    for name in HOOK_NAMES:
        assert f"### `{name}" in docs, f"hook {name} has no heading in docs/plugins.md"
        assert hasattr(AllHooks, name), f"hook {name} is not exercised by AllHooks in this test"
    assert {k.hook for k in COMPONENT_KINDS} <= set(HOOK_NAMES)


def test_all_hooks_called_and_semantics():
    plugin = AllHooks()
    regs = Registries.from_pm(make_plugin_manager(objects=[plugin], entry_points=False))
    for kind in COMPONENT_KINDS:
        attr, hook = kind.attr, kind.hook
        assert hook in plugin.calls
        reg = getattr(regs, attr)
        if attr != "commands":
            assert f"t_{hook.removeprefix('partsup_register_')}" in reg
    weak, strong = np.full((2, 2), 0.8, np.float32), np.full((2, 2), 0.2, np.float32)
    # first result wins; the core default (trylast) runs when plugins abstain
    fused = regs.pm.hook.partsup_fuse(weak=weak, strong=strong, params={"w": 0.25})
    np.testing.assert_allclose(fused, 0.25 * 0.8 + 0.75 * 0.2)
    fused = regs.pm.hook.partsup_fuse(weak=weak, strong=strong, params={"mode": "max"})
    np.testing.assert_allclose(fused, 0.8)
    # all results combined
    blobs = Blobs(x=np.zeros(3), y=np.zeros(3), score=np.array([0.1, 0.5, 0.9]), area=np.ones(3))
    masks = [m for m in regs.pm.hook.partsup_filter_candidates(blobs=blobs, mpp=0.25, params={})
             if m is not None]
    assert np.logical_and.reduce(masks).tolist() == [False, True, True]
    regs.pm.hook.partsup_configure(recipe={"name": "ok"})
    assert "partsup_configure" in plugin.calls
    assert regs.pm.hook.partsup_default_checkpoint() == "/models/default.pt"  # first result
    parser = argparse.ArgumentParser()
    parser.add_argument("--who", default="world")
    for option in command_options(regs.pm, "hello"):
        add_option(parser, option)
    assert parser.parse_args([]).who == "plugin"  # a plugin sets another command's default
    assert command_options(regs.pm, "other") == []
    assert regs.pm.hook.partsup_count_summary(counts=[1, 2], options={"hpf": 1}) == \
        ["2 images, hpf 1"]
    assert regs.pm.hook.partsup_slide_outputs(slide="s", options={}) == [["slide s"]]  # all


def test_fresh_manager_per_run():
    a, b = make_plugin_manager(entry_points=False), make_plugin_manager(entry_points=False)
    assert a is not b
    a.register(AllHooks(), name="only-in-a")
    assert b.get_plugin("only-in-a") is None


def test_bundled_plugins_via_entry_points(registries):
    names = {registries.pm.get_name(p) for p in registries.pm.get_plugins()}
    assert {"fcn32s", "smp", "concentric", "mitosis", "partsup.builtin"} <= names
    assert "plugins" in registries.commands


def test_disable_plugins_env(monkeypatch):
    monkeypatch.setenv("PARTSUP_DISABLE_PLUGINS", "smp, fcn32s")
    pm = make_plugin_manager()
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert "smp" not in names and "fcn32s" not in names and "mitosis" in names


def test_duplicate_name_across_plugins_names_both():
    class One:
        @hookimpl
        def partsup_register_backbones(self, register):
            register("twin", lambda: None)

    class Two(One):
        pass
    pm = make_plugin_manager(entry_points=False)
    pm.register(One(), name="plugin-one")
    pm.register(Two(), name="plugin-two")
    with pytest.raises(PluginError) as exc:
        Registries.from_pm(pm)
    assert "plugin-one" in str(exc.value) and "plugin-two" in str(exc.value)


def test_plugin_raising_in_hook_is_named():
    class Broken:
        @hookimpl
        def partsup_register_losses(self, register):
            raise RuntimeError("boom")
    pm = make_plugin_manager(entry_points=False)
    pm.register(Broken(), name="broken-plugin")
    with pytest.raises(PluginError, match=r"broken-plugin raised in partsup_register_losses: RuntimeError: boom"):
        Registries.from_pm(pm)


def _write_module(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_version_help_plugins(capsys):
    code, out, _ = run_cli(["plugins"], capsys)
    assert code == 0
    for kind in ("command",):
        assert kind in out
    assert "partsup.builtin" in out
    assert main(["--version"]) == 0  # answered before plugins load
    assert "partsup 0." in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # anywhere else on the line: argparse's action
        main(["--debug", "--version"])
    assert exc.value.code == 0
    assert "partsup 0." in capsys.readouterr().out
    code, out, _ = run_cli([], capsys)
    assert code == 0 and "plugins" in out


@pytest.mark.parametrize("module_text, expected", [
    (None, "plugin module 'no_such_plugin_mod' not found"),
    ("raise ImportError('missing dependency foo')\n", "failed to import"),
    ("raise ValueError('bad config')\n", "failed to import: ValueError: bad config"),
])
def test_cli_bad_plugin_one_line_exit_2(tmp_path, monkeypatch, capsys, module_text, expected):
    name = "no_such_plugin_mod"
    if module_text is not None:
        name = "raising_plugin_mod"
        _write_module(tmp_path, name, module_text)
        monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_cli(["--plugin", name, "plugins"], capsys)
    assert code == 2
    assert expected in err and name in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_duplicate_registration_exit_2(tmp_path, monkeypatch, capsys):
    for name in ("dup_a", "dup_b"):
        _write_module(tmp_path, name, """
            from partsup import hookimpl
            @hookimpl
            def partsup_register_backbones(register):
                register("same_name", lambda: None)
            """)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_cli(["--plugin", "dup_a", "--plugin", "dup_b", "plugins"], capsys)
    assert code == 2 and "dup_a" in err and "dup_b" in err and "same_name" in err
    assert len(err.strip().splitlines()) == 1


def test_cli_debug_shows_traceback(capsys):
    with pytest.raises(PluginError):
        main(["--debug", "--plugin", "no_such_plugin_mod", "plugins"])


def test_cli_plugin_adds_command(tmp_path, monkeypatch, capsys):
    _write_module(tmp_path, "cmd_plugin", """
        from partsup import hookimpl
        class Greet:
            name = "greet"
            help = "greet someone"
            def add_arguments(self, parser):
                parser.add_argument("who")
            def run(self, args, ctx):
                ctx.console.print("greetings, " + args.who)
                return 0
        @hookimpl
        def partsup_register_commands(register):
            register("greet", Greet)
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run_cli(["--plugin", "cmd_plugin", "greet", "ann"], capsys)
    assert code == 0 and "greetings, ann" in out


def test_configure_hook_can_reject_recipe(tmp_path):
    from partsup.recipe import load_run
    _write_module(tmp_path, "guard_plugin", """
        from partsup import hookimpl
        @hookimpl
        def partsup_configure(recipe):
            if recipe["train"]["iterations"] > 10**6:
                raise ValueError("too many iterations for this site")
        """)
    sys.path.insert(0, str(tmp_path))
    try:
        p = tmp_path / "r.yaml"
        p.write_text("name: t\nplugins: [guard_plugin]\nmodel: {backbone: {name: smp}}\n"
                     "labels: {weak: concentric}\nloss: {weak: concentric}\n"
                     "train: {iterations: 2000000}\n")
        with pytest.raises(RecipeError, match="rejected the recipe: ValueError: too many iterations"):
            load_run(p)
    finally:
        sys.path.remove(str(tmp_path))


def test_cli_unexpected_error_is_one_line_and_debug_reraises(tmp_path, monkeypatch, capsys):
    _write_module(tmp_path, "buggy_cmd_plugin", """
        from partsup import hookimpl
        class Buggy:
            name = "buggy"
            help = "raises an unexpected error"
            def add_arguments(self, parser):
                pass
            def run(self, args, ctx):
                return {}["missing"]
        @hookimpl
        def partsup_register_commands(register):
            register("buggy", Buggy)
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run_cli(["--plugin", "buggy_cmd_plugin", "buggy"], capsys)
    assert code == 1
    assert "unexpected KeyError: 'missing'" in err and "--debug" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(KeyError):
        main(["--debug", "--plugin", "buggy_cmd_plugin", "buggy"])


def test_misspelled_hook_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """check_pending runs at load: a hook name that matches no spec names plugin and hook."""
    _write_module(tmp_path, "typo_plugin", """
        from partsup import hookimpl
        @hookimpl
        def partsup_register_backbone(register):
            register("never", lambda: None)
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError) as info:
        make_plugin_manager(["typo_plugin"], entry_points=False)
    msg = str(info.value)
    assert "typo_plugin" in msg and "'partsup_register_backbone'" in msg
    assert "did you mean 'partsup_register_backbones'" in msg and "\n" not in msg
    regs = load(entry_points=False)
    with pytest.raises(PluginError, match="typo_plugin.*partsup_register_backbone"):
        regs.add_modules(["typo_plugin"])
    code, _, err = run_cli(["--plugin", "typo_plugin", "plugins"], capsys)
    assert code == 2 and "partsup_register_backbone'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_registries_follow_the_kind_table():
    """One table (hookspecs.COMPONENT_KINDS) names every kind: registries, hooks, builtin."""
    from partsup import builtin
    regs = load(entry_points=False)
    assert list(regs.all()) == [k.attr for k in COMPONENT_KINDS]
    for kind in COMPONENT_KINDS:
        assert getattr(regs, kind.attr).kind == kind.label
        assert hasattr(hookspecs, kind.hook) and hasattr(regs.pm.hook, kind.hook)
    assert set(builtin.CORE_COMPONENTS) <= {k.attr for k in COMPONENT_KINDS}
    for attr in builtin.CORE_COMPONENTS:
        assert any(e.provider == "partsup.builtin" for e in getattr(regs, attr).entries())
    with pytest.raises(AttributeError, match="no registry 'backbone'"):
        regs.backbone  # noqa: B018


def test_hookimpl_old_import_path_still_works():
    """Plugins written against ``from partsup.manager import hookimpl`` keep working; the public
    path is ``from partsup import hookimpl`` (the same marker)."""
    import partsup
    from partsup.manager import hookimpl as old
    assert old is partsup.hookimpl is hookimpl
