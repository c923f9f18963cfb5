"""The two-branch partial-supervision model and the generic backbone contract.

A *branch* (:class:`Branch`) is a segmentation network split in three parts:
``features(x) -> (B, C, h, w)``, a final 1x1 ``semantic`` layer ``nn.Conv2d(C, 2, 1)`` giving
low-resolution logits ``(B, 2, h, w)``, and ``head(logits, (H, W)) -> (B, 2, H, W)`` (upsampling,
cropping). Backbone plugins register factories ``factory(**kw) -> Branch``.

:class:`PartialModel` holds a weak branch (trained on weak labels) and, depending on ``mode``,
a strong branch whose semantic weights are predicted by a weight-transfer module Gamma:
``W_strong = Gamma(W_weak)`` per class, no bias (``transfer``); learned directly
(``independent``); or absent (``weak_only``). ``shared_backbone`` uses one trunk for both heads.

Inputs of :meth:`PartialModel.forward` are already normalised the way the backbone's weights
expect (see :data:`NORMALIZATIONS`); :meth:`PartialModel.preprocess` and
:meth:`PartialModel.normalize` do that from RGB 0..255 images.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partsup.errors import CheckpointError, PluginError, RecipeError
from partsup.manager import Registries
from partsup.recipe import SCHEMA
from partsup.registry import component_kwargs

#: Named input normalisations. ``mean``/``std`` are in the channel order the network sees (after
#: the optional RGB->BGR flip) and in the units of the scaled input (``scale`` = value range the
#: network expects: 255 keeps 0..255, 1 divides by 255).
NORMALIZATIONS: dict[str, dict[str, Any]] = {
    "caffe": {"mean": [104.00699, 116.66877, 122.67892], "std": [1.0, 1.0, 1.0],
              "scale": 255, "bgr": True},
    "imagenet": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                 "scale": 1, "bgr": False},
    "unit": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1, "bgr": False},
}

MODES = ("transfer", "independent", "weak_only")
N_CLASSES = 2


def named_normalization(name: str, where: str = "normalization") -> dict[str, Any]:
    """A copy of :data:`NORMALIZATIONS` ``[name]``; an unknown name is a RecipeError."""
    if name not in NORMALIZATIONS:
        raise RecipeError(f"{where}: unknown normalization {name!r}; "
                          f"known: {', '.join(NORMALIZATIONS)}")
    return copy.deepcopy(NORMALIZATIONS[name])


def normalize(x: torch.Tensor, normalization: Mapping[str, Any]) -> torch.Tensor:
    """RGB 0..255 float ``(B, 3, H, W)`` -> the input the weights expect (same shape, float32).

    Flips RGB to BGR when ``bgr``, scales to ``0..scale``, subtracts ``mean``, divides by ``std``.
    """
    x = x.float()
    if normalization.get("bgr", False):
        x = x.flip(1)
    x = x * (float(normalization.get("scale", 255)) / 255.0)
    mean = torch.tensor(normalization["mean"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization["std"], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def spatial_size(x: torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of a ``(B, C, H, W)`` tensor (traced while exporting: H, W stay dynamic)."""
    h, w = x.shape[-2:]
    return (h, w) if torch.jit.is_tracing() else (int(h), int(w))


