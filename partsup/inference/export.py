"""Exporting a checkpoint's model for other runtimes: ONNX, TorchScript, or its weights as
safetensors.

The exported graph is :class:`MapsModule`: input ``image`` ``(1, 3, H, W)`` float32, already
normalised (``sidecar["input"]["normalization"]``: RGB 0..255 -> flip to BGR when ``bgr``, times
``scale / 255``, minus ``mean``, over ``std``); outputs ``p_weak`` and ``p_strong`` (weak-only
models: ``p_weak`` alone), each ``(1, H, W)`` float32 object probabilities in [0, 1]. H and W stay
dynamic when tracing keeps them as inputs (checked: the export is run at two sizes and compared
with PyTorch); otherwise the sidecar records the one size the graph takes.

Beside the model, ``<FILE>.json`` (the *sidecar*, :func:`sidecar_path`) holds the normalisation,
the outputs, the size rule and the checkpoint's detection parameters (the recipe's ``detect:``
then the calibrated values): everything ``partsup predict --runtime onnx`` needs.

Which model it is travels with the ONNX file itself too: its ``metadata_props`` (the model's
metadata, :data:`METADATA_KEYS`) hold the source checkpoint's SHA-256, the partsup version and
the model's um/px; the sidecar repeats ``source_sha256`` and ``partsup_version``.

Nothing is overwritten (:func:`check_targets`): an existing output file (or sidecar) is refused,
and with ``force`` only a file ``partsup export`` wrote before is replaced; the source checkpoint
never is. Files are written under a temporary name and moved into place when complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from partsup.errors import PartsupError
from partsup.output.atomic import write_text

if TYPE_CHECKING:
    from partsup.manager import Registries

#: what ``partsup export --format`` accepts
FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
#: format tag of the sidecar JSON
SIDECAR_FORMAT = "partsup-export/1"
OPSET = 17
ONNX_HINT = "install the onnx extra: pip install 'partsup[onnx]'"
#: the ONNX ``metadata_props`` keys an export writes: the source checkpoint's file name and
#: SHA-256 (64 hex digits), the partsup version and the model's um/px ("" when unknown)
METADATA_KEYS = ("partsup_version", "source", "source_sha256", "mpp")
#: the one line a TorchScript export warns with (in place of torch's own deprecation messages
#: from the trace, save and check load, which say the same without the alternative)
TORCHSCRIPT_NOTE = ("torchscript: torch.jit is deprecated upstream (PyTorch points to "
                    "torch.export); for other runtimes use --format onnx, the portable format "
                    "(docs/python-api.md)")


class MapsModule(nn.Module):
    """``x (1, 3, H, W)`` float32 normalised -> ``(p_weak, p_strong)`` each ``(1, H, W)``
    float32 in [0, 1] (``(p_weak,)`` for a weak-only model): what is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p_weak, p_strong = self.model.probabilities(x)
        return (p_weak,) if p_strong is None else (p_weak, p_strong)


def output_names(model: nn.Module) -> list[str]:
    """``["p_weak", "p_strong"]``, or ``["p_weak"]`` for a weak-only model."""
    return ["p_weak"] if getattr(model, "mode", "") == "weak_only" else ["p_weak", "p_strong"]


