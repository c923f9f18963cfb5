"""Every partsup hook, the two pluggy markers, and the table of component kinds.

Plugins mark their hook functions with :data:`hookimpl` (also exported as ``partsup.hookimpl``);
this module imports nothing from partsup, so any module may import the markers without a cycle.
Call hooks by keyword; one plugin manager per run.

Registration hooks receive ``register(name, factory, summary=None)``; the callback records which
plugin provided the component, so duplicates and ``partsup plugins`` can name providers. There is
one registration hook per row of :data:`COMPONENT_KINDS` (``partsup_register_<attr>``, each
written out below with what its factory takes and returns), and
:class:`partsup.manager.Registries`, the core's own plugin and ``partsup plugins`` all read
that table.

Semantics: registration hooks are called for *all* plugins (results combined into registries);
``partsup_fuse`` is *first result wins* (the core's default runs last); ``partsup_filter_candidates``
is *all results combined* (a candidate survives only if every returned keep-mask keeps it);
``partsup_configure`` is called for all plugins, results ignored; ``partsup_default_checkpoint``
is *first result wins*.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Protocol, Sequence

import pluggy

if TYPE_CHECKING:  # a type only: this module imports nothing from partsup
    from partsup.options import Option

hookspec = pluggy.HookspecMarker("partsup")
hookimpl = pluggy.HookimplMarker("partsup")


class Register(Protocol):
    """The callback a registration hook receives: ``register(name, factory, summary=None)``
    records ``factory`` under ``name`` with the calling plugin as its provider; ``summary`` is
    the one line ``partsup plugins`` shows. Without ``factory`` it returns a decorator."""

    def __call__(self, name: str, factory: Callable[..., Any] | None = None,
                 summary: str | None = None) -> Any: ...


class ComponentKind(NamedTuple):
    """One kind of registered component.

    ``attr`` names the registry (``Registries.<attr>``, recipe ``Component`` kinds, ``partsup
    plugins --kind``); ``label`` is the kind shown to users in messages. Its registration hook
    ``partsup_register_<attr>`` is written out below; that spec's docstring (:attr:`doc`) says
    what the factory takes and returns.
    """

    attr: str
    label: str

    @property
    def hook(self) -> str:
        """The registration hook: ``partsup_register_<attr>``."""
        return f"partsup_register_{self.attr}"

    @property
    def doc(self) -> str:
        """What the factory takes and returns: the docstring of the :attr:`hook` spec."""
        return inspect.getdoc(globals()[self.hook]) or ""


#: Every component kind, in the order ``partsup plugins`` lists them; each row has its
#: registration hook spec written out below (``partsup_register_<attr>``).
COMPONENT_KINDS: tuple[ComponentKind, ...] = (
    ComponentKind("backbones", "backbone"),
    ComponentKind("weight_transfers", "weight transfer"),
    ComponentKind("label_makers", "weak label"),
    ComponentKind("losses", "loss"),
    ComponentKind("classifiers", "classifier"),
    ComponentKind("datasets", "dataset"),
    ComponentKind("normalizers", "colour normalizer"),
    ComponentKind("filters", "filter/scorer"),
    ComponentKind("protocols", "protocol"),
    ComponentKind("writers", "writer"),
    ComponentKind("optimizers", "optimizer"),
    ComponentKind("commands", "command"),
)

#: ``attr -> ComponentKind``
KIND_BY_ATTR: dict[str, ComponentKind] = {k.attr: k for k in COMPONENT_KINDS}


# -- registration hooks: one per COMPONENT_KINDS row, called for all plugins -------------------

@hookspec
def partsup_register_backbones(register: Register) -> None:
    """Register backbones: ``name -> factory(**kw) -> Branch`` with 2 classes (see
    :mod:`partsup.model.partial`)."""


@hookspec
def partsup_register_weight_transfers(register: Register) -> None:
    """Register weight-transfer functions Gamma: ``name -> factory(d_in, d_out, **kw) ->
    nn.Module``.

    The module maps per-class weight vectors ``(n_class, d_in) -> (n_class, d_out)`` (float32).
    """


@hookspec
def partsup_register_label_makers(register: Register) -> None:
    """Register weak-label makers: ``name -> factory(**kw) -> LabelMaker``.

    A LabelMaker is called ``maker(points, shape, rng, mpp)`` with points ``(N, 2)`` float x,y in
    pixels, shape ``(H, W)``, a ``numpy.random.Generator`` and micrometres per pixel; it returns an
    ``(H, W)`` uint8 class map: 0 background, 1 object, 255 ignore.
    """


@hookspec
def partsup_register_losses(register: Register) -> None:
    """Register losses: ``name -> factory(reduction='sum'|'mean', **kw) -> nn.Module``.

    The module is called ``loss(logits, target)`` with logits ``(B, 2, H, W)`` float and target
    ``(B, H, W)`` int64 (255 = ignore) and returns a scalar tensor.
    """


@hookspec
def partsup_register_classifiers(register: Register) -> None:
    """Register crop classifiers: ``name -> factory(heads, **kw) -> nn.Module`` (a crop net).

    ``heads`` (``{head: [class, ...]}``, supplied by partsup from the recipe's
    ``classifier.heads``) names each head's classes in logit order. The net is called
    ``net(x)`` with ``x`` ``(B, 3, S, S)`` float32 crops normalised as its ``normalization``
    dict says (mean, std, scale, bgr) and returns ``{head: logits (B, C_head)}`` (see
    :mod:`partsup.model.classifier`).
    """


@hookspec
def partsup_register_datasets(register: Register) -> None:
    """Register dataset readers: ``name -> factory(root, split='train', strict=True, **kw)``.

    The reader is a sequence of :class:`partsup.types.Sample`; its class attribute ``LAYOUT``
    (a string) describes the expected files for ``partsup datasets`` and for error messages.
    """


@hookspec
def partsup_register_normalizers(register: Register) -> None:
    """Register colour normalizers: ``name -> factory(reference=None, **target) -> Normalizer``.

    ``reference`` is an image file to fit the target colours to; a Normalizer has
    ``estimate(image, mask=None) -> dict``, ``apply(image, estimate) -> image`` (``(H, W, 3)``
    uint8 RGB) and ``target() -> dict`` (see :mod:`partsup.data.normalize`).
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
    """Register optimiser recipes: ``name -> factory(model, **kw) -> (optimizer,
    scheduler|None)``."""


