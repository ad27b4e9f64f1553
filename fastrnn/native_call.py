"""The ``native`` backend's module call: torch.nn's own forward, and for a repeated kind of
dense CPU call in plain eager mode the very ATen op that forward calls, without its Python
(``run`` for RNN/LSTM/GRU, ``run_cell_op`` for the cells).

Why a shortcut: torch.nn's ``RNN``/``LSTM``/``GRU.forward`` spends ~13 us of Python around the
op on every call (rebuilding ``_flat_weights`` through ``getattr``, the shape checks, the
zero states): a T=1 GRU at B=1, H=256 took 46 us through ``GRU.forward`` and 31 us in
``torch.gru`` itself (AVX2 class, a 2-core Intel Xeon VM); the cells' forwards ~4 us (LSTMCell
B=1, H=256: 37.7 us against 33.7 us in ``lstm_cell``). Where auto sends a small call
to torch.nn, that preamble plus fastrnn's own route lookup made the call slower than torch.nn.

How it stays torch.nn: the first call of a signature (input and state shapes, dtypes, devices,
the module's configuration) runs the torch.nn base class's forward itself, which checks
everything and raises torch.nn's errors; only once that call returned is the signature kept
(per module), and a later call of it passes the same arguments to the same op
(``_VF.rnn_tanh``/``rnn_relu``/``lstm``/``gru``: results bit-identical, the same RNG draws for
dropout). The weights are read fresh each call from ``_parameters`` (a reassigned parameter is
used at once); a module whose weights are not all plain parameters (parametrizations), packed
input, autocast, other devices and any tracing/compile/torch.func context take torch.nn's forward.
The cells keep their signatures in the route memo they consult anyway (``fastrnn.cell_step``:
its way 'native_op'), so a repeated native cell call costs one lookup besides the op.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fastrnn.eager import only_eager_sees

_OPS = {"RNN_TANH": torch._VF.rnn_tanh, "RNN_RELU": torch._VF.rnn_relu,
        "LSTM": torch._VF.lstm, "GRU": torch._VF.gru,
        "rnn_tanh": torch._VF.rnn_tanh_cell, "rnn_relu": torch._VF.rnn_relu_cell,
        "lstm": torch._VF.lstm_cell, "gru": torch._VF.gru_cell}


def _remember(module, signature) -> None:
    """Keep a signature whose call torch.nn's forward has just run without an error."""
    if signature is None:
        return
    seen = module.__dict__.get("_fastrnn_native_calls")
    if seen is None or len(seen) >= 256:
        seen = module.__dict__["_fastrnn_native_calls"] = set()
    seen.add(signature)


def _seen(module, signature) -> bool:
    seen = module.__dict__.get("_fastrnn_native_calls")
    return seen is not None and signature in seen


def states_signature(hx):
    """The states' shapes, dtypes and devices (hx a tensor, or a pair for LSTMs) as a tuple;
    None for no states, False for another structure (not a kind of call any memo keeps)."""
    if hx is None:
        return None
    if type(hx) is Tensor:
        return (hx.shape, hx.dtype, hx.device)
    if type(hx) is tuple and len(hx) == 2 and type(hx[0]) is Tensor and type(hx[1]) is Tensor:
        h, c = hx
        return (h.shape, h.dtype, h.device, c.shape, c.dtype, c.device)
    return False


def _signature(module, input: Tensor, hx):
    """What torch.nn's checks of this call depended on, or None where the shortcut does not
    apply."""
    states = states_signature(hx)
    if states is False:
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
    weights = _weights(module) if _seen(module, signature) else None
    if weights is None:
        result = forward(module, input, hx)  # checks the call, raises torch.nn's errors
        _remember(module, signature)
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


def cell_weights(module):
    """(w_ih, w_hh, b_ih, b_hh) as torch.nn's cell forward reads them, or None when a weight is
    not a plain parameter (parametrizations: torch.nn's forward finds it)."""
    params = module._parameters
    w_ih, w_hh = params.get("weight_ih"), params.get("weight_hh")
    if w_ih is None or w_hh is None or "bias_ih" not in params or "bias_hh" not in params:
        return None
    return w_ih, w_hh, params["bias_ih"], params["bias_hh"]


def run_cell_op(module, cell: str, input, hx):
    """``cell(input, hx)`` as torch.nn's cell forward computes it, for a kind of call that
    forward has already run (``fastrnn.cell_step.resolve`` answered 'native_op': a plain CPU
    tensor in plain eager mode outside autocast, shapes, dtypes and devices as before).
    cell: 'rnn_tanh', 'rnn_relu', 'lstm' or 'gru'. input (B, I) or (I,); hx (B, H) / (H,)
    or, for LSTMCell, a pair of them, or None."""
    weights = cell_weights(module)
    if weights is None:  # parametrized since: torch.nn's forward finds the weights
        return module._torch_class.forward(module, input, hx)
    batched = input.dim() == 2
    x = input if batched else input.unsqueeze(0)
    is_lstm = cell == "lstm"
    if hx is None:
        zeros = torch.zeros(x.size(0), module.hidden_size, dtype=x.dtype)
        hx = (zeros, zeros) if is_lstm else zeros
    elif not batched:
        hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if is_lstm else hx.unsqueeze(0)
    result = _OPS[cell](x, hx, *weights)
    if not batched:
        result = (result[0].squeeze(0), result[1].squeeze(0)) if is_lstm else result.squeeze(0)
    return result
