"""Tolerances for float32 results that sum many products (matrix products, convolutions).

Two float32 computations of the same sum of ``n`` products ``a_i * b_i`` (a Linear layer and the
equivalent convolution, one CPU's kernels and another's) add them in different orders, so they
differ by rounding errors that grow with the sum's length and with the size of the products,
not with the size of the result: a fixed ``atol`` (or an ``rtol`` on the result, which can be
near 0 while its terms are large) passes on one CPU and fails on the next. The bound used here is
the probabilistic one of Higham & Mary (2019): ``|fl(s) - s| <= lam * sqrt(n) * u * sum|a_i b_i|``
(u = 2**-24, the unit roundoff), with ``lam * u = 4 * float32 eps``, i.e. ``lam = 8``: exceeded
with probability below ``2 * exp(-lam**2 / 2)`` ~ 2e-14 per element, and far above what kernels
reach in practice (blocked sums with fused multiply-adds do better than the model).
"""
from __future__ import annotations

import math

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2**-23 = 2 u


def sum_tolerance(abs_sum: torch.Tensor, n: int) -> torch.Tensor:
    """Tolerance per element of a float32 sum of ``n`` products whose absolute values add to
    ``abs_sum`` (any shape, same units as the result): ``4 * eps32 * sqrt(n) * abs_sum``."""
    return 4 * EPS32 * math.sqrt(n) * abs_sum


def assert_linear_close(got: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None = None) -> None:
    """Assert ``got`` (float32, shape (N, out)) equals ``x @ weight.T + bias`` within float32
    rounding of its sums. ``x``: (N, n); ``weight``: (out, n); ``bias``: (out,). The reference and
    the size of the products are computed in float64, so the check does not depend on the CPU."""
    x64, w64 = x.detach().double(), weight.detach().double()
    ref = x64 @ w64.T
    abs_sum = x64.abs() @ w64.abs().T
    if bias is not None:
        ref = ref + bias.detach().double()
        abs_sum = abs_sum + bias.detach().double().abs()
    n = x.shape[-1] + (bias is not None)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = (got.detach().double() - ref).abs()
    tol = sum_tolerance(abs_sum, n)
    worst = int(torch.argmax(err / tol))
    assert bool((err <= tol).all()), (
        f"float32 sums of {n} products differ from float64 by {err.flatten()[worst]:.3g} "
        f"(tolerance {tol.flatten()[worst]:.3g}, value {ref.flatten()[worst]:.4g})")
