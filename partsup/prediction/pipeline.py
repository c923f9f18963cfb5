"""The one prediction pipeline: ``partsup predict``, ``Detector.predict_slide`` and torchrun all
run it (the Python API's side: :mod:`partsup.prediction.api`).

``paths --collect_inputs--> items --(rank r of w: every w-th)--> predict_input (an image:
predict_one; a slide: predict_slide; with --at: the given points classified, predict_one(at=)
or predict_slide_at) --gather on rank 0--> results --> summary lines, summary.csv``.

:class:`PredictRun` is a run over files (the command calls its steps and prints between
them); :func:`partsup.prediction.api.predict_slide_file` is one slide from Python. Both take
the run's settings from :class:`partsup.prediction.settings.PredictSettings`: the same tile
margin, model um/px, plugin defaults and plugin slide outputs. Many processes: under ``torchrun`` (:func:`distributed`)
every rank predicts every ``world``-th input and rank 0 gathers the results, in input order.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Protocol, Sequence

from partsup.data.images import IMAGE_SUFFIXES
from partsup.errors import DataError, PartsupError
from partsup.inference.detector import build_detector
from partsup.output.outdir import check_not_foreign, record_owned
from partsup.prediction.given import predict_slide_at
from partsup.prediction.image import predict_one
from partsup.prediction.inputs import (Item, check_not_input, check_output_folder,
                                      check_summary_clash, collect_inputs, planned_outputs)
from partsup.prediction.result import DetectorLike, Result, failure_message, provenance_of
from partsup.prediction.settings import PredictSettings, model_mpp, polygons_of, slide_extra
from partsup.prediction.slide import predict_slide
from partsup.prediction.summary import summary_lines, write_summary_csv
from partsup.runtime import Dist, init_distributed, on_main, resolve_device
from partsup.slides.reader import is_slide


class Watcher(Protocol):
    """What a run reports while it predicts (the command shows it as progress bars)."""

    def started(self, item: Item) -> None:
        """``item`` is next."""

    def slide(self, item: Item) -> ContextManager[Callable[[int, int], None]]:
        """While the slide ``item`` runs: yields ``on_tile(done, total)``."""

    def failed(self, result: Result) -> None:
        """``result.item`` failed (``result.error``: one line)."""

    def finished(self, item: Item) -> None:
        """``item`` is done (predicted or failed)."""


class Quiet:
    """A :class:`Watcher` that shows nothing."""

    def started(self, item: Item) -> None:
        pass

    @contextlib.contextmanager
    def slide(self, item: Item) -> Iterator[Callable[[int, int], None]]:
        yield lambda done, total: None

    def failed(self, result: Result) -> None:
        pass

    def finished(self, item: Item) -> None:
        pass


@contextlib.contextmanager
def distributed(device: str) -> Iterator[Dist]:
    """This process's place under ``torchrun`` (:func:`partsup.runtime.init_distributed`; one
    process: ``Dist()``). A body that returns waits for the other ranks (gloo may abort a rank
    whose peer already left); the process group made here is destroyed on the way out."""
    dist = init_distributed(device)
    try:
        yield dist
        if dist.enabled:
            import torch.distributed as tdist
            tdist.barrier()
    finally:
        if dist.owns_group:
            import torch.distributed as tdist
            tdist.destroy_process_group()


def load_run_detector(registries: Any, device: Any, overrides: dict[str, Any], *, runtime: str,
                  checkpoint: Path | None = None, model: Path | None = None) -> DetectorLike:
    """The detector of a run: ``runtime`` "torch" builds the ``checkpoint``'s on ``device``;
    "onnx" runs the exported ``model`` with onnxruntime on the CPU. ``overrides``: detection
    parameters (None values ignored).

    Raises:
        PartsupError: onnx without a model; CheckpointError: unreadable checkpoint.
    """
    if runtime == "onnx":
        if model is None:
            raise PartsupError("--runtime onnx needs --model FILE.onnx (partsup export)")
        from partsup.inference.onnx_runtime import load_onnx_detector
        return load_onnx_detector(model, registries, **overrides)
    assert checkpoint is not None, "runtime torch needs a checkpoint"
    return build_detector(checkpoint, registries, device, overrides)


def predict_input(item: Item, detector: DetectorLike, settings: PredictSettings, pm: Any,
                  roi: Any = None, on_tile: Callable[[int, int], None] | None = None) -> Result:
    """One input with the run's settings: a slide (:func:`predict_slide`, ``roi`` polygons,
    ``on_tile(done, total)``) or an image (:func:`predict_one`); with ``settings.at`` the
    given points classified instead of detecting (:func:`predict_slide_at`,
    ``predict_one(at=...)``)."""
    if is_slide(item.path) and settings.at is not None:
        return predict_slide_at(item, detector, settings.writers, settings.out, settings.at,
                                mpp=settings.mpp, default_mpp=settings.default_mpp,
                                label=settings.label, overlay=settings.overlay,
                                on_tile=on_tile, extra=slide_extra(pm, settings.options))
    if is_slide(item.path):
        return predict_slide(item, detector, settings.writers, settings.out,
                             label=settings.label, overlay=settings.overlay, on_tile=on_tile,
                             extra=slide_extra(pm, settings.options),
                             **settings.slide_geometry(detector, roi))
    return predict_one(item, detector, settings.writers, settings.out, settings.mpp,
                       settings.overlay, settings.default_mpp, settings.label,
                       model_mpp(detector, settings.default_mpp), at=settings.at)


def predict_items(items: Sequence[Item], detector: DetectorLike, settings: PredictSettings,
                  pm: Any, watcher: Watcher | None = None, debug: bool = False) -> list[Result]:
    """Every item in turn; a failed one becomes a :class:`Result` with its one-line error
    (``debug``: raised instead) and the run goes on; Ctrl-C in a slide stops after it. Ctrl-C
    in an image raises KeyboardInterrupt once the files of the inputs done are recorded in
    the output folder's marker (so a rerun replaces them instead of refusing them)."""
    watcher = watcher or Quiet()
    roi = polygons_of(settings.roi)
    results: list[Result] = []
    try:
        _predict_each(items, detector, settings, pm, watcher, debug, roi, results)
    except KeyboardInterrupt:  # the files of the inputs done stay partsup's (a rerun replaces them)
        written = [p for r in results for p in r.outputs if p.exists()]
        if written:
            record_owned(settings.out, written, "partsup predict")
        raise
    return results


