"""Activation functions for the Numba loops, vectorizable by LLVM.

Without SVML, LLVM cannot vectorize calls to libm's exp/tanh, and those calls dominated a
naive loop. For float32 data we therefore compute exp in float64 with a polynomial that LLVM
vectorizes: e^x = (e^(x/64))^64, with e^u for |u| <= 0.47 from its degree-10 Taylor
polynomial (truncation < 1e-11 relative, 64x after the six squarings: ~1e-13 in float64, far
below float32's rounding). Inputs are clamped to |x| <= 30, where sigmoid is 1 - 1e-13.
float64 data keeps libm's exact exp/tanh: fp64 gradcheck compares against finite differences.
"""
import math

from numba import njit, types
from numba.extending import overload


def _exp_poly(x):
    """e^x for |x| <= 30 in float64 arithmetic (see module docstring)."""
    u = x * (1.0 / 64.0)
    p = 1.0 + u * (1.0 + u * (1.0 / 2 + u * (1.0 / 6 + u * (1.0 / 24 + u * (
        1.0 / 120 + u * (1.0 / 720 + u * (1.0 / 5040 + u * (1.0 / 40320 + u * (
            1.0 / 362880 + u * (1.0 / 3628800))))))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


exp_poly = njit(inline="always", cache=True)(_exp_poly)


def sigmoid(x):  # placeholder resolved by the overload below, per dtype
    raise NotImplementedError


def tanh(x):  # placeholder resolved by the overload below, per dtype
    raise NotImplementedError


@overload(sigmoid, inline="always")
def _sigmoid_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def impl(x):
            v = min(max(float(x), -30.0), 30.0)
            return 1.0 / (1.0 + exp_poly(-v))
        return impl

    def exact(x):
        return 1.0 / (1.0 + math.exp(-x))
    return exact


@overload(tanh, inline="always")
def _tanh_impl(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def impl(x):
            v = min(max(float(x), -15.0), 15.0)
            return 2.0 / (1.0 + exp_poly(-2.0 * v)) - 1.0
        return impl

    def exact(x):
        return math.tanh(x)
    return exact
