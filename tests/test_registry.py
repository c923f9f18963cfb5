"""Registry: duplicates name both providers, unknown names list the known ones, kwargs checks."""
from __future__ import annotations

from typing import Literal, Sequence

import pytest

from partsup.errors import PluginError, RecipeError
from partsup.registry import Registry


def make_thing(width: int = 8, ratio: float = 0.5, act: Literal["relu", "gelu"] = "relu"):
    """A thing for tests."""
    return ("thing", width, ratio, act)


def needs_depth(depth: int, d_in: int = 0):
    return depth, d_in


def test_register_decorator_and_summary():
    reg = Registry("backbone")

    @reg.register("thing")
    def factory(width: int = 1):
        """First line.

        More text."""
        return width
    assert "thing" in reg and reg.names() == ["thing"]
    assert reg.entry("thing").summary == "First line."
    assert reg.build("thing", width=3) == 3


def test_duplicate_names_both_providers():
    reg = Registry("backbone")
    reg.register("unet", make_thing, provider="pluginA (dist-a)")
    with pytest.raises(PluginError) as exc:
        reg.register("unet", make_thing, provider="pluginB")
    msg = str(exc.value)
    assert "pluginA (dist-a)" in msg and "pluginB" in msg and "'unet'" in msg


def test_unknown_name_lists_known_and_closest():
    reg = Registry("backbone")
    reg.register("fcn32s", make_thing)
    reg.register("smp", make_thing)
    with pytest.raises(RecipeError) as exc:
        reg.get("fcn23s", where="recipe.yaml: model.backbone")
    msg = str(exc.value)
    assert "recipe.yaml: model.backbone" in msg
    assert "Did you mean 'fcn32s'" in msg and "fcn32s, smp" in msg


def test_check_kwargs_unknown_key_closest():
    reg = Registry("backbone")
    reg.register("thing", make_thing)
    with pytest.raises(RecipeError, match=r"unknown key 'widht'.*Did you mean 'width'"):
        reg.check_kwargs("thing", {"widht": 3}, where="r.yaml: model.backbone")


@pytest.mark.parametrize("kwargs, expected", [
    ({"width": "wide"}, "expected an integer"),
    ({"ratio": "half"}, "expected a number"),
    ({"act": "tanh"}, "one of 'relu', 'gelu'"),
    ({"width": True}, "expected an integer"),
])
def test_check_kwargs_types(kwargs, expected):
    reg = Registry("backbone")
    reg.register("thing", make_thing)
    with pytest.raises(RecipeError, match=expected):
        reg.check_kwargs("thing", kwargs, where="model.backbone")


def test_int_accepted_for_float_and_build():
    reg = Registry("backbone")
    reg.register("thing", make_thing)
    assert reg.build("thing", ratio=1, width=2) == ("thing", 2, 1, "relu")


def test_missing_required_and_supplied():
    reg = Registry("weight transfer")
    reg.register("deep", needs_depth)
    with pytest.raises(RecipeError, match="missing required value 'depth'"):
        reg.check_kwargs("deep", {}, supplied=("d_in",))
    with pytest.raises(RecipeError, match="gets 'd_in' from partsup"):
        reg.check_kwargs("deep", {"depth": 1, "d_in": 3}, supplied=("d_in",))
    assert reg.build("deep", supplied={"d_in": 5}, depth=2) == (2, 5)


def test_non_callable_and_bad_name_rejected():
    reg = Registry("loss")
    with pytest.raises(PluginError, match="non-callable"):
        reg.register("x", 3, provider="p")
    with pytest.raises(PluginError, match="invalid name"):
        reg.register("", make_thing, provider="p")


def pick_cases(cases: "Sequence[str]" = ("A03",), size: tuple[int, int] = (1, 2),
               weights: list[float] | None = None):
    return cases, size, weights


@pytest.mark.parametrize("kwargs, expected", [
    ({"cases": "A03"}, "expected a list of strings, got 'A03'"),
    ({"cases": 5}, "expected a list of strings"),
    ({"cases": ["A03", 4]}, "expected a list of strings"),
    ({"size": [1, 2, 3]}, r"expected a list of 2 \(an integer, an integer\)"),
    ({"weights": ["x"]}, "expected a list of numbers or null"),
])
def test_sequence_annotations_are_checked_item_by_item(kwargs, expected):
    reg = Registry("dataset")
    reg.register("pick", pick_cases)
    with pytest.raises(RecipeError, match=expected):
        reg.check_kwargs("pick", kwargs, where="data.val")


def test_sequence_annotations_accept_lists():
    reg = Registry("dataset")
    reg.register("pick", pick_cases)
    reg.check_kwargs("pick", {"cases": ["A03", "A04"], "size": [3, 4], "weights": [1, 0.5]})
    reg.check_kwargs("pick", {"weights": None})


def test_component_kwargs_splits_every_spec_form():
    from partsup.registry import component_kwargs
    spec = {"name": "mlp", "layers": 3}
    assert component_kwargs(spec) == ("mlp", {"layers": 3}) and spec == {"name": "mlp", "layers": 3}
    assert component_kwargs("mlp") == ("mlp", {})
    with pytest.raises(RecipeError, match=r"^detect\.filters\[0\]: expected a component"):
        component_kwargs({"min": 3}, "detect.filters[0]")
    with pytest.raises(RecipeError, match=r"name: expected a string"):
        component_kwargs({"name": 3})


def test_build_component_checks_options():
    reg = Registry("widget")
    reg.register("w", lambda size=1, *, d_in: (size, d_in))
    assert reg.build_component({"name": "w", "size": 2}, "x", supplied={"d_in": 5}) == (2, 5)
    assert reg.build_component("w", "x", supplied={"d_in": 5}) == (1, 5)
    with pytest.raises(RecipeError, match=r"x: unknown key 'sise'.*Did you mean 'size'"):
        reg.build_component({"name": "w", "sise": 2}, "x", supplied={"d_in": 5})
