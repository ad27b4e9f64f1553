"""Which execution context a module call runs in, and what that context needs run: the one
place that answers it before ``auto``'s measured tables are consulted.

- TorchScript tracing and ONNX export (both exporters): ``native``, torch.nn's own forward, so
  the trace records ``aten::lstm``/``gru``/``rnn_*`` (what ``torch.jit.save`` keeps and what the
  exporters turn into the standard ONNX ``LSTM``/``GRU``/``RNN`` nodes, runnable without
  fastrnn). The dynamo exporter with symbolic sizes, which torch.nn's forward cannot serve:
  fastrnn's op, translated into the same nodes (``fastrnn.onnx_export``). Scripting does not reach a forward at all: see ``fastrnn.scripting``.
- torch.func transforms (vmap, grad, jacrev, jvp): the ``reference`` kernel, i.e. the
  differentiable reference recurrence in plain torch ops (``fastrnn.eager.route``), which
  composes with every transform; torch.nn's GRU and RNN have no batching rule under
  ``vmap(grad(...))``.
- torch.compile, and torch.export with symbolic sizes: a kernel chosen without the sizes
  (the custom op with its fake implementation traces with symbolic T and B, so one graph
  serves every length); the measured tables are keyed by concrete sizes and torch.nn's own
  forward does not trace with a dynamic batch or time axis. Non-strict torch.export with
  static sizes keeps auto's choice.

Only ``backend='auto'`` (and FASTRNN_BACKEND unset) is steered: an explicit choice is run as
asked, checked as usual.
"""
from __future__ import annotations

import sys
from typing import Optional

import torch

from fastrnn.backends.problem import Problem


def _in_onnx_export() -> bool:
    """torch.onnx.is_in_onnx_export(), without importing torch.onnx when nobody has."""
    onnx = sys.modules.get("torch.onnx")
    return onnx is not None and onnx.is_in_onnx_export()


def is_symbolic(*sizes) -> bool:
    """Whether any of ``sizes`` is a symbolic integer (export or dynamic-shape compile)."""
    return any(isinstance(s, torch.SymInt) for s in sizes)


def context_backend(request: str, cell: str, device: torch.device, dtype: torch.dtype,
                    seq_len, batch, hidden: int, proj: int, packed: bool) -> Optional[str]:
    """The backend the current execution context needs for a module call, or None (then
    ``auto``'s tables decide). ``request`` is the effective request
    (``fastrnn.dispatch.requested_backend``); ``seq_len`` and ``batch`` may be SymInts."""
    if request != "auto":
        return None
    if torch.jit.is_tracing():
        return "native"
    if torch._C._are_functorch_transforms_active():
        return "reference"
    if torch.compiler.is_compiling():
        if _in_onnx_export():
            if not is_symbolic(seq_len, batch):
                return "native"  # torchlib translates aten::lstm/gru into ONNX nodes
            # torch.nn's forward cannot export symbolic sizes: fastrnn's op, which the
            # exporter translates into the same ONNX nodes (fastrnn.onnx_export)
            from fastrnn import onnx_export
            onnx_export.register()
            return _size_free_kernel(cell, device, dtype, hidden, proj, packed)
        # Dynamo shows a symbolic size to traced code as a plain int, so under dynamo every
        # size may be symbolic (dynamic=True, or automatic dynamic shapes after a recompile):
        # one choice for every size. Non-strict torch.export shows SymInts.
        if torch.compiler.is_dynamo_compiling() or is_symbolic(seq_len, batch):
            return _size_free_kernel(cell, device, dtype, hidden, proj, packed)
    return None


def _size_free_kernel(cell, device, dtype, hidden, proj, packed) -> str:
    from fastrnn import auto
    from fastrnn.dispatch import choose_backend, unsupported_reasons
    # kernels' reasons never depend on T or B: any size stands for the symbolic ones
    problem = Problem(cell, device, dtype, 1, 1, hidden, proj, packed)
    if device.type == "cuda":
        # on a GPU only kernels with evidence for this architecture (auto's table), else
        # torch.nn's own forward, as auto does everywhere on a GPU without evidence
        for name in auto.measured_kernels(auto.machine_class(device)):
            if not unsupported_reasons(name, problem):
                return name
        return "native"
    return choose_backend("auto", problem)