def sidecar_path(model_file: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


@dataclass
class ExportReport:
    """What :func:`export_checkpoint` wrote and how close the export is to PyTorch.

    ``max_abs_diff``: the largest absolute difference of any probability between the exported
    model and PyTorch over ``sizes`` ((H, W) px inputs); None when not checked (safetensors: the
    tensors are the same). ``dynamic``: whether the graph takes any H, W.
    """

    model: Path
    sidecar: Path | None = None
    max_abs_diff: float | None = None
    sizes: list[tuple[int, int]] = field(default_factory=list)
    dynamic: bool = True


def check_input(model: Any, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A ``(1, 3, H, W)`` float32 normalised input of ``size`` (H, W) px: a seeded random RGB
    image through ``model.preprocess``."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return model.preprocess(image).cpu().float()


def run_exported(path: str | Path, fmt: str, x: torch.Tensor) -> list[np.ndarray]:
    """Run an exported model file on ``x`` (1, 3, H, W) float32; its outputs as arrays."""
    if fmt == "onnx":
        session = onnx_session(path)
        return list(session.run(None, {"image": x.numpy()}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")  # said once
        module = torch.jit.load(str(path), map_location="cpu")  # by export_model instead
    with torch.inference_mode():
        return [t.numpy() for t in module(x)]


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU ``InferenceSession`` of ``path``.

    Raises:
        PartsupError: onnxruntime is not installed (one line naming the extra).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise PartsupError(f"the onnx runtime needs onnxruntime: {ONNX_HINT}") from None
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_model(model: nn.Module, out: str | Path, fmt: str,
                 sizes: Sequence[tuple[int, int]] = ((256, 256), (192, 320)),
                 metadata: Mapping[str, str] | None = None) -> ExportReport:
    """Trace ``model`` (a PartialModel, eval mode, CPU) at ``sizes[0]`` and write it as ``fmt``
    (``onnx`` or ``torchscript``) to ``out``; then run the file at every size in ``sizes`` and
    compare with PyTorch. ``metadata``: string pairs stored in an ONNX file's
    ``metadata_props`` (ignored for torchscript).

    Returns:
        an :class:`ExportReport` (no sidecar yet): ``max_abs_diff`` over the sizes the graph
        accepts, ``dynamic`` False when it only takes ``sizes[0]``.
    """
    if fmt not in ("onnx", "torchscript"):
        raise PartsupError(f"--format: expected onnx or torchscript here, got {fmt!r}")
    if fmt == "torchscript":
        warnings.warn(TORCHSCRIPT_NOTE, FutureWarning, stacklevel=2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        report = _write_and_check(model, Path(name), fmt, sizes, out, metadata or {})
        os.replace(name, out)  # complete before it takes the name (a link there is replaced)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    report.model = out
    return report


def _write_and_check(model: nn.Module, out: Path, fmt: str, sizes: Sequence[tuple[int, int]],
                     label: Path, metadata: Mapping[str, str]) -> ExportReport:
    """:func:`export_model`'s work, into ``out`` (a temporary name; messages say ``label``)."""
    wrapper = MapsModule(model.cpu().eval()).eval()
    x0 = check_input(model, sizes[0])
    names = output_names(model)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and exporter chatter (torch.jit's deprecation:
        #                                  TORCHSCRIPT_NOTE above says it, with the alternative)
        if fmt == "onnx":
            _need_onnx()
            axes = {n: {1: "H", 2: "W"} for n in names}
            torch.onnx.export(wrapper, (x0,), str(out), input_names=["image"],
                              output_names=names, opset_version=OPSET, dynamo=False,
                              dynamic_axes={"image": {2: "H", 3: "W"}, **axes})
        else:
            torch.jit.trace(wrapper, (x0,), check_trace=False).save(str(out))
    if fmt == "onnx" and metadata:
        set_onnx_metadata(out, metadata)
    report = ExportReport(out)
    for i, size in enumerate(dict.fromkeys(tuple(s) for s in sizes)):
        x = check_input(model, size, seed=i)
        with torch.inference_mode():
            want = [t.numpy() for t in wrapper(x)]
        try:
            got = run_exported(out, fmt, x)
        except Exception:  # noqa: BLE001 - a graph with the traced size baked in
            got = None
        if got is None or any(g.shape != w.shape for g, w in zip(got, want)):
            if i == 0:
                raise PartsupError(f"{label}: the exported model does not run at the size it was "
                                   f"traced at {size}")
            report.dynamic = False
            continue
        diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        report.max_abs_diff = max(diff, report.max_abs_diff or 0.0)
        report.sizes.append(size)
    return report


def set_onnx_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    """Add ``metadata`` (str -> str) to the ``metadata_props`` of the ONNX file ``path``
    (rewritten in place; entries of the same key replaced)."""
    import onnx
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({str(k): str(v) for k, v in metadata.items()})
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path`` as a dict, read with onnxruntime."""
    meta = onnx_session(path).get_modelmeta()
    return dict(meta.custom_metadata_map)


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
    except ImportError:
        raise PartsupError(f"exporting to ONNX needs the onnx package: {ONNX_HINT}") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def written_by_export(path: Path, fmt: str) -> bool:
    """Whether ``path`` is a file ``partsup export`` wrote as ``fmt``: a safetensors file with
    partsup's metadata, or a model / sidecar whose sidecar names that model file and format."""
    if path.is_symlink() or not path.is_file():
        return False
    if fmt == "safetensors":
        from partsup.checkpoint.safetensors_file import FORMAT
        try:
            from safetensors import safe_open
            with safe_open(str(path), framework="pt") as fh:
                return (fh.metadata() or {}).get("format") == FORMAT
        except Exception:  # noqa: BLE001 - not a safetensors file at all
            return False
    model = path.with_name(path.name[:-len(".json")]) if path.name.endswith(".json") else path
    try:
        doc = json.loads(sidecar_path(model).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(doc, dict) and doc.get("format") == SIDECAR_FORMAT
            and doc.get("model") == model.name and doc.get("runtime") == fmt)


def check_targets(checkpoint: str | Path, out: str | Path, fmt: str, force: bool = False
                  ) -> None:
    """Refuse to write ``out`` (and its sidecar for onnx/torchscript) over anything: the source
    checkpoint never (not even with ``force``), another existing file only with ``force`` and
    only when ``partsup export`` wrote it (:func:`written_by_export`).

    Raises:
        PartsupError: one line naming the file and what to do instead.
    """
    from partsup.checkpoint.files import checkpoint_file
    out = Path(out)
    try:
        source = checkpoint_file(checkpoint)
    except PartsupError:
        source = Path(checkpoint)
    if out.is_dir() and not out.is_symlink():
        raise PartsupError(f"--out {out} is a folder; give the file to write, e.g. "
                           f"{out / ('model' + SUFFIXES[fmt])}")
    targets = [out] + ([] if fmt == "safetensors" else [sidecar_path(out)])
    for target in targets:
        if not (target.exists() or target.is_symlink()):
            continue
        if source.exists() and _same_file(target, source):
            raise PartsupError(f"--out {target} is the checkpoint being exported; partsup export "
                               f"never overwrites its source: choose another --out")
        if not force:
            raise PartsupError(f"{target} exists; partsup export never overwrites a file: choose "
                               f"another --out (or pass --force to replace a file partsup "
                               f"export wrote before)")
        if not written_by_export(target, fmt):
            raise PartsupError(f"{target} exists and was not written by partsup export as "
                               f"{fmt}; --force replaces only such files: choose another --out")


def export_checkpoint(checkpoint: str | Path, out: str | Path, fmt: str, registries: Registries,
                      force: bool = False) -> ExportReport:
    """Export a checkpoint (``.pt``, run folder or ``.safetensors``) as ``fmt``
    (:data:`FORMATS`) to ``out``, with the sidecar JSON for onnx/torchscript.

    The model is traced at the detection tile size (``detect.tile`` px square) and checked at
    that size and at (tile/2, tile) against PyTorch (:func:`export_model`). Existing files are
    refused before the checkpoint is read (:func:`check_targets`; ``force``: replace files
    ``partsup export`` wrote before, never the source).

    Raises:
        PartsupError: unknown format, missing onnx packages, a checkpoint with a second look
        (a crop classifier after the blob step, which no export format carries yet: refused
        rather than dropped); CheckpointError: unreadable file.
    """
    from partsup import __version__
    from partsup.checkpoint.digest import file_sha256
    from partsup.checkpoint.files import checkpoint_file, load_model
    from partsup.inference.detector import model_mpp_of, params_from_checkpoint
    from partsup.checkpoint.safetensors_file import save_safetensors
    if fmt not in FORMATS:
        raise PartsupError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    check_targets(checkpoint, out, fmt, force)
    model, ckpt = load_model(checkpoint, registries, device="cpu")
    if ckpt.get("second_look") is not None:  # no format here holds the crop classifier yet
        raise PartsupError(f"{checkpoint}: export does not carry the second look yet; predict "
                           f"with the checkpoint")
    params = params_from_checkpoint(ckpt)
    if fmt == "safetensors":
        ckpt = {**ckpt, "model": model.state_dict(), "normalization": model.normalization}
        return ExportReport(save_safetensors(out, ckpt), max_abs_diff=0.0)
    tile = params.tile
    source = checkpoint_file(checkpoint)
    sha = file_sha256(source)
    mpp = model_mpp_of(ckpt)
    metadata = {"partsup_version": __version__, "source": source.name, "source_sha256": sha,
                "mpp": "" if mpp is None else repr(mpp)}
    report = export_model(model, out, fmt, sizes=((tile, tile), (max(32, tile // 64 * 32), tile)),
                          metadata=metadata)
    recipe = ckpt.get("recipe") or {}
    sidecar = {
        "format": SIDECAR_FORMAT, "model": report.model.name, "runtime": fmt,
        "input": {"name": "image", "shape": [1, 3, "H", "W"], "dtype": "float32",
                  "normalization": model.normalization},
        "outputs": output_names(model),
        "dynamic_size": report.dynamic, "size": None if report.dynamic else [tile, tile],
        "detect": dataclasses.asdict(params),
        "recipe": recipe.get("name"), "plugins": list(recipe.get("plugins") or []),
        "mpp": mpp, "normalize": (recipe.get("data") or {}).get("normalize"),
        "source": str(checkpoint), "source_sha256": sha, "partsup_version": __version__,
        "max_abs_diff": report.max_abs_diff,
        "checked_sizes": [list(s) for s in report.sizes],
    }
    report.sidecar = sidecar_path(report.model)
    write_text(report.sidecar, json.dumps(sidecar, indent=2) + "\n")
    return report
