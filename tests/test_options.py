"""Typed hook options: :class:`partsup.options.Option` rows become argparse arguments (a flag with
its type and check, or a default-only value), and ``partsup predict`` and the Python API read
the plugins' ``predict`` defaults from the same rows."""
from __future__ import annotations

import argparse

import pytest

from partsup import hookimpl
from partsup.command import add_option
from partsup.cli.main import build_parser
from partsup.errors import PartsupError
from partsup.manager import Registries, make_plugin_manager
from partsup.options import Option, command_options, option_defaults
from partsup.prediction.settings import BASE_DEFAULTS, predict_defaults, predict_options


def at_most_ten(value: float) -> None:
    if value > 10:
        raise PartsupError(f"--area must be at most 10, got {value:g}")


def parser_of(*options: Option) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    for option in options:
        add_option(parser, option)
    return parser


def test_a_flag_gets_its_default_type_metavar_and_help(capsys):
    parser = parser_of(Option("area", 2.0, "area of one field (mm²)", flag="--area",
                              type=float, metavar="MM2"))
    assert parser.parse_args([]).area == 2.0
    assert parser.parse_args(["--area", "3.5"]).area == 3.5
    assert "--area MM2" in parser.format_help() and "area of one field" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--area", "big"])
    assert "argument --area: invalid float value: 'big'" in capsys.readouterr().err


def test_a_check_runs_after_the_type_with_a_one_line_error():
    parser = parser_of(Option("area", 2.0, flag="--area", type=float, check=at_most_ten))
    assert parser.parse_args(["--area", "10"]).area == 10.0
    with pytest.raises(PartsupError, match="--area must be at most 10, got 11"):
        parser.parse_args(["--area", "11"])
    plain = parser_of(Option("name", "x", flag="--name", check=lambda v: None))
    assert plain.parse_args(["--name", "y"]).name == "y"  # no type: the text itself


def test_choices_and_a_default_only_value():
    parser = parser_of(Option("mode", "a", flag="--mode", choices=("a", "b")),
                       Option("label", "Thing", help="the objects' class name"))
    args = parser.parse_args(["--mode", "b"])
    assert (args.mode, args.label) == ("b", "Thing")
    assert "label" not in parser.format_help() and "{a,b}" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--label", "Other"])  # no flag: not settable on the command line


def test_option_defaults_later_rows_win():
    rows = [Option("a", 1), Option("b", 2), Option("a", 3)]
    assert option_defaults(rows, {"c": 0}) == {"c": 0, "a": 3, "b": 2}


class Counting:
    """A plugin with predict options: a flag with a check and two default-only values."""

    @hookimpl
    def partsup_command_options(self, command):
        if command != "predict":
            return None
        return [Option("area", 2.0, "field area", flag="--area", type=float,
                       check=at_most_ten),
                Option("default_mpp", 0.5), Option("label", "Thing")]


@pytest.fixture
def plugin_registries():
    pm = make_plugin_manager(objects=[Counting()], entry_points=False)
    return Registries.from_pm(pm)


def test_the_command_and_the_python_api_get_the_same_plugin_defaults(plugin_registries):
    pm = plugin_registries.pm
    defaults = predict_defaults(pm)
    assert defaults == {"default_mpp": 0.5, "label": "Thing", "area": 2.0}
    args = build_parser(plugin_registries).parse_args(["predict", "x.png"])
    assert {k: getattr(args, k) for k in defaults} == defaults
    assert predict_defaults(None) == dict(BASE_DEFAULTS)
    assert command_options(pm, "train") == []


def test_python_api_options_are_checked_and_unknown_names_refused(plugin_registries):
    pm = plugin_registries.pm
    assert predict_options(pm, {"area": 4.0})["area"] == 4.0
    assert predict_options(pm, {"label": None})["label"] is None
    with pytest.raises(PartsupError, match="--area must be at most 10"):
        predict_options(pm, {"area": 50.0})
    with pytest.raises(PartsupError, match="unknown option.*nope.*define area, default_mpp"):
        predict_options(pm, {"nope": 1})


def test_the_documented_example_adds_an_option_and_a_default(tmp_path, monkeypatch):
    """docs/plugins.md, ``partsup_command_options``: its example, as a plugin module."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    section = text.split("### `partsup_command_options(command)`", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "doc_options_plugin.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    regs = Registries.from_pm(make_plugin_manager(modules=["doc_options_plugin"],
                                                  entry_points=False))
    args = build_parser(regs).parse_args(["predict", "x.png", "--box-area", "2.5"])
    assert (args.box_area, args.label) == (2.5, "Cell")
    assert predict_defaults(regs.pm) == {"default_mpp": None, "label": "Cell", "box_area": 1.0}
