"""Weight-transfer functions Gamma (Hu et al., "Learning to Segment Every Thing"; the paper's model).

Gamma predicts the strong branch's final 1x1 layer from the weak branch's: it maps **each class's
weight vector** ``(d_in,)`` to a weight vector ``(d_out,)``, one network shared across classes.
Input ``(n_class, d_in)`` float32 -> output ``(n_class, d_out)`` float32. Only the weights go in
(no biases), and the predicted layer has no bias.

Initialisation (Mask^X R-CNN): weights He-normal with ``fan_out`` (std = sqrt(2 / fan_out)),
biases zero. No activation after the last layer.

Registered by :mod:`partsup.builtin` from :data:`TRANSFERS`; plugins add more through
``partsup_register_weight_transfers`` with the same ``factory(d_in, d_out, **kw)`` signature.
"""
from __future__ import annotations

from typing import Literal

from torch import nn

from partsup.errors import RecipeError

Activation = Literal["relu", "leaky_relu"]


class WeightTransfer(nn.Sequential):
    """A Gamma module: ``(n_class, d_in) -> (n_class, d_out)`` applied row-wise (per class)."""

    def __init__(self, d_in: int, d_out: int, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.d_in = d_in
        self.d_out = d_out

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, d_out={self.d_out}"


def _linear(d_in: int, d_out: int) -> nn.Linear:
    """A Linear layer with He-normal (fan_out) weight and zero bias."""
    layer = nn.Linear(d_in, d_out)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(layer.bias)
    return layer


def _positive(value: int, key: str) -> int:
    if value < 1:
        raise RecipeError(f"model.transfer.{key}: expected a positive integer, got {value!r}")
    return value


def make_affine(d_in: int, d_out: int) -> WeightTransfer:
    """1-layer (affine) transfer: one Linear(d_in -> d_out) shared across classes."""
    return WeightTransfer(d_in, d_out, _linear(_positive(d_in, "d_in"), _positive(d_out, "d_out")))


def make_mlp(d_in: int, d_out: int, layers: Literal[2, 3] = 2,
             activation: Activation = "leaky_relu", hidden: int | None = None,
             negative_slope: float = 0.1) -> WeightTransfer:
    """MLP transfer: ``layers`` (2 or 3) Linear layers with ReLU or LeakyReLU between them.

    Args:
        d_in: length of a source class weight vector (the weak branch's feature channels C).
        d_out: length of a predicted class weight vector (the strong branch's C).
        layers: number of Linear layers, 2 or 3 (paper ablation, Tables 1-2).
        activation: ``relu`` or ``leaky_relu`` between layers; none after the last.
        hidden: width of the hidden layers; None means ``d_out`` (as in Mask^X R-CNN; the
            paper's value is not published).
        negative_slope: LeakyReLU slope (0.1 in Mask^X R-CNN); ignored for ``relu``.
    """
    if layers not in (2, 3):
        raise RecipeError(f"model.transfer.layers: expected 2 or 3, got {layers!r}")
    if activation not in ("relu", "leaky_relu"):
        raise RecipeError(f"model.transfer.activation: expected relu or leaky_relu, "
                          f"got {activation!r}")
    width = _positive(d_out if hidden is None else hidden, "hidden")
    sizes = [_positive(d_in, "d_in")] + [width] * (layers - 1) + [_positive(d_out, "d_out")]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(_linear(sizes[i], sizes[i + 1]))
        if i < layers - 1:
            modules.append(nn.ReLU() if activation == "relu"
                           else nn.LeakyReLU(negative_slope))
    return WeightTransfer(d_in, d_out, *modules)


#: name -> factory(d_in, d_out, **kw); registered by partsup.builtin
TRANSFERS = {"affine": make_affine, "mlp": make_mlp}
