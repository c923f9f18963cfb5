"""The layout keeps its promises: commands stay thin and apart, bench scripts use the library,
modules of the core and of the bundled plugins stay small, the training loop reads in one
short file, and test modules share through tests/helpers.py and conftest.py only."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: every folder that holds command modules: the core's and the bundled plugins'
COMMAND_DIRS = [REPO / "partsup" / "cli" / "commands",
                *sorted(p for p in (REPO / "plugins").glob("partsup_*/commands") if p.is_dir())]
MAX_CORE_LINES = 400
MAX_LOOP_LINES = 250
#: plugin modules still over MAX_CORE_LINES, each to be split and then removed from this list
#: (the test fails on an entry that is gone or no longer over)
KNOWN_BIG_PLUGIN_MODULES: list[str] = []


def package_of(path: Path) -> str:
    """The dotted package of a file in the repository (plugins/ is an import root)."""
    return ".".join(path.relative_to(REPO).with_suffix("").parts[:-1]).removeprefix("plugins.")


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Dotted names ``path`` imports (module and function level; relative imports resolved
    against ``package``, by default the file's own)."""
    package = package_of(path) if package is None else package
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            out.update({base, *(f"{base}.{a.name}" for a in node.names)})
    return out


def command_modules() -> dict[str, Path]:
    """``dotted name -> file`` of every command module (``__init__`` excluded)."""
    out = {}
    for folder in COMMAND_DIRS:
        rel = folder.relative_to(REPO).parts
        pkg = ".".join(rel[1:] if rel[0] == "plugins" else rel)
        for path in sorted(folder.glob("*.py")):
            if path.stem != "__init__":
                out[f"{pkg}.{path.stem}"] = path
    return out


def test_every_command_folder_is_seen():
    names = command_modules()
    assert "partsup.cli.commands.evaluate" in names and "partsup_mitosis.commands.demo" in names


def test_no_command_module_imports_another():
    names = command_modules()
    bad = [f"{path.relative_to(REPO)} imports {other}"
           for name, path in names.items()
           for other in sorted(imported_modules(path) & set(names)) if other != name]
    assert not bad, "shared helpers belong in a library module:\n" + "\n".join(bad)


def test_no_bench_script_imports_a_command_module():
    names = set(command_modules())
    bad = [f"{path.relative_to(REPO)} imports {m}"
           for path in sorted((REPO / "bench").glob("*.py"))
           for m in sorted(imported_modules(path) & names)]
    assert not bad, "bench scripts use the library, not commands:\n" + "\n".join(bad)


def test_checker_sees_function_level_and_relative_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from .evaluate import x\n    import partsup.cli.common\n")
    found = imported_modules(probe, package="partsup.cli.commands")
    assert {"partsup.cli.commands.evaluate", "partsup.cli.common"} <= found
    assert package_of(REPO / "plugins" / "partsup_mitosis" / "commands" / "demo.py") == \
        "partsup_mitosis.commands"


def line_counts(root: Path) -> dict[str, int]:
    """``path relative to the repository -> lines`` of every module under ``root``."""
    return {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines())
            for p in sorted(root.rglob("*.py"))}


def test_core_modules_are_small_and_the_loop_is_short():
    sizes = line_counts(REPO / "partsup")
    big = [f"{p}: {n} lines" for p, n in sizes.items() if n > MAX_CORE_LINES]
    assert not big, f"split these (over {MAX_CORE_LINES} lines):\n" + "\n".join(big)
    assert sizes["partsup/training/loop.py"] <= MAX_LOOP_LINES


def test_plugin_modules_are_small():
    sizes = line_counts(REPO / "plugins")
    big = [f"{p}: {n} lines" for p, n in sizes.items()
           if n > MAX_CORE_LINES and p not in KNOWN_BIG_PLUGIN_MODULES]
    assert not big, f"split these (over {MAX_CORE_LINES} lines):\n" + "\n".join(big)
    done = [p for p in KNOWN_BIG_PLUGIN_MODULES if sizes.get(p, 0) <= MAX_CORE_LINES]
    assert not done, f"gone or small now, remove from KNOWN_BIG_PLUGIN_MODULES: {done}"


def test_no_test_module_imports_another():
    """Test modules share through tests/helpers.py (functions, constants) and tests/conftest.py
    (fixtures, used by name), never by importing one another or conftest."""
    tests = REPO / "tests"
    own = {p.stem for p in tests.glob("test_*.py")} | {"conftest"}
    bad = [f"{path.relative_to(REPO)} imports {name}"
           for path in sorted(tests.glob("test_*.py"))
           for name in sorted({m.split(".")[0] for m in imported_modules(path, package="")}
                              & own)]
    assert not bad, ("move what is shared into tests/helpers.py or a conftest.py fixture:\n"
                     + "\n".join(bad))


def test_checker_sees_a_test_module_imported_in_a_function(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_x():\n    from test_predict import he_like\n")
    assert "test_predict" in {m.split(".")[0] for m in imported_modules(probe, package="")}
