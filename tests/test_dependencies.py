"""pyproject.toml declares what the code imports, with floors that have what the code calls.

- every third-party package imported anywhere under ``partsup/`` and ``plugins/`` (function-level
  imports too, found with ``ast``) is declared: in ``[project] dependencies`` when imported at a
  module's top level, in ``dependencies`` or an extra when the import is lazy (inside a function
  or a ``try``), as ``onnx`` or ``openslide`` are;
- every core dependency has a floor, and the floors are at least the versions that introduced
  what the code calls (:data:`FEATURES`, each row found in the source so the table stays true);
- the installed versions satisfy the declared floors.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

packaging = pytest.importorskip("packaging", reason="packaging is in the test extra")
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("partsup", "plugins")

# What the code calls and the first version of its package that has it. A row's pattern must be
# found in the source under ROOTS (a row whose use is gone must be removed, with its floor).
FEATURES = [
    ("torch", "2.5", "torch.onnx.export(..., dynamo=False) (the argument is new in 2.5)",
     r"dynamo=False"),
    ("albumentations", "1.4.22", "A.Rotate(fill=..., fill_mask=...) (1.4.21 ignores them with "
     "a warning)", r"fill_mask="),
    ("albumentations", "1.4.21", "A.Compose(..., seed=...)", r"Compose\((.|\n)*?seed="),
    ("segmentation-models-pytorch", "0.5", "decoder(features) taking one list (0.4 and before: "
     "decoder(*features))", r"self\.decoder\(self\.encoder\(x\)\)"),
    ("segmentation-models-pytorch", "0.4", "smp.MODEL_ARCHITECTURES_MAPPING",
     r"MODEL_ARCHITECTURES_MAPPING"),
    ("pillow", "9.1", "PIL.Image.Resampling", r"Image\.Resampling\."),
]


def _project() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="tomllib is Python 3.11+")
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _requirements(specs: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


def core() -> dict[str, Requirement]:
    return _requirements(_project()["dependencies"])


def extras() -> dict[str, Requirement]:
    out: dict[str, Requirement] = {}
    for specs in _project().get("optional-dependencies", {}).values():
        out.update(_requirements(specs))
    return out


def _own_modules() -> set[str]:
    """Top-level names of this repository's packages (partsup, the bundled plugins)."""
    names = {"partsup"}
    names.update(p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").is_file())
    names.update(p.stem for p in (REPO / "plugins").glob("*.py"))
    return names


def _sources() -> list[Path]:
    return sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py"))


def imports() -> dict[str, dict[str, list[str]]]:
    """Third-party top-level module name -> {"eager": [where], "lazy": [where]}. Eager: at a
    module's top level outside ``try``; lazy: inside a function, class body or ``try``."""
    own = _own_modules()
    found: dict[str, dict[str, list[str]]] = {}

    def visit(node: ast.AST, lazy: bool, where: Path) -> None:
        for child in ast.iter_child_nodes(node):
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in own or top == "__future__":
                    continue
                kind = "lazy" if lazy else "eager"
                found.setdefault(top, {"eager": [], "lazy": []})[kind].append(
                    f"{where.relative_to(REPO)}:{child.lineno}")
            nested = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda, ast.ClassDef, ast.Try))
            if sys.version_info >= (3, 11):
                nested = nested or isinstance(child, ast.TryStar)
            visit(child, nested, where)

    for path in _sources():
        visit(ast.parse(path.read_text(), str(path)), False, path)
    return found


def distributions(module: str) -> set[str]:
    """Canonical distribution names providing top-level ``module`` (installed ones)."""
    return {canonicalize_name(d) for d in md.packages_distributions().get(module, [])}


def test_the_import_walk_sees_function_level_and_optional_imports() -> None:
    found = imports()
    assert found["cv2"]["eager"] and found["PIL"]["lazy"]  # PIL: only inside functions
    assert found["onnxruntime"]["lazy"] and not found["onnxruntime"]["eager"]
    assert found["openslide"]["lazy"] and not found["openslide"]["eager"]
    assert "partsup" not in found and "os" not in found and "partsup_mitosis" not in found


@pytest.mark.slow
def test_every_imported_package_is_declared() -> None:
    required, optional = core(), extras()
    missing = []
    for module, where in sorted(imports().items()):
        dists = distributions(module)
        if not dists:
            missing.append(f"{module} (imported at {(where['eager'] + where['lazy'])[0]}) is not "
                           "installed: cannot tell which distribution provides it")
            continue
        if where["eager"] and not dists & required.keys():
            missing.append(f"{module} ({'/'.join(sorted(dists))}, imported at "
                           f"{where['eager'][0]}) is not in [project] dependencies")
        elif not dists & (required.keys() | optional.keys()):
            missing.append(f"{module} ({'/'.join(sorted(dists))}, imported at "
                           f"{where['lazy'][0]}) is in neither dependencies nor an extra")
    assert not missing, "\n".join(missing)


def test_core_dependencies_have_floors() -> None:
    bare = [str(r) for r in core().values()
            if not any(s.operator in (">=", "==", "~=", ">") for s in r.specifier)]
    assert not bare, f"dependencies without a lower bound: {bare}"


@pytest.mark.parametrize("dist,version,what,pattern", FEATURES, ids=[f[0] for f in FEATURES])
def test_floors_have_what_the_code_calls(dist: str, version: str, what: str, pattern: str) -> None:
    uses = [str(p.relative_to(REPO)) for p in _sources() if re.search(pattern, p.read_text())]
    assert uses, f"{what}: no longer used under {ROOTS} (remove the row and revisit the floor)"
    req = {**extras(), **core()}.get(canonicalize_name(dist))
    assert req is not None, f"{dist} is used ({uses[0]}) but not declared"
    floors = [Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")]
    assert floors and max(floors) >= Version(version), (
        f"pyproject.toml declares {req}; {uses[0]} calls {what}, which needs {dist}>={version}")


def test_installed_versions_satisfy_the_floors() -> None:
    bad = []
    for name, req in {**extras(), **core()}.items():
        try:
            installed = md.version(req.name)
        except md.PackageNotFoundError:
            if name in core():
                bad.append(f"{req}: not installed")
            continue  # an extra that is not installed here
        if not req.specifier.contains(installed, prereleases=True):
            bad.append(f"{req}: installed {installed}")
    assert not bad, "\n".join(bad)
