"""Registries: a dict of named factories plus a decorator.

A duplicate name is an error naming both providers; an unknown name is an error listing the
known names and the closest match. A factory may be registered lazily, as a
``"package.module:attr"`` string imported on first use (so describing the registries imports
nothing heavy). Factories take keyword arguments; :meth:`Registry.check_kwargs`
validates a recipe's keyword arguments against the factory's signature before anything is built.
"""
from __future__ import annotations

import ast
import collections.abc
import difflib
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from partsup.errors import PluginError, RecipeError


class Entry:
    """One registered component: ``name``, ``factory``, ``provider`` (the plugin that
    registered it) and ``summary`` (one line, what ``partsup plugins`` shows).

    A lazy entry was registered with a ``"package.module:attr"`` string (:attr:`target`): its
    module is imported on the first read of :attr:`factory` (or of :attr:`summary` when none
    was given: the factory's docstring), so registering costs no import.
    """

    __slots__ = ("name", "provider", "kind", "target", "_factory", "_summary")

    def __init__(self, name: str, factory: Callable[..., Any] | str, provider: str,
                 summary: str | None, kind: str = "component") -> None:
        self.name, self.provider, self.kind = name, provider, kind
        self.target: str | None = factory if isinstance(factory, str) else None
        self._factory: Callable[..., Any] | None = None if self.target else factory
        self._summary = summary

    @property
    def loaded(self) -> bool:
        """Whether :attr:`factory` is at hand (an eager entry, or a lazy one already used)."""
        return self._factory is not None

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory (a lazy entry's module imported now, once; PluginError if it fails)."""
        if self._factory is None:
            self._factory = resolve_target(self.target or "", self.kind, self.name,
                                           self.provider)
        return self._factory

    @property
    def summary(self) -> str:
        """The summary given at registration, else the factory's first docstring paragraph
        (a lazy entry's read from its module's source when it can be, without importing)."""
        if self._summary is None and self._factory is None and self.target:
            self._summary = source_summary(self.target)
        if self._summary is None:
            self._summary = first_doc_line(self.factory)
        return self._summary


def is_target(text: str) -> bool:
    """Whether ``text`` names a factory lazily: ``"package.module:attr"`` (dotted names)."""
    module, sep, attr = text.partition(":")
    return bool(sep) and all(p.isidentifier() for p in (*module.split("."), *attr.split(".")))


def resolve_target(target: str, kind: str = "component", name: str = "?",
                   provider: str = "?") -> Callable[..., Any]:
    """The object ``"package.module:attr"`` names (``attr`` may be dotted), imported now.

    Raises:
        PluginError: naming the provider, the component and the target.
    """
    module, _, attr = target.partition(":")
    where = f"{provider}: {kind} {name!r} ({target})"
    try:
        obj: Any = importlib.import_module(module)
    except Exception as exc:
        raise PluginError(f"{where} failed to import: {type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{where}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise PluginError(f"{where} is not callable")
    return obj


def source_summary(target: str) -> str | None:
    """:func:`first_doc_line` of the function or class ``"module:attr"`` names, read from the
    module's source file with :mod:`ast` (nothing imported); None when the source or a
    docstring there cannot be found (then only importing it tells)."""
    module, _, attr = target.partition(":")
    path = _source_file(module)
    if path is None or not attr.isidentifier():
        return None
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                   ast.ClassDef)) and n.name == attr]
    doc = ast.get_docstring(defs[-1]) if defs else None
    return _first_paragraph(doc) if doc else None