# -- Branch contract -------------------------------------------------------------------------------
class Branch(nn.Module):
    """Base class and contract of a backbone ("branch").

    Subclasses implement :meth:`features` and :meth:`head`, provide ``semantic`` (an
    ``nn.Conv2d(C, 2, 1)``, attribute or property), set ``feature_channels = C`` and
    ``normalization`` (like :data:`NORMALIZATIONS` values: how the weights expect input)."""

    feature_channels: int
    normalization: dict[str, Any]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input ``(B, 3, H, W)`` float32 -> features ``(B, C, h, w)``."""
        raise NotImplementedError

    def head(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Low-resolution logits ``(B, 2, h, w)`` -> logits ``(B, 2, H, W)`` with ``size=(H, W)``."""
        raise NotImplementedError

    def classify(self, feats: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the semantic layer, or ``weight`` ``(2, C, 1, 1)`` without bias, to features."""
        if weight is None:
            return self.semantic(feats)
        return F.conv2d(feats, weight.to(feats.dtype))

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> logits ``(B, 2, H, W)``.

        ``weight`` ``(2, C, 1, 1)``, when given, replaces the semantic layer (no bias).
        """
        return self.head(self.classify(self.features(x), weight), spatial_size(x))


def check_branch(branch: Any, name: str) -> None:
    """Raise PluginError unless ``branch`` honours the backbone contract."""
    def bad(why: str) -> PluginError:
        return PluginError(f"backbone {name!r} does not honour the backbone contract: {why}")
    if not isinstance(branch, nn.Module):
        raise bad(f"its factory returned {type(branch).__name__}, not an nn.Module")
    for attr in ("features", "head", "semantic", "normalization", "feature_channels"):
        if not hasattr(branch, attr):
            raise bad(f"missing attribute {attr!r}")
    sem = branch.semantic
    if not (isinstance(sem, nn.Conv2d) and sem.kernel_size == (1, 1)
            and sem.out_channels == N_CLASSES and sem.in_channels == branch.feature_channels):
        raise bad(f"semantic must be nn.Conv2d({branch.feature_channels}, 2, 1), got {sem!r}")
    norm = branch.normalization
    if not isinstance(norm, dict) or not {"mean", "std", "scale", "bgr"} <= set(norm):
        raise bad("normalization must be a dict with mean, std, scale, bgr")
    if not _accepts(branch.forward, "weight"):
        raise bad("forward(x, weight=None) must accept weight, the (2, C, 1, 1) weights that "
                  "replace semantic (no bias) when the strong branch is transferred")


def _accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    import inspect
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: trust it
        return True
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


# -- Weight files (shared by backbone plugins) -----------------------------------------------------
def read_weights(path: str | Path, what: str = "weights") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line CheckpointErrors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CheckpointError(f"{what} file {p} not found")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled code objects, ...
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{p}: cannot read {what} ({type(exc).__name__}: {first})") from None


def state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded file: a plain state dict or a partsup checkpoint."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: expected a state dict of tensors")
    return dict(obj)


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``module``; every key must exist on both sides with equal shape.

    Raises CheckpointError naming the key and both shapes (file and model).
    """
    own = module.state_dict()
    for key, value in state.items():
        if key not in own:
            raise CheckpointError(f"{source}: unexpected tensor {key!r} {tuple(value.shape)} "
                                  f"(the model has no such tensor)")
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: {key!r} has shape {tuple(value.shape)} in the file "
                                  f"but {tuple(own[key].shape)} in the model")
    for key, value in own.items():
        if key not in state:
            raise CheckpointError(f"{source}: missing tensor {key!r} "
                                  f"(the model expects shape {tuple(value.shape)})")
    module.load_state_dict(dict(state), strict=True)


# -- The two-branch model --------------------------------------------------------------------------
class ModelOutput(NamedTuple):
    """Logits of both branches, ``(B, 2, H, W)`` float; ``strong`` is None in weak_only mode."""

    weak: torch.Tensor
    strong: torch.Tensor | None


class PartialModel(nn.Module):
    """Weak branch + strong branch with ``W_strong = Gamma(W_weak)`` (the paper's model).

    Submodules: ``weak`` (a Branch; the shared trunk when ``shared_backbone``), ``strong``
    (a Branch, or None when shared or weak_only), ``strong_semantic`` (shared + independent
    only) and ``transfer`` (Gamma, transfer mode only).

    In transfer mode with separate trunks the strong branch's own ``semantic`` layer is not
    used: it is frozen and left out of :meth:`strong_parameters`.
    """

    def __init__(self, weak: Branch, strong: Branch | None = None,
                 transfer: nn.Module | None = None, *, mode: str = "transfer",
                 stop_gradient: bool = True, shared_backbone: bool = False) -> None:
        super().__init__()
        if mode not in MODES:
            raise RecipeError(f"model.mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if mode == "transfer" and transfer is None:
            raise RecipeError("model.transfer: transfer mode needs a weight-transfer module")
        if mode != "weak_only" and not shared_backbone and strong is None:
            raise RecipeError(f"model.mode: {mode} without shared_backbone needs a strong branch")
        self.mode = mode
        self.stop_gradient = bool(stop_gradient)
        self.shared_backbone = bool(shared_backbone)
        self.weak = weak
        self.strong = None if (shared_backbone or mode == "weak_only") else strong
        self.transfer = transfer if mode == "transfer" else None
        self.strong_semantic = (copy.deepcopy(weak.semantic)
                                if shared_backbone and mode == "independent" else None)
        if self.strong is not None and mode == "transfer":
            self.strong.semantic.requires_grad_(False)
        self._weak_frozen = False

    # -- normalisation -----------------------------------------------------------------------
    @property
    def normalization(self) -> dict[str, Any]:
        """How the backbone's weights expect input (see :data:`NORMALIZATIONS`)."""
        return copy.deepcopy(self.weak.normalization)

    @normalization.setter
    def normalization(self, value: Mapping[str, Any]) -> None:
        for branch in (self.weak, self.strong):
            if branch is not None:
                branch.normalization = copy.deepcopy(dict(value))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """RGB 0..255 float ``(B, 3, H, W)`` -> normalised float32 input for :meth:`forward`."""
        return normalize(x, self.weak.normalization)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3)`` uint8 RGB image -> ``(1, 3, H, W)`` float32 normalised, on the model's device."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # e.g. from PIL; torch warns about read-only arrays
            image = image.copy()
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        return self.normalize(x.to(self._device()))

    def _device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        return torch.device("cpu")

    # -- weights -------------------------------------------------------------------------------
    def weak_weight(self) -> torch.Tensor:
        """The weak semantic layer's weight ``(2, C, 1, 1)``."""
        return self.weak.semantic.weight

    def strong_weight(self) -> torch.Tensor:
        """``Gamma(W_weak)`` reshaped to ``(2, C, 1, 1)`` (transfer mode only).

        With ``stop_gradient`` the source weights are detached: the strong loss trains Gamma but
        never reaches ``W_weak``.
        """
        if self.transfer is None:
            raise RuntimeError(f"strong_weight() needs mode 'transfer', not {self.mode!r}")
        w = self.weak_weight()
        src = w.detach() if self.stop_gradient else w
        out = self.transfer(src.reshape(src.shape[0], -1))
        channels = self.weak.feature_channels
        if tuple(out.shape) != (N_CLASSES, channels):
            raise PluginError(f"weight transfer returned shape {tuple(out.shape)}, "
                              f"expected ({N_CLASSES}, {channels})")
        return out.reshape(N_CLASSES, channels, 1, 1)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Normalised ``(B, 3, H, W)`` float32 -> ModelOutput of logits ``(B, 2, H, W)``."""
        if self.mode == "weak_only":
            return ModelOutput(self.weak(x), None)
        if self.shared_backbone:
            return self._forward_shared(x)
        weight = self.strong_weight() if self.mode == "transfer" else None
        assert self.strong is not None
        return ModelOutput(self.weak(x), self.strong(x, weight=weight))

    def _forward_shared(self, x: torch.Tensor) -> ModelOutput:
        size = spatial_size(x)
        feats = self.weak.features(x)
        weak = self.weak.head(self.weak.semantic(feats), size)
        if self.mode == "transfer":  # the transferred 1x1 weights, no bias (Branch.classify)
            low = F.conv2d(feats, self.strong_weight().to(feats.dtype))
        else:
            assert self.strong_semantic is not None
            low = self.strong_semantic(feats)
        return ModelOutput(weak, self.weak.head(low, size))

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised input -> object probabilities ``(B, H, W)`` float32 in [0, 1] per branch.

        Softmax over the two classes, channel 1. Gradients flow unless the caller disables them.
        """
        out = self(x)
        p_weak = torch.softmax(out.weak.float(), dim=1)[:, 1]
        p_strong = None if out.strong is None else torch.softmax(out.strong.float(), dim=1)[:, 1]
        return p_weak, p_strong

    # -- stage-wise training helpers ------------------------------------------------------------
    def weak_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the weak loss: the weak branch (the trunk when shared)."""
        return list(self.weak.parameters())

    def strong_parameters(self) -> list[nn.Parameter]:
        """Parameters only the strong loss trains: strong trunk, Gamma or the strong head."""
        params: list[nn.Parameter] = []
        if self.strong is not None:
            unused = ({id(p) for p in self.strong.semantic.parameters()}
                      if self.mode == "transfer" else set())
            params += [p for p in self.strong.parameters() if id(p) not in unused]
        for extra in (self.transfer, self.strong_semantic):
            if extra is not None:
                params += list(extra.parameters())
        return params

    def freeze_weak(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) the weak branch: no gradients, and kept in eval mode.

        With ``shared_backbone`` this freezes the shared trunk too.
        """
        self._weak_frozen = frozen
        for p in self.weak_parameters():
            p.requires_grad_(not frozen)
        self.weak.train(self.training and not frozen)

    @property
    def weak_frozen(self) -> bool:
        return self._weak_frozen

    def train(self, mode: bool = True) -> "PartialModel":
        super().train(mode)
        if self._weak_frozen:
            self.weak.eval()
        return self

    def named_branches(self) -> Iterator[tuple[str, Branch]]:
        for name in ("weak", "strong"):
            branch = getattr(self, name)
            if branch is not None:
                yield name, branch


