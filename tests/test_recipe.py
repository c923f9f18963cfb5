"""Recipe loading: YAML, env substitution, --set overrides, and every validation error."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from partsup.errors import RecipeError
from partsup.manager import Registries, make_plugin_manager
from partsup.recipe import load_recipe, load_run, parse_override, save_resolved
from partsup.registry import Registry

#: components only plugins provide: a recipe names them (the core has no default for them)
PLUGIN_PARTS = """
labels: {weak: {name: concentric}}
loss: {weak: {name: concentric, reduction: mean}}
"""

MINIMAL = """
name: t
model:
  backbone: {name: tiny, width: 4}
""" + PLUGIN_PARTS


class TinyPlugin:
    """A test plugin registering one backbone with typed kwargs."""

    from partsup import hookimpl

    @staticmethod
    def _tiny(width: int = 8, depth: int = 2):
        """A tiny backbone for recipe tests."""
        return ("tiny", width, depth)

    @hookimpl
    def partsup_register_backbones(self, register):
        register("tiny", self._tiny)


@pytest.fixture
def regs() -> Registries:
    """Bundled plugins (for the recipe defaults) plus the test's tiny backbone."""
    return Registries.from_pm(make_plugin_manager(objects=[TinyPlugin()], disabled=()))


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_minimal_recipe_gets_defaults(tmp_path, regs):
    r = load_recipe(write(tmp_path, MINIMAL), registries=None)
    assert r["name"] == "t"
    assert r["model"]["backbone"] == {"name": "tiny", "width": 4}
    assert r["model"]["mode"] == "transfer" and r["model"]["stop_gradient"] is True
    assert r["detect"]["w"] == 0.5 and isinstance(r["detect"]["a1"], float)
    assert r["calibrate"]["w"][-1] == 1.0


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "name: t\nmodel: [unclosed\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    assert str(p) in str(exc.value) and "malformed YAML" in str(exc.value)
    assert "line" in str(exc.value)