def _predict_each(items: Sequence[Item], detector: DetectorLike, settings: PredictSettings,
                  pm: Any, watcher: Watcher, debug: bool, roi: Any, results: list[Result]
                  ) -> None:
    """:func:`predict_items`' loop: appends to ``results``."""
    for item in items:
        watcher.started(item)
        t0 = time.perf_counter()
        try:
            if is_slide(item.path):
                with watcher.slide(item) as on_tile:
                    results.append(predict_input(item, detector, settings, pm, roi, on_tile))
                if results[-1].interrupted:
                    break
            else:
                results.append(predict_input(item, detector, settings, pm, roi))
        except Exception as exc:  # noqa: BLE001 - report, skip, go on
            if debug:
                raise
            results.append(Result(item, seconds=time.perf_counter() - t0,
                                  error=failure_message(item.path, exc)))
            watcher.failed(results[-1])
        watcher.finished(item)


def gather_results(mine: list[tuple[int, Result]], dist: Dist) -> list[Result]:
    """Every rank's ``(input index, result)`` pairs, in input order (one process: its own)."""
    if not dist.enabled:
        return [r for _, r in mine]
    import torch.distributed as tdist
    everyone: list[Any] = [None] * dist.world
    tdist.all_gather_object(everyone, mine)  # partsup's own Result objects, between its ranks
    return [r for _, r in sorted((p for part in everyone for p in part), key=lambda p: p[0])]


