"""bench/ and docs/img/ scripts use only the installed packages' public names (issue 22).

Each script's source is walked with ``ast`` (function-level imports included) and refused when it
(a) imports an underscore name from ``partsup``/``partsup_*`` (``from partsup.x import _y``, or a
module path with an underscore part such as ``partsup._x``), (b) reads an underscore attribute of
a name bound to a partsup module (``blobs._otsu`` after ``from partsup.inference import blobs``),
(c) changes ``sys.path``, or (d) imports another script of bench/ or docs/img/.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*REPO.glob("bench/*.py"), *REPO.glob("docs/img/*.py")])
SIBLINGS = {p.stem for p in SCRIPTS}
#: uses known and not yet removed, as (script, the problem's text after "line N: "); empty this.
#: slide_memory.py shares predict_memory.py's child-process launch and report by importing it
#: (it works because python puts the script's folder first on sys.path)
KNOWN = {("bench/slide_memory.py", "imports the script predict_memory")}


def ours(module: str) -> bool:
    """Whether a dotted module name belongs to partsup or one of its plugins (partsup_*)."""
    top = module.split(".")[0]
    return top == "partsup" or top.startswith("partsup_")


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def root_name(node: ast.AST) -> str | None:
    """The name an expression such as ``a.b(c)[0].d`` starts from (``a``), or None."""
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def problems(source: str) -> list[str]:
    """Every use of a private partsup name, ``sys.path`` change or sibling-script import in one
    script's source, as ``"line N: what"`` strings (empty when the script is clean)."""
    tree = ast.parse(source)
    found: list[str] = []
    # local names bound to a partsup module, function or class, or to a value made from one
    # (``ds = factory(...)``); best effort: any scope, no flow analysis
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if ours(a.name):
                    if any(private(part) for part in a.name.split(".")):
                        found.append(f"line {node.lineno}: import {a.name}")
                    modules.add(a.asname or a.name.split(".")[0])
                elif a.name.split(".")[0] in SIBLINGS:
                    found.append(f"line {node.lineno}: imports the script {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if ours(node.module):
                if any(private(part) for part in node.module.split(".")):
                    found.append(f"line {node.lineno}: from {node.module} import ...")
                for a in node.names:
                    if private(a.name):
                        found.append(f"line {node.lineno}: from {node.module} import {a.name}")
                    modules.add(a.asname or a.name)  # a submodule, function or class
            elif node.module.split(".")[0] in SIBLINGS:
                found.append(f"line {node.lineno}: imports the script {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"line {node.lineno}: relative import")
    grown = True
    while grown:  # names assigned from an expression rooted at a partsup name
        grown = False
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None \
                    and root_name(node.value) in modules:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name) and n.id not in modules:
                            modules.add(n.id)
                            grown = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if root_name(node.value) in modules:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Attribute) and node.attr == "path" \
                and isinstance(node.value, ast.Name) and node.value.id == "sys":
            found.append(f"line {node.lineno}: sys.path")
        if isinstance(node, ast.ImportFrom) and node.module == "sys" \
                and any(a.name == "path" for a in node.names):
            found.append(f"line {node.lineno}: from sys import path")
    return sorted(set(found), key=lambda s: int(s.split()[1].rstrip(":")))


def test_there_are_scripts_to_check():
    names = {p.name for p in SCRIPTS}
    assert {"postprocess.py", "synth_baseline.py", "amibr_counterfactual.py",
            "make_bundled_data_figures.py"} <= names


def name(script: Path) -> str:
    return script.relative_to(REPO).as_posix()


def unknown(script: Path) -> list[str]:
    return [f for f in problems(script.read_text(encoding="utf-8"))
            if (name(script), f.split(": ", 1)[1]) not in KNOWN]


@pytest.mark.parametrize("script", SCRIPTS, ids=name)
def test_script_uses_public_names_only(script: Path):
    found = unknown(script)
    assert not found, f"{name(script)}: " + "; ".join(found)


def test_known_uses_are_still_there():
    """An entry of KNOWN whose use is gone must leave KNOWN, so that it cannot come back."""
    for script, what in KNOWN:
        found = [f.split(": ", 1)[1] for f in problems((REPO / script).read_text("utf-8"))]
        assert what in found, f"{script} no longer has {what!r}: remove it from KNOWN"


@pytest.mark.parametrize("source, expected", [
    ("from partsup.inference import blobs\nblobs._otsu(x)\n", "blobs._otsu"),
    ("def f():\n    from partsup.inference import blobs as b\n    return b._blob_sums\n",
     "b._blob_sums"),
    ("from partsup.inference.blobs import _otsu\n", "import _otsu"),
    ("import partsup.inference.blobs\npartsup.inference.blobs._otsu(x)\n", "blobs._otsu"),
    ("import partsup_mitosis.amibr as a\na.factory()._placement(1)\n", "_placement"),
    ("from partsup_mitosis.amibr import factory\nds = factory(split='val')\nds._placement(1)\n",
     "ds._placement"),
    ("from partsup._private import x\n", "from partsup._private import"),
    ("import sys\nsys.path.insert(0, 'bench')\n", "sys.path"),
    ("from sys import path\n", "from sys import path"),
    ("from synth_baseline import small_cnn\n", "imports the script synth_baseline"),
])
def test_the_check_finds_each_kind_of_use(source: str, expected: str):
    found = problems(source)
    assert any(expected in f for f in found), found


def test_the_check_lets_public_and_foreign_names_pass():
    source = ("import numpy as np\nfrom partsup.inference import blobs\n"
              "from partsup.evaluation.matching import Counts\n"
              "blobs.otsu_threshold(x)\nnp._internal\nCounts().f1\nt = np.zeros(1)\nt._x\n"
              "class A:\n    def f(self):\n        return self._x\n")
    assert problems(source) == []