def test_unknown_key_suggests_closest(tmp_path):
    p = write(tmp_path, MINIMAL + "detect: {sigam: 2}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert str(p) in msg and "'detect.sigam'" in msg and "Did you mean 'detect.sigma'" in msg


def test_wrong_type_names_path_and_expectation(tmp_path):
    p = write(tmp_path, MINIMAL + "train: {iterations: many}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml: train\.iterations: expected an integer, got 'many'"):
        load_recipe(p)


def test_wrong_choice(tmp_path):
    p = write(tmp_path, MINIMAL.replace("model:\n", "model:\n  mode: halfway\n"))
    with pytest.raises(RecipeError, match=r"model\.mode: expected one of transfer, independent, weak_only"):
        load_recipe(p)


def test_missing_required_values(tmp_path):
    with pytest.raises(RecipeError, match=r"missing required value 'name'"):
        load_recipe(write(tmp_path, "model: {backbone: tiny}\n"))
    with pytest.raises(RecipeError, match=r"missing required value 'model.backbone'"):
        load_recipe(write(tmp_path, "name: t\n" + PLUGIN_PARTS))


def test_plugin_components_have_no_core_default(tmp_path, regs):
    """labels.weak and loss.weak name plugin components: a recipe must state them, and the
    error lists what the loaded plugins registered; eval.protocol defaults to none."""
    p = write(tmp_path, "name: t\nmodel: {backbone: tiny}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(p, registries=regs)
    msg = str(exc.value)
    assert "missing required value 'labels.weak'" in msg and "concentric" in msg
    assert "\n" not in msg
    p = write(tmp_path, "name: t\nmodel: {backbone: tiny}\nlabels: {weak: concentric}\n")
    with pytest.raises(RecipeError, match=r"missing required value 'loss.weak'"):
        load_recipe(p)
    assert load_recipe(write(tmp_path, MINIMAL))["eval"]["protocol"] is None


def test_unknown_component_name(tmp_path, regs):
    p = write(tmp_path, MINIMAL.replace("name: tiny", "name: tinny"))
    with pytest.raises(RecipeError) as exc:
        load_recipe(p, registries=regs)
    msg = str(exc.value)
    assert str(p) in msg and "model.backbone" in msg and "Did you mean 'tiny'" in msg


def test_component_kwargs_checked(tmp_path, regs):
    p = write(tmp_path, MINIMAL.replace("width: 4", "width: four"))
    with pytest.raises(RecipeError, match=r"model\.backbone\.width: expected an integer"):
        load_recipe(p, registries=regs)
    p = write(tmp_path, MINIMAL.replace("width: 4", "widht: 4"))
    with pytest.raises(RecipeError, match=r"unknown key 'widht'.*Did you mean 'width'"):
        load_recipe(p, registries=regs)


def test_env_substitution(tmp_path):
    text = MINIMAL + ("data:\n  weak: {name: amida13, root: '${PARTSUP_DATA}/amida13'}\n"
                      "  val:\n    name: amida13\n    root: ${NOT_SET_VAR:-/fallback}\n")
    r = load_recipe(write(tmp_path, text), env={"PARTSUP_DATA": "/d"})
    assert r["data"]["weak"]["root"] == "/d/amida13"
    assert r["data"]["val"]["root"] == "/fallback"
    with pytest.raises(RecipeError, match=r"data\.weak\.root: environment variable \$\{PARTSUP_DATA\} is not set"):
        load_recipe(write(tmp_path, text), env={})


def test_overrides_are_typed(tmp_path, regs):
    p = write(tmp_path, MINIMAL)
    r = load_recipe(p, ["train.iterations=50", "detect.w=0.3", "model.backbone.width=16",
                        "model.mode=weak_only"], registries=regs)
    assert r["train"]["iterations"] == 50 and r["detect"]["w"] == 0.3
    assert r["model"]["backbone"]["width"] == 16 and r["model"]["mode"] == "weak_only"
    with pytest.raises(RecipeError, match=r"train\.iterations: expected an integer, got 'x'"):
        load_recipe(p, ["train.iterations=x"])
    with pytest.raises(RecipeError, match=r"unknown key 'train.iteratoins'.*Did you mean 'train.iterations'"):
        load_recipe(p, ["train.iteratoins=3"])
    with pytest.raises(RecipeError, match="expected KEY.PATH=VALUE"):
        parse_override("train.iterations")
    with pytest.raises(RecipeError, match=r"model\.backbone\.width: expected an integer"):
        load_recipe(p, ["model.backbone.width=wide"], registries=regs)


def test_override_creates_component_from_default(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL), ["model.transfer.layers=3"])
    assert r["model"]["transfer"]["name"] == "mlp" and r["model"]["transfer"]["layers"] == 3


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe(write(tmp_path, MINIMAL), ["seed=7"])
    dest = save_resolved(r, tmp_path / "run")
    again = load_recipe(dest)
    assert again == r and yaml.safe_load(dest.read_text())["seed"] == 7


def test_load_run_imports_recipe_plugins(tmp_path, monkeypatch):
    pkg = tmp_path / "mods"
    pkg.mkdir()
    (pkg / "my_recipe_plugin.py").write_text(
        "from partsup import hookimpl\n"
        "def make(width: int = 2):\n    '''recipe-listed backbone'''\n    return width\n"
        "@hookimpl\ndef partsup_register_backbones(register):\n    register('listed', make)\n")
    monkeypatch.syspath_prepend(str(pkg))
    p = write(tmp_path, "name: t\nplugins: [my_recipe_plugin]\n"
              "model: {backbone: {name: listed, width: 3}}\n" + PLUGIN_PARTS)
    recipe, registries = load_run(p)
    assert registries.backbones.entry("listed").provider == "my_recipe_plugin"
    assert recipe["plugins"] == ["my_recipe_plugin"]


def test_load_run_unknown_plugin_module(tmp_path):
    p = write(tmp_path, "name: t\nplugins: [no_such_mod_xyz]\nmodel: {backbone: tiny}\n")
    from partsup.errors import PluginError
    with pytest.raises(PluginError, match="plugin module 'no_such_mod_xyz' not found"):
        load_run(p)


def test_config_sections_follow_their_dataclasses():
    """data.patch / data.augment are derived from PatchConfig / AugmentConfig: same keys, same
    defaults (tuples as YAML lists), and a section resolved from nothing builds the default."""
    import dataclasses

    from partsup.data.sampling import AugmentConfig, PatchConfig
    from partsup.recipe import SCHEMA, _validate_section

    def as_yaml(v):
        return [as_yaml(x) for x in v] if isinstance(v, (tuple, list)) else v
    for key, cls in (("patch", PatchConfig), ("augment", AugmentConfig)):
        section = SCHEMA["data"][key]
        fields = [f for f in dataclasses.fields(cls) if f.init]
        assert list(section) == [f.name for f in fields]
        for f in fields:
            assert section[f.name].default == as_yaml(f.default), f"data.{key}.{f.name}"
        resolved = _validate_section({}, section, f"data.{key}", "<test>", None)
        assert cls.from_recipe(resolved) == cls()
    with pytest.raises(RecipeError, match=r"data\.patch\.size: expected a list of 2"):
        _validate_section({"size": [1, 2, 3]}, SCHEMA["data"]["patch"], "data.patch", "<t>", None)
    with pytest.raises(RecipeError, match=r"data\.augment\.jitter: expected a list of 4"):
        _validate_section({"jitter": 0.1}, SCHEMA["data"]["augment"], "data.augment", "<t>", None)


def test_core_alone_asks_for_the_weak_label(tmp_path):
    """With the bundled plugins disabled nothing names a plugin component: the error says what
    to set (not "unknown weak label 'concentric'")."""
    core = Registries.from_pm(make_plugin_manager(objects=[TinyPlugin()], entry_points=False))
    with pytest.raises(RecipeError) as exc:
        load_recipe(write(tmp_path, "name: t\nmodel: {backbone: tiny}\n"), registries=core)
    msg = str(exc.value)
    assert "missing required value 'labels.weak'" in msg and "concentric" not in msg


def test_schema_components_name_known_kinds():
    from partsup.hookspecs import KIND_BY_ATTR
    from partsup.recipe import SCHEMA, Component

    def components(d):
        for v in d.values():
            if isinstance(v, dict):
                yield from components(v)
            elif isinstance(v, Component):
                yield v
    assert {c.kind for c in components(SCHEMA)} <= set(KIND_BY_ATTR)