class PredictRun:
    """``partsup predict`` over files, in steps: :meth:`inputs`, :meth:`device`,
    :meth:`check_outputs`, (load the detector), :meth:`predict`, then on rank 0
    :meth:`summary_lines` and :meth:`write_summary`. Under torchrun every rank runs every step
    (``dist``); rank 0 alone reports."""

    def __init__(self, settings: PredictSettings, registries: Any, dist: Dist | None = None
                 ) -> None:
        self.settings = settings
        self.registries = registries
        self.dist = dist or Dist()
        #: the SHA-256 of the model file :meth:`predict` ran (``summary.csv``'s column)
        self.model_sha256: str | None = None

    @property
    def is_main(self) -> bool:
        """This process reports and writes ``summary.csv`` (rank 0)."""
        return self.dist.is_main

    def inputs(self, paths: Sequence[str | Path], recursive: bool = False
               ) -> tuple[list[Item], list[Item]]:
        """``(items, missing)`` of :func:`collect_inputs` (the output folder left out).

        Raises:
            DataError: nothing to predict (no image in the folders, no path exists), an
            input folder that is (or is inside) the output folder
            (:func:`partsup.prediction.inputs.check_not_input`), an input whose output
            would be ``summary.csv`` (:func:`partsup.prediction.inputs.check_summary_clash`)."""
        check_not_input(self.settings.out, paths)
        items, missing = collect_inputs(paths, recursive, exclude=self.settings.out)
        check_summary_clash(items, self.settings.writers, self.settings.out)
        if not items and not missing:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in "
                            f"{', '.join(map(str, paths))}"
                            + ("" if recursive else " (folders: add --recursive?)"))
        return items, missing

    def device(self, device: str, runtime: str = "torch") -> Any:
        """The device this rank runs on (one GPU per rank under torchrun with CUDA); onnx:
        ``"cpu (onnxruntime)"``."""
        if runtime != "torch":
            return "cpu (onnxruntime)"
        return resolve_device(device, self.dist.local_rank if self.dist.enabled else None)

    def check_outputs(self, items: Sequence[Item]) -> None:
        """On rank 0, before any model is loaded: the output folder is writable and holds no
        file partsup did not write under a name the run will write (every rank raises)."""
        s = self.settings
        plan = planned_outputs(items, s.writers, s.out, s.overlay)
        on_main(self.dist, lambda: (check_output_folder(s.out), check_not_foreign(s.out, plan)))

    @staticmethod
    def missing(missing: Iterable[Item]) -> list[Result]:
        """Failed results for inputs that do not exist."""
        return [Result(m, error=f"{m.path}: no such file or folder") for m in missing]

    def predict(self, items: Sequence[Item], detector: DetectorLike,
                watcher: Watcher | None = None, debug: bool = False) -> list[Result]:
        """This rank's share of ``items`` (every ``world``-th), predicted; on every rank the
        results of all ranks in input order (:func:`gather_results`)."""
        mine = list(range(len(items)))[self.dist.rank::self.dist.world]
        self.model_sha256 = provenance_of(detector).get("model_sha256")
        done = predict_items([items[i] for i in mine], detector, self.settings,
                             self.registries.pm, watcher, debug)
        return gather_results(list(zip(mine, done)), self.dist)

    def summary_lines(self, results: Sequence[Result]) -> list[str]:
        """The set's lines (:func:`partsup.prediction.summary.summary_lines`)."""
        return summary_lines(results, self.settings.options, self.registries.pm)

    def write_summary(self, results: Sequence[Result]) -> bool:
        """``summary.csv`` (and the folder's record of what partsup wrote) when any input was
        predicted; False (the folder as it was) when none was."""
        if not any(r.count is not None for r in results):
            return False
        out = self.settings.out
        written = [p for r in results for p in r.outputs if p.exists()]
        record_owned(out, [*written, out / "summary.csv"], "partsup predict")
        write_summary_csv(out / "summary.csv", results, self.model_sha256)
        return True
