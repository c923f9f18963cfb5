"""Plugin manager construction and the registries plugins fill.

No global plugin manager: :func:`make_plugin_manager` builds one per run (tests get a fresh one).
Plugins come from, in order: the core's own defaults (:mod:`partsup.builtin`), the core's
commands (:data:`CORE_PLUGIN_MODULES`: :mod:`partsup.cli.commands`), the ``partsup``
entry-point group (bundled plugins and third-party packages), modules named in a recipe's
``plugins:`` list, and ``--plugin`` on the command line. ``PARTSUP_DISABLE_PLUGINS=a,b`` blocks
entry points or modules by name.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from typing import Any, Iterable

import pluggy

from partsup import builtin, hookspecs
from partsup.errors import PluginError
from partsup.hookspecs import COMPONENT_KINDS, KIND_BY_ATTR, hookimpl
from partsup.registry import Registry, closest

# ``hookimpl`` is re-exported for plugins written against ``from partsup.manager import hookimpl``;
# new code imports it from ``partsup`` (it is defined in partsup.hookspecs).
__all__ = ["COMPONENT_KINDS", "CORE_PLUGIN_MODULES", "PartsupPluginManager", "Registries",
           "add_module", "check_hooks", "hookimpl", "load", "make_plugin_manager", "provider_name"]


#: the core's plugin modules registered by name right after :mod:`partsup.builtin`: the CLI's
#: commands (named, not imported here: the manager sits below the CLI in the layer order)
CORE_PLUGIN_MODULES: tuple[str, ...] = ("partsup.cli.commands",)


def disabled_from_env() -> set[str]:
    raw = os.environ.get("PARTSUP_DISABLE_PLUGINS", "")
    return {p.strip() for p in raw.split(",") if p.strip()}


class PartsupPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers which distribution each entry-point plugin came from."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.distributions: dict[str, str] = {}


def make_plugin_manager(modules: Iterable[str] = (), *, entry_points: bool = True,
                        disabled: Iterable[str] | None = None,
                        objects: Iterable[Any] = ()) -> pluggy.PluginManager:
    """Build a fresh plugin manager.

    Args:
        modules: extra plugin modules to import by dotted name (recipe ``plugins:``, ``--plugin``).
        entry_points: load the ``partsup`` entry-point group (bundled and third-party plugins).
        disabled: names to block (entry-point names or module names); defaults to the
            ``PARTSUP_DISABLE_PLUGINS`` environment variable.
        objects: already-imported plugin objects to register (handy in tests).
    """
    pm = PartsupPluginManager("partsup")
    pm.add_hookspecs(hookspecs)
    blocked = disabled_from_env() if disabled is None else set(disabled)
    for name in blocked:
        pm.set_blocked(name)
    pm.register(builtin, name="partsup.builtin")
    for mod in CORE_PLUGIN_MODULES:
        add_module(pm, mod, blocked)
    if entry_points:
        _load_entry_points(pm, blocked)
    for mod in modules:
        add_module(pm, mod, blocked)
    for obj in objects:
        pm.register(obj)
    check_hooks(pm)
    return pm


def check_hooks(pm: pluggy.PluginManager) -> None:
    """``pm.check_pending()`` as a one-line :class:`PluginError`: a plugin function named like a
    hook (``partsup_...``) that matches no hook spec, e.g. a misspelled
    ``partsup_register_backbone``, would otherwise register nothing and nobody would be told.

    Raises:
        PluginError: naming the plugin, the unknown hook and the closest known hook.
    """
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        hook = next((name for name, caller in vars(pm.hook).items()
                     if not name.startswith("_") and not caller.has_spec()
                     and any(impl.plugin is exc.plugin for impl in caller.get_hookimpls())),
                    None)
        known = sorted(n for n in dir(hookspecs) if n.startswith("partsup_"))
        hint = closest(hook, known) if hook else None
        did = f"; did you mean {hint!r}?" if hint else ""
        raise PluginError(f"plugin {provider_name(pm, exc.plugin)} implements unknown hook "
                          f"{hook or '?'!r}{did} (known hooks: see partsup.hookspecs)") from None


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    for ep in sorted(md.entry_points(group="partsup"), key=lambda e: e.name):
        if ep.name in blocked or ep.value in blocked or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            dist = ep.dist.name if ep.dist else "?"
            raise PluginError(f"plugin {ep.name!r} ({ep.value}, from {dist}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from exc
        if plugin in blocked:
            continue
        pm.register(plugin, name=ep.name)
        if ep.dist is not None:
            pm.distributions[ep.name] = ep.dist.name


def add_module(pm: pluggy.PluginManager, dotted: str, blocked: set[str] | None = None) -> None:
    """Import ``dotted`` and register it as a plugin (no-op if blocked or already present)."""
    blocked = disabled_from_env() if blocked is None else blocked
    if dotted in blocked or pm.has_plugin(dotted):
        return
    try:
        module = importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        if exc.name and dotted.startswith(exc.name):
            raise PluginError(f"plugin module {dotted!r} not found (is its package installed, "
                              f"or on PYTHONPATH?)") from exc
        raise PluginError(f"plugin module {dotted!r} failed to import: {exc}") from exc
    except Exception as exc:
        raise PluginError(f"plugin module {dotted!r} failed to import: "
                          f"{type(exc).__name__}: {exc}") from exc
    if any(p is module for p in pm.get_plugins()):
        return
    pm.register(module, name=dotted)


def provider_name(pm: pluggy.PluginManager, plugin: Any) -> str:
    """Human name of a plugin: ``entry-point-name (distribution)`` or its module name."""
    name = pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))
    dist = getattr(pm, "distributions", {}).get(name)
    return f"{name} ({dist})" if dist else name


class Registries:
    """Every registry, filled by calling the registration hooks of one plugin manager.

    One :class:`Registry` per row of :data:`partsup.hookspecs.COMPONENT_KINDS`, read as an
    attribute: ``registries.backbones``, ``registries.datasets``, ...
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._registries: dict[str, Registry] = {k.attr: Registry(k.label)
                                                 for k in COMPONENT_KINDS}

    def __getattr__(self, attr: str) -> Registry:
        """The registry of kind ``attr`` (a :data:`COMPONENT_KINDS` ``attr``)."""
        registries = self.__dict__.get("_registries")
        if registries is None or attr not in registries:
            raise AttributeError(f"{type(self).__name__!r} has no registry {attr!r} "
                                 f"(kinds: {', '.join(KIND_BY_ATTR)})")
        return registries[attr]

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *KIND_BY_ATTR]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{a}={len(r)}" for a, r in self._registries.items())
        return f"Registries({sizes})"

    @classmethod
    def from_pm(cls, pm: pluggy.PluginManager) -> "Registries":
        regs = cls(pm)
        for kind in COMPONENT_KINDS:
            registry = regs._registries[kind.attr]
            hook_name = kind.hook
            caller = getattr(pm.hook, hook_name)
            # Call each implementation with its own register callback, so every entry
            # records its provider. Order: pluggy's (last registered first).
            for impl in reversed(caller.get_hookimpls()):
                provider = provider_name(pm, impl.plugin)

                def register(name: str, factory: Any = None, summary: str | None = None,
                             _p: str = provider, _r: Registry = registry) -> Any:
                    return _r.register(name, factory, provider=_p, summary=summary)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(f"plugin {provider} raised in {hook_name}: "
                                      f"{type(exc).__name__}: {exc}") from exc
        return regs

    def all(self) -> dict[str, Registry]:
        """``attr -> Registry`` in :data:`COMPONENT_KINDS` order."""
        return dict(self._registries)

    def add_modules(self, modules: Iterable[str]) -> list[str]:
        """Import the plugin ``modules`` not loaded yet and refill every registry in place (so
        whoever holds these registries sees the new components). Returns the modules added.

        Raises:
            PluginError: a module cannot be imported or registers a clashing name.
        """
        added = [m for m in dict.fromkeys(modules) if not self.pm.has_plugin(m)]
        for module in added:
            add_module(self.pm, module)
        check_hooks(self.pm)
        if added:
            self._registries = Registries.from_pm(self.pm)._registries
        return added


def load(modules: Iterable[str] = (), **kw: Any) -> Registries:
    """Shortcut: a fresh plugin manager and its filled registries."""
    return Registries.from_pm(make_plugin_manager(modules, **kw))
