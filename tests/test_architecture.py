"""The core is domain-free: no module under ``partsup/`` names a mitosis / H&E / HPF / challenge
concept or imports a bundled plugin, and the core alone (bundled plugins disabled) loads, trains
a test plugin's recipe and detects.

``python tests/test_architecture.py FILE...`` prints the hits of the given files only.
"""
from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pytest

from partsup import hookimpl

from helpers import tiny_recipe

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "partsup"
#: domain words the core must not use (case-insensitive substrings)
WORDS = ("mitos", "hpf", "amida", "icpr", "tupac", "midog", "h&e", "hematoxylin", "eosin")
WORD_RE = re.compile("|".join(re.escape(w) for w in WORDS), re.IGNORECASE)
#: an import of the plugins folder or of a plugin package (partsup_*)
IMPORT_RE = re.compile(r"^\s*(?:from|import)\s+(?:plugins\b|partsup_\w+)")
#: the entry-point names of the bundled plugins (pyproject.toml)
BUNDLED = ("fcn32s", "smp", "concentric", "mitosis")


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def hits(files: Iterable[Path]) -> list[str]:
    """``file:line: what`` for every domain word or plugin import in ``files``."""
    out = []
    for path in files:
        rel = path.resolve().relative_to(REPO) if path.resolve().is_relative_to(REPO) else path
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            words = sorted({m.group(0).lower() for m in WORD_RE.finditer(line)})
            if words:
                out.append(f"{rel}:{lineno}: names {', '.join(words)}")
            if IMPORT_RE.match(line):
                out.append(f"{rel}:{lineno}: imports a plugin: {line.strip()}")
    return out


def test_core_names_no_domain_concept_and_imports_no_plugin():
    found = hits(core_files())
    assert not found, ("the core must stay domain-free (move it to a plugin, or say it "
                       "generically):\n" + "\n".join(found))


def test_the_checker_finds_what_it_should(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""Counts per HPF."""\nfrom partsup_mitosis import counts\nx = 1\n')
    found = hits([bad])
    assert [h.split(": ", 1)[0].rsplit(":", 1)[1] for h in found] == ["1", "2", "2"]



# -- hooks written out ---------------------------------------------------------------------------

def written_hooks(path: Path, marker: str) -> dict[str, str | None]:
    """``name -> docstring`` of every module-level ``def partsup_...`` decorated with ``marker``
    (``hookspec`` / ``hookimpl``, called or not) in ``path``."""
    import ast

    def marked(dec: ast.expr) -> bool:
        dec = dec.func if isinstance(dec, ast.Call) else dec
        return isinstance(dec, ast.Name) and dec.id == marker
    tree = ast.parse(path.read_text(), str(path))
    return {node.name: ast.get_docstring(node) for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("partsup_")
            and any(marked(d) for d in node.decorator_list)}


def test_every_kind_has_its_written_out_registration_spec_and_builtin_hook():
    from partsup import builtin, hookspecs
    from partsup.hookspecs import COMPONENT_KINDS, KIND_BY_ATTR
    specs = written_hooks(CORE / "hookspecs.py", "hookspec")
    registration = {n for n in specs if n.startswith("partsup_register_")}
    assert registration == {k.hook for k in COMPONENT_KINDS}
    for kind in COMPONENT_KINDS:  # the doc a kind shows is its spec's docstring
        assert specs[kind.hook] and kind.doc == inspect.getdoc(getattr(hookspecs, kind.hook))
    impls = written_hooks(CORE / "builtin.py", "hookimpl")
    assert {n for n in impls if n.startswith("partsup_register_")} == \
        {KIND_BY_ATTR[attr].hook for attr in builtin.CORE_COMPONENTS}
    assert all(impls.values())
    for name in ("hookspecs.py", "builtin.py"):  # nothing generated into the module
        assert not re.search(r"globals\(\)\[[^]]*\]\s*=", (CORE / name).read_text())


# -- the core alone ------------------------------------------------------------------------------

class DiskLabels:
    """A test plugin's weak-label maker: a disk of ``radius`` px (class 1) around each point."""

    @staticmethod
    def disk(radius: float = 4.0) -> Callable[..., np.ndarray]:
        def make(points: np.ndarray, shape: tuple[int, int], rng: Any, mpp: float) -> np.ndarray:
            yy, xx = np.mgrid[:shape[0], :shape[1]]
            out = np.zeros(shape, np.uint8)
            for x, y in np.asarray(points, np.float64).reshape(-1, 2):
                out[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = 1
            return out
        return make

    @hookimpl
    def partsup_register_label_makers(self, register: Callable[..., Any]) -> None:
        register("test_disk", self.disk)


def core_alone(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Registries of the core, the tiny test plugin and :class:`DiskLabels`; bundled plugins off."""
    from partsup.manager import Registries, make_plugin_manager
    monkeypatch.setenv("PARTSUP_DISABLE_PLUGINS", ",".join(BUNDLED))
    pm = make_plugin_manager(["tiny_plugin"], objects=[DiskLabels()])
    names = {pm.get_name(p) for p in pm.get_plugins()}
    assert not names & set(BUNDLED) and not any(str(n).startswith("partsup_") for n in names)
    return Registries.from_pm(pm)


#: the tiny plugin's recipe with explicit components where the recipe defaults name plugin ones
#: (labels.weak and loss.weak default to 'concentric', eval.protocol to a challenge protocol)
CORE_RECIPE = tiny_recipe({
    "name": "core-alone",
    "labels.weak": {"name": "test_disk", "radius": 4},
    "loss": {"weak": {"name": "pixel_ce"}, "strong": {"name": "pixel_ce"}},
    "train.iterations": 4, "train.val_every": 2, "train.keep_last": 1,
    "detect.filters": [],
})


def test_the_core_alone_trains_and_detects(tmp_path, monkeypatch):
    from partsup.inference.detector import load_detector
    from partsup.recipe import load_recipe
    from partsup.training.loop import fit

    regs = core_alone(monkeypatch)
    assert "concentric" not in regs.label_makers and "mitosis" not in str(regs.datasets.names())
    recipe = load_recipe(data=CORE_RECIPE, registries=regs)
    result = fit(recipe, regs, tmp_path / "run")
    assert result.completed and result.best_path.is_file()
    detector, _ = load_detector(result.best_path, regs, "cpu")
    image = regs.datasets.build("tiny", split="test", n=1)[0].image
    detections = detector.detect(image, 0.25)
    assert all(0 <= d.x < image.shape[1] and 0 <= d.y < image.shape[0] for d in detections)


if __name__ == "__main__":  # pragma: no cover
    found = hits(Path(p) for p in sys.argv[1:])
    print("\n".join(found) or "no hits")
    sys.exit(1 if found else 0)