def _source_file(module: str) -> str | None:
    """The ``.py`` file of ``module``, found without importing it or its packages."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, "__file__", None)
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
        for i in range(1, len(parts)):
            if spec is None or not spec.submodule_search_locations:
                return None
            spec = importlib.machinery.PathFinder.find_spec(
                ".".join(parts[:i + 1]), list(spec.submodule_search_locations))
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return origin if origin and origin.endswith(".py") else None


def _first_paragraph(doc: str) -> str:
    doc = doc.strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc else ""


def closest(name: str, known: list[str] | tuple[str, ...]) -> str | None:
    """The known name closest to ``name`` (ignoring case), or None if nothing is close."""
    lower = {k.lower(): k for k in known}
    if name.lower() in lower:
        return lower[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    return lower[match[0]] if match else None


def component_kwargs(spec: str | Mapping[str, Any], where: str = "") -> tuple[str, dict[str, Any]]:
    """Split a component spec ``{name: ..., **options}`` (or just a name) into
    ``(name, options)``; the options are a new dict (the spec is not changed).

    Raises:
        RecipeError: ``spec`` is neither a name nor a mapping with a string ``name``
            (``where``, e.g. ``"detect.filters[0]"``, starts the message).
    """
    if isinstance(spec, str):
        return spec, {}
    at = f"{where}: " if where else ""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise RecipeError(f"{at}expected a component {{name: ..., options}}, got {spec!r}")
    if not isinstance(spec["name"], str):
        key = f"{where}.name" if where else "name"
        raise RecipeError(f"{key}: expected a string, got {spec['name']!r}")
    return spec["name"], {k: v for k, v in spec.items() if k != "name"}


def scalar_or_pair(value: Any, key: str, cast: Callable[[Any], Any], expected: str
                   ) -> tuple[Any, Any]:
    """A recipe option given as one value or as a two-item list -> ``(a, b)`` (``(v, v)`` for
    one value), each converted by ``cast`` (e.g. ``int``, ``float``).

    Raises:
        RecipeError: a list or tuple whose length is not 2 (``"<key>: expected <expected>, got
            <value>"``).
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise RecipeError(f"{key}: expected {expected}, got {value!r}")
        return cast(value[0]), cast(value[1])
    one = cast(value)
    return one, one


def first_doc_line(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line (a summary may wrap)."""
    return _first_paragraph(inspect.getdoc(obj) or "")


class Registry:
    """Named factories of one kind (e.g. ``backbone``).

    >>> reg = Registry("backbone")
    >>> @reg.register("tiny")
    ... def make_tiny(width: int = 8): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    # -- filling -------------------------------------------------------------------------------
    def register(self, name: str, factory: Callable[..., Any] | str | None = None, *,
                 provider: str = "<direct>", summary: str | None = None):
        """Register ``factory`` under ``name``; usable directly or as a decorator.

        ``factory`` may be a ``"package.module:attr"`` string: a lazy entry, imported when
        first used (:class:`Entry`); give its ``summary`` too, or showing the summary imports
        it. Returns ``factory``.
        """
        if factory is None:
            def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
                self.register(name, fn, provider=provider, summary=summary)
                return fn
            return deco
        if not isinstance(name, str) or not name:
            raise PluginError(f"{provider} registered a {self.kind} with an invalid name {name!r}")
        if isinstance(factory, str):
            if not is_target(factory):
                raise PluginError(f"{provider} registered {self.kind} {name!r} as {factory!r}: "
                                  f"expected a callable or 'package.module:attr'")
        elif not callable(factory):
            raise PluginError(f"{provider} registered {self.kind} {name!r} with a non-callable factory")
        if name in self._entries:
            other = self._entries[name].provider
            raise PluginError(
                f"{self.kind} {name!r} is registered twice: by {other} and by {provider}; "
                f"block one with PARTSUP_DISABLE_PLUGINS or rename it")
        self._entries[name] = Entry(name, factory, provider, summary, self.kind)
        return factory

    # -- reading -------------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def entry(self, name: str, where: str = "") -> Entry:
        """The entry for ``name``; an unknown name raises a RecipeError listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            hint = closest(str(name), self.names())
            at = f"{where}: " if where else ""
            did = f" Did you mean {hint!r}?" if hint else ""
            known = ", ".join(self.names()) or "(none registered)"
            raise RecipeError(f"{at}unknown {self.kind} {name!r}.{did} Known: {known}") from None

    def get(self, name: str, where: str = "") -> Callable[..., Any]:
        return self.entry(name, where).factory

    def check_kwargs(self, name: str, kwargs: dict[str, Any], where: str = "",
                     supplied: tuple[str, ...] = ()) -> None:
        """Validate recipe keyword arguments against the factory signature.

        ``supplied`` names arguments the caller passes itself (e.g. ``d_in`` for a weight
        transfer); they are neither required from nor allowed in the recipe.
        """
        factory = self.get(name, where)
        try:
            sig = inspect.signature(factory)
        except (TypeError, ValueError):
            return
        params = sig.parameters
        var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        accepted = [n for n, p in params.items()
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in supplied]
        at = f"{where}: " if where else ""
        for key, value in kwargs.items():
            if key in supplied:
                raise RecipeError(f"{at}{self.kind} {name!r} gets {key!r} from partsup; remove it")
            if key not in accepted:
                if var_kw:
                    continue
                hint = closest(key, accepted)
                did = f" Did you mean {hint!r}?" if hint else ""
                raise RecipeError(f"{at}unknown key {key!r} for {self.kind} {name!r}.{did} "
                                  f"Expected one of: {', '.join(accepted) or '(no options)'}")
            _check_type(value, _annotation(factory, key), f"{where}.{key}" if where else key)
        for n in accepted:
            p = params[n]
            if p.default is p.empty and n not in kwargs:
                raise RecipeError(f"{at}missing required value {n!r} for {self.kind} {name!r}")

    def build(self, name: str, where: str = "", supplied: dict[str, Any] | None = None,
              **kwargs: Any) -> Any:
        """Validate and call the factory: ``factory(**supplied, **kwargs)``."""
        supplied = supplied or {}
        self.check_kwargs(name, kwargs, where, tuple(supplied))
        return self.get(name, where)(**supplied, **kwargs)

    def build_component(self, spec: str | Mapping[str, Any], where: str = "",
                        supplied: dict[str, Any] | None = None) -> Any:
        """Build a recipe component ``{name: ..., **options}`` (or just a name): split it with
        :func:`component_kwargs`, then :meth:`build` (options checked against the factory)."""
        name, kwargs = component_kwargs(spec, where)
        return self.build(name, where, supplied, **kwargs)


def _annotation(factory: Callable[..., Any], key: str) -> Any:
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # unresolved forward references: skip type checks
        return Any
    return hints.get(key, Any)


_SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "true/false",
           list: "a list", dict: "a mapping", tuple: "a list"}


def _check_type(value: Any, ann: Any, path: str) -> None:
    """Check ``value`` against a (simple) annotation; raise RecipeError naming ``path``."""
    if ann is Any or ann is inspect.Parameter.empty:
        return
    if not type_matches(value, ann):
        raise RecipeError(f"{path}: expected {describe_type(ann)}, got {value!r} "
                          f"({type(value).__name__})")


_UNIONS = (typing.Union, types.UnionType)
#: generic origins that a YAML list satisfies (``Sequence[str]`` has origin collections.abc.Sequence)
_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable,
              collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping)


def type_matches(value: Any, ann: Any) -> bool:
    """Whether ``value`` (as read from YAML) fits annotation ``ann``; unknown kinds pass.

    Sequences are YAML lists (a string is not a list of names) and their items are checked
    against the item annotation (``list[str]``, ``Sequence[int]``, ``tuple[int, int]``, ...).
    """
    if ann is Any:
        return True
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in _UNIONS:
        return any(type_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(type_matches, value, args))
        item = args[0] if args else Any
        return all(type_matches(v, item) for v in value)
    if origin in _MAPPINGS:
        return isinstance(value, dict)
    if ann is type(None):
        return value is None
    if ann is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is tuple:
        return isinstance(value, (list, tuple))
    if isinstance(ann, type):
        if ann in _SIMPLE or ann in (list, dict):
            return isinstance(value, ann)
        return True  # rich objects (e.g. np.ndarray) are not recipe values
    return True


def describe_type(ann: Any) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin in _UNIONS:
        return " or ".join(describe_type(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} ({', '.join(describe_type(a) for a in args)})"
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list of {_plural(describe_type(item))}"
    if origin in _MAPPINGS:
        return "a mapping"
    if ann is type(None):
        return "null"
    return _SIMPLE.get(ann, getattr(ann, "__name__", str(ann)))


def _plural(desc: str) -> str:
    words = {"an integer": "integers", "a number": "numbers", "a string": "strings",
             "true/false": "true/false values", "a list": "lists", "a mapping": "mappings"}
    return words.get(desc, desc)