@hookspec
def partsup_register_commands(register: Register) -> None:
    """Register CLI subcommands: ``name -> Command`` (see :class:`partsup.command.Command`)."""


# -- the other hooks ----------------------------------------------------------------------------


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


@hookspec
def partsup_command_options(command: str) -> list[Option] | None:
    """Options a plugin adds to the CLI subcommand ``command`` (after the command's own), as
    :class:`partsup.options.Option` rows, or None to add none.

    Called for all plugins; the rows are used in the order pluggy calls the plugins. The CLI
    turns a row with a ``flag`` into an argparse argument (its ``type``, then its ``check``) and
    a row without one into a default of the command's options; the Python API reads the same
    rows' defaults. ``partsup predict`` reads two default-only values: ``default_mpp`` (um/px
    when neither ``--mpp`` nor the image gives one) and ``label`` (the detected objects' class
    name, given to writers as ``info["label"]``).
    """


@hookspec(firstresult=True)
def partsup_count_summary(counts: Sequence[Any], options: Mapping[str, Any]
                          ) -> list[str] | None:
    """The summary lines ``partsup predict`` prints for the counts of its images.

    ``counts`` are :class:`partsup.prediction.ImageCount` (detections, width and height in px,
    mpp in um/px) of the inputs that are not whole slides (a slide's count is on its own lines,
    :func:`partsup_slide_outputs`; with slides only, the hook is not called); ``options``
    maps each of the command's option names (``dest``, plugins' own included, e.g. a value of
    :func:`partsup_command_options`) to its value. First non-None result wins; when every
    plugin abstains the core prints the total and the count per mm^2.
    """


@hookspec
def partsup_slide_outputs(slide: Any, options: Mapping[str, Any]) -> list[str] | None:
    """Extra outputs and summary lines for one whole slide ``partsup predict`` (or
    ``Detector.predict_slide`` with ``out``) has run on.

    ``slide`` is a :class:`partsup.prediction.slide.SlideOutput`: ``id``, ``out`` (the output
    folder), level-0 ``width``/``height`` px and ``mpp`` um/px, ``xy`` (N, 3) float64 detections
    (x, y level-0 px, score), ``detections``, ``thumbnail`` ((h, w, 3) uint8 RGB) with ``scale``
    (thumbnail px per level-0 px), ``tissue`` ((h, w) bool mask at thumbnail scale), ``label`` and
    ``outputs`` (a list: append every file you write, so a failed slide leaves none behind).
    ``options`` maps the command's option names (plugins' own included) to their values.
    Generic helpers: :func:`partsup.slides.density.density_map`,
    :func:`partsup.slides.density.best_window`. Called for all plugins; the lines they return
    are printed after the summary.
    """
