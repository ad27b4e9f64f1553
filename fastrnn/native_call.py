"""The ``native`` backend's module call: torch.nn's own forward, and for a repeated kind of
dense CPU call in plain eager mode the very ATen op that forward calls, without its Python.

Why a shortcut: torch.nn's ``RNN``/``LSTM``/``GRU.forward`` spends ~13 us of Python around the
op on every call (rebuilding ``_flat_weights`` through ``getattr``, the shape checks, the
zero states): a T=1 GRU at B=1, H=256 took 46 us through ``GRU.forward`` and 31 us in
``torch.gru`` itself (AVX2 class, this session's Intel Xeon VM). Where auto sends a small call
to torch.nn, that preamble plus fastrnn's own route lookup made the call slower than torch.nn.

How it stays torch.nn: the first call of a signature (input and state shapes, dtypes, devices,
the module's configuration) runs the torch.nn base class's forward itself, which checks
everything and raises torch.nn's errors; only once that call returned is the signature kept
(per module), and a later call of it passes the same arguments to the same op
(``_VF.rnn_tanh``/``rnn_relu``/``lstm``/``gru``: results bit-identical, the same RNG draws for
dropout). The weights are read fresh each call from ``_parameters`` (a reassigned parameter is
used at once); a module whose weights are not all plain parameters (parametrizations), packed
input, autocast, other devices and any tracing/compile/torch.func context take torch.nn's forward.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fastrnn.eager import only_eager_sees

_OPS = {"RNN_TANH": torch._VF.rnn_tanh, "RNN_RELU": torch._VF.rnn_relu,
        "LSTM": torch._VF.lstm, "GRU": torch._VF.gru}


def _signature(module, input: Tensor, hx):
    """What torch.nn's checks of this call depended on, or None where the shortcut does not
    apply."""
    if hx is None:
        states = None
    elif type(hx) is Tensor:
        states = (hx.shape, hx.dtype, hx.device)
    elif type(hx) is tuple and len(hx) == 2 and type(hx[0]) is Tensor and type(hx[1]) is Tensor:
        h, c = hx
        states = (h.shape, h.dtype, h.device, c.shape, c.dtype, c.device)
    else:
        return None
    return (input.shape, input.dtype, states, module.mode, module.input_size,
            module.hidden_size, module.proj_size, module.num_layers, module.bidirectional,
            module.batch_first, module.bias)


def _weights(module):
    """The flat weights as torch.nn's ``_update_flat_weights`` would list them, or None when
    one is not a plain parameter of the module (then torch.nn's forward finds it)."""
    params = module._parameters
    weights = [params.get(name) for name in module._flat_weights_names]
    for w in weights:  # not ``None in weights``: that compares tensors with None (~10 us each)
        if w is None:
            return None
    return weights


def run(module, input, hx):
    """``module(input, hx)`` as torch.nn's forward computes it (module docstring).
    input (T, B, I) / (B, T, I) with batch_first / (T, I) unbatched, or a PackedSequence."""
    forward = module._torch_class.forward
    if (input.__class__ is not Tensor or not input.is_cpu or torch.is_autocast_enabled("cpu")
            or not only_eager_sees()):
        return forward(module, input, hx)
    signature = _signature(module, input, hx)
    seen = module.__dict__.get("_fastrnn_native_calls")
    weights = _weights(module) if seen is not None and signature in seen else None
    if weights is None:
        result = forward(module, input, hx)  # checks the call, raises torch.nn's errors
        if signature is not None:
            if seen is None or len(seen) >= 256:
                seen = module.__dict__["_fastrnn_native_calls"] = set()
            seen.add(signature)
        return result
    module.__dict__["_flat_weights"] = weights  # as torch.nn's _update_flat_weights leaves it
    batched = input.dim() == 3
    batch_dim = 0 if module.batch_first else 1
    x = input if batched else input.unsqueeze(batch_dim)
    is_lstm = module.mode == "LSTM"
    if hx is None:
        shape = (module.num_layers * (2 if module.bidirectional else 1), x.size(batch_dim))
        h0 = torch.zeros(*shape, module.proj_size or module.hidden_size, dtype=x.dtype)
        hx = (h0, torch.zeros(*shape, module.hidden_size, dtype=x.dtype)) if is_lstm else h0
    elif not batched:
        hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1)) if is_lstm else hx.unsqueeze(1)
    result = _OPS[module.mode](x, hx, weights, module.bias, module.num_layers, module.dropout,
                               module.training, module.bidirectional, module.batch_first)
    output = result[0]
    hidden = (result[1], result[2]) if is_lstm else result[1]
    if not batched:
        output = output.squeeze(batch_dim)
        hidden = (hidden[0].squeeze(1), hidden[1].squeeze(1)) if is_lstm else hidden.squeeze(1)
    return output, hidden
