"""The ``native`` backend: torch.nn's own implementation of the whole module call (the torch.nn
base class's forward: oneDNN/ATen on the CPU, cuDNN on CUDA), with the module's own parameters.

It runs at the module level, not per layer-direction: a fastrnn module for which dispatch
chooses ``native`` calls its torch.nn base class's forward and returns that result unchanged.
So it has no recurrence ``forward``/``backward`` of the backend contract; calling those raises.
"""
from __future__ import annotations

import torch

from fastrnn.backends.problem import Problem

MODULE_LEVEL = True  # dispatch: this backend replaces the whole module call


def unsupported_reasons(problem: Problem) -> list[str]:
    """Why torch.nn cannot serve ``problem`` (empty: it can)."""
    reasons = []
    if not problem.dtype.is_floating_point:
        reasons.append(f"native: dtype must be floating point, got {problem.dtype}")
    if (problem.device.type == "cuda" and problem.mode == "training"
            and not problem.module_training and torch.backends.cudnn.enabled):
        reasons.append("native: cuDNN refuses backward in eval mode ('cudnn RNN backward can "
                       "only be called in training mode'); use a fastrnn kernel backend")
    return reasons


def _module_level(*_args, **_kwargs):
    raise ValueError("the native backend runs whole torch.nn modules (e.g. "
                     "fastrnn.LSTM(..., backend='native')), not one layer-direction")


forward = backward = _module_level
