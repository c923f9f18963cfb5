"""Every partsup hook. Call hooks by keyword; one plugin manager per run.

Registration hooks receive ``register(name, factory, summary=None)``; the callback records which
plugin provided the component, so duplicates and ``partsup plugins`` can name providers.
Semantics: registration hooks are called for *all* plugins (results combined into registries);
``partsup_fuse`` is *first result wins* (the core's default runs last); ``partsup_filter_candidates``
is *all results combined* (a candidate survives only if every returned keep-mask keeps it);
``partsup_configure`` is called for all plugins, results ignored; ``partsup_default_checkpoint``
is *first result wins*.
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("partsup")

Register = Callable[..., Any]


@hookspec
def partsup_register_backbones(register: Register) -> None:
    """Register backbones: ``name -> factory(**kw) -> Branch`` with 2 classes (see partsup.model.partial)."""


@hookspec
def partsup_register_weight_transfers(register: Register) -> None:
    """Register weight-transfer functions Gamma: ``name -> factory(d_in, d_out, **kw) -> nn.Module``.

    The module maps per-class weight vectors ``(n_class, d_in) -> (n_class, d_out)`` (float32).
    """


@hookspec
def partsup_register_label_makers(register: Register) -> None:
    """Register weak-label makers: ``name -> factory(**kw) -> LabelMaker``.

    A LabelMaker is called ``maker(points, shape, rng, mpp)`` with points ``(N, 2)`` float x,y in
    pixels, shape ``(H, W)``, a ``numpy.random.Generator`` and micrometres per pixel; it returns an
    ``(H, W)`` uint8 class map: 0 background, 1 mitosis, 255 ignore.
    """


@hookspec
def partsup_register_losses(register: Register) -> None:
    """Register losses: ``name -> factory(reduction='sum'|'mean', **kw) -> nn.Module``.

    The module is called ``loss(logits, target)`` with logits ``(B, 2, H, W)`` float and target
    ``(B, H, W)`` int64 (255 = ignore) and returns a scalar tensor.
    """


@hookspec
def partsup_register_datasets(register: Register) -> None:
    """Register dataset readers: ``name -> factory(root, split='train', strict=True, **kw)``.

    The reader is a sequence of :class:`partsup.types.Sample`; its class attribute ``LAYOUT``
    (a string) describes the expected files for ``partsup datasets`` and for error messages.
    """


@hookspec
def partsup_register_filters(register: Register) -> None:
    """Register candidate filters/scorers: ``name -> factory(**kw) -> fn(blobs, mpp) -> keep``.

    ``blobs`` is a :class:`partsup.types.Blobs` table (arrays of length K); ``keep`` a bool
    array of length K.
    """


@hookspec
def partsup_register_protocols(register: Register) -> None:
    """Register evaluation protocols: ``name -> factory(**kw) -> partsup.types.Protocol``."""


@hookspec
def partsup_register_writers(register: Register) -> None:
    """Register detection writers (output formats): ``name -> factory(**kw) -> Writer``."""


@hookspec
def partsup_register_optimizers(register: Register) -> None:
    """Register optimiser recipes: ``name -> factory(model, **kw) -> (optimizer, scheduler|None)``."""


@hookspec
def partsup_register_commands(register: Register) -> None:
    """Register CLI subcommands: ``name -> Command`` (see :class:`partsup.cli.main.Command`)."""


@hookspec(firstresult=True)
def partsup_fuse(weak: Any, strong: Any, params: dict[str, Any]) -> Any:
    """Fuse the weak and strong probability maps ``(H, W)`` float32 into one map ``(H, W)``.

    First non-None result wins; the core's default (``w * weak + (1 - w) * strong``) runs last.
    ``strong`` is None for weak-only models.
    """


@hookspec
def partsup_filter_candidates(blobs: Any, mpp: float, params: dict[str, Any]) -> Any:
    """Return a bool keep-mask over ``blobs`` (length K), or None to abstain.

    All results are combined with logical AND, after the recipe's named filters.
    """


@hookspec
def partsup_configure(recipe: dict[str, Any]) -> None:
    """Called with the resolved recipe (a plain dict) before a run; raise to reject it."""


@hookspec(firstresult=True)
def partsup_default_checkpoint() -> Any:
    """A ready-made checkpoint (a ``str`` or ``Path`` to a ``.pt`` file) that commands use when
    the user gives no ``--checkpoint``, or None to abstain. First non-None result wins."""