# -- Construction from a recipe --------------------------------------------------------------------
def build_model(model_section: Mapping[str, Any], registries: Registries, *,
                skip_weights: bool = False) -> PartialModel:
    """Build a :class:`PartialModel` from a resolved recipe ``model:`` section.

    Args:
        model_section: ``{backbone, mode, stop_gradient, shared_backbone, transfer}``.
        skip_weights: set every backbone option whose name ends in ``weights`` (e.g.
            ``weights``, ``encoder_weights``) to None, i.e. build without reading weight files;
            used when a checkpoint's state dict is loaded right after.
    """
    # a hand-built section may leave keys out: they take the recipe schema's defaults
    defaults = {key: spec.default for key, spec in SCHEMA["model"].items()}
    section = {**defaults, **model_section}
    name, kwargs = component_kwargs(section["backbone"], "model.backbone")
    if skip_weights:
        kwargs = {k: (None if k.endswith("weights") else v) for k, v in kwargs.items()}
    mode = section["mode"]
    shared = bool(section["shared_backbone"])

    def make_branch() -> Branch:
        branch = registries.backbones.build(name, where="model.backbone", **kwargs)
        check_branch(branch, name)
        return branch

    weak = make_branch()
    strong = make_branch() if mode in ("transfer", "independent") and not shared else None
    transfer = None
    if mode == "transfer":
        t_spec = section["transfer"] or defaults["transfer"]
        channels = weak.feature_channels
        transfer = registries.weight_transfers.build_component(
            t_spec, "model.transfer", supplied={"d_in": channels, "d_out": channels})
    return PartialModel(weak, strong, transfer, mode=mode,
                        stop_gradient=bool(section["stop_gradient"]),
                        shared_backbone=shared)
