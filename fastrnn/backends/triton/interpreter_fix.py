"""Two places where Triton's interpreter (TRITON_INTERPRET=1) does not behave like the GPU,
corrected so that the interpreter tests check what the GPU would compute.

``__index__`` (Triton 3.6 with NumPy >= 2.4): the interpreter holds every scalar (kernel
arguments such as T and H, tl.program_id, values computed from them) as a 1-element, 1-d numpy
array, and Triton 3.6 gives tl.tensor an ``__index__`` of ``int(self.handle.data)``. NumPy 2.4
made ``int()`` of an array with ndim > 0 a TypeError, so every ``range(T)`` /
``range(0, H, BLOCK_K)`` in a kernel failed ("only 0-dimensional arrays can be converted to
Python scalars"). Later Triton versions squeeze the array first; so does the fix.

float32 -> bfloat16 (Triton 3.6 and 3.9): ``x.to(tl.bfloat16)`` rounds to nearest even on the
GPU (cvt.rn.bf16.f32), but the interpreter truncates the mantissa, an error of up to one unit
in the last place instead of half of one. Every bfloat16 value a kernel stores (y, the
workspace, the ping-pong h) was off by that, twice torch's own rounding error.

Each fix is installed only where a probe of the interpreter shows the deviation. The kernels
themselves are untouched: the GPU compiler never runs this code.
"""
from __future__ import annotations

import numpy as np


class _Scalar:
    """Stand-in for a tl.tensor as the interpreter holds a scalar: handle.data of shape (1,)."""

    class handle:  # noqa: N801 - mirrors tl.tensor.handle
        data = np.array([3], dtype=np.int32)


def _index(self):
    return int(self.handle.data.reshape(()))


def _index_is_broken(interpreter) -> bool:
    """Whether this interpreter's tl.tensor.__index__ rejects a 1-element scalar (probed on
    the real patch function, then undone)."""
    import triton.language as tl

    scope = interpreter._LangPatchScope()
    try:
        interpreter._patch_lang_tensor(tl.tensor, scope)
        try:
            return tl.tensor.__index__(_Scalar()) != 3
        except TypeError:
            return True
    finally:
        scope.restore()


def _install_index(interpreter) -> bool:
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or not hasattr(interpreter, "_LangPatchScope"):
        return False  # the interpreter's layout changed: nothing of ours to fix
    if getattr(original, "fastrnn_fix", False):
        return True
    if not _index_is_broken(interpreter):
        return False

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", _index)  # restored in order by scope.restore()

    patch_lang_tensor.fastrnn_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 array -> the bits (uint16) of its bfloat16 rounding to nearest even; NaN stays
    a quiet NaN, overflow rounds to inf as on the GPU."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    quiet_nan = (bits >> np.uint32(16)) | np.uint32(0x0040)
    return np.where(np.isnan(values), quiet_nan, rounded).astype(np.uint16)


_PROBE = 1.0 + 3 * 2.0 ** -9  # 0.75 of bfloat16's unit at 1: nearest is 1 + 2^-7, truncated 1


def _install_bf16_rounding(interpreter) -> bool:
    import triton.language as tl

    builder = getattr(interpreter, "InterpreterBuilder", None)
    handle = getattr(interpreter, "TensorHandle", None)
    original = getattr(builder, "cast_impl", None)
    if original is None or handle is None:
        return False
    if getattr(original, "fastrnn_fix", False):
        return True
    probe = original(None, handle(np.array([_PROBE], dtype=np.float32), tl.float32),
                     tl.bfloat16)
    if int(probe.data.view(np.uint16)[0]) == int(_bf16_bits(np.array([_PROBE]))[0]):
        return False

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            return handle(_bf16_bits(src.data), dst_type.scalar)
        return original(self, src, dst_type)

    cast_impl.fastrnn_fix = True
    builder.cast_impl = cast_impl
    return True


def install() -> tuple[bool, bool]:
    """Install both fixes where the interpreter needs them. Idempotent; returns whether each
    (``__index__``, bfloat16 rounding) is in place."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False, False
    return _install_index(interpreter), _install_bf16_rounding(interpreter)
