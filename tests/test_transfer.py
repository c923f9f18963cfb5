"""Weight-transfer functions Gamma: shapes, initialisation, options, registry."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from partsup.errors import RecipeError
from partsup.model.transfer import TRANSFERS, make_affine, make_mlp


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_every_registered_transfer_maps_class_rows(registries) -> None:
    assert {"affine", "mlp"} <= set(registries.weight_transfers.names())
    for name in registries.weight_transfers.names():
        gamma = registries.weight_transfers.build(name, supplied={"d_in": 12, "d_out": 7})
        w = torch.randn(2, 12, requires_grad=True)
        out = gamma(w)
        assert out.shape == (2, 7) and out.dtype == torch.float32
        out.sum().backward()
        assert w.grad is not None
        # shared across classes: each row is mapped independently of the other
        w2 = w.detach().clone()
        w2[1] = torch.randn(12)
        assert torch.allclose(gamma(w2)[0], gamma(w.detach())[0])


def test_affine_is_one_linear_layer() -> None:
    gamma = make_affine(10, 6)
    layers = linears(gamma)
    assert len(layers) == 1 and layers[0].weight.shape == (6, 10)
    assert not any(isinstance(m, (nn.ReLU, nn.LeakyReLU)) for m in gamma.modules())


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_mlp_structure(layers: int, activation: str) -> None:
    gamma = make_mlp(10, 6, layers=layers, activation=activation, hidden=5)
    lin = linears(gamma)
    assert [tuple(m.weight.shape) for m in lin] == ([(5, 10)] + [(5, 5)] * (layers - 2) + [(6, 5)])
    acts = [m for m in gamma.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert len(acts) == layers - 1
    kind = nn.ReLU if activation == "relu" else nn.LeakyReLU
    assert all(type(a) is kind for a in acts)
    assert not isinstance(list(gamma.children())[-1], (nn.ReLU, nn.LeakyReLU))  # linear last


def test_mlp_defaults_hidden_is_d_out_and_slope_point_one() -> None:
    gamma = make_mlp(8, 6)
    lin = linears(gamma)
    assert lin[0].weight.shape == (6, 8)
    leaky = [m for m in gamma.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(leaky) == 1 and leaky[0].negative_slope == pytest.approx(0.1)
    x = torch.tensor([[-1.0] * 8])
    # negative pre-activations are scaled by 0.1, not zeroed
    pre = lin[0](x)
    assert torch.allclose(leaky[0](pre), torch.where(pre > 0, pre, 0.1 * pre))


def test_he_normal_fan_out_and_zero_bias() -> None:
    torch.manual_seed(0)
    gamma = make_mlp(256, 400, layers=3, hidden=300)
    for layer in linears(gamma):
        assert torch.count_nonzero(layer.bias) == 0
        fan_out = layer.weight.shape[0]
        std = layer.weight.std().item()
        assert std == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
        assert abs(layer.weight.mean().item()) < 0.01


def test_bad_options_are_recipe_errors(registries) -> None:
    with pytest.raises(RecipeError, match="layers"):
        make_mlp(4, 4, layers=4)  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="activation"):
        make_mlp(4, 4, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="layers"):
        registries.weight_transfers.build("mlp", where="model.transfer",
                                          supplied={"d_in": 4, "d_out": 4}, layers=5)
    with pytest.raises(RecipeError, match="d_in"):
        registries.weight_transfers.build("affine", where="model.transfer",
                                          supplied={"d_in": 4, "d_out": 4}, d_in=3)


def test_transfers_dict_is_what_builtin_registers(registries) -> None:
    for name, factory in TRANSFERS.items():
        assert registries.weight_transfers.get(name) is factory
