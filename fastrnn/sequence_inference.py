"""A whole ``RNN``/``LSTM``/``GRU`` call with no graph to record (no_grad, inference_mode) in
plain eager mode on the numba backend, with the layer path's per-call work that depends only
on the module and the kind of call done once.

Why a second path: at B=1, T=100, H=64 (streaming, decoding, small policies) the general one
(``fastrnn.layers`` -> ``layer`` -> ``ops`` -> the backend) spent ~170 us per call around a
~90 us LSTM time loop: expanding and checking arguments, the backend choice, folding biases,
routes, converting every tensor, stacking the states. Here a call costs the memo lookup of its
route (per module, keyed on the call's signature, valid while dispatch keeps the choice it
rests on), the check of the parameters' cached numpy views (they alias the parameters, so
in-place and ``.data`` updates are seen; nothing derived from the weights' values is kept),
and per layer-direction the input GEMM (``fastrnn.gemm``, or inside the loop where the numba
backend fuses it) and the loop itself (``numba.forward_arrays``, the backend's own entry).

It applies to a plain tensor input (3-D, or 2-D unbatched), grad mode off, no autocast, float32
or float64 on the CPU, no ``proj_size``, no active dropout, states absent or plain tensors of
exactly the expected shape and dtype, and ``auto`` (or ``backend='numba'``) choosing numba.
Everything else returns None and takes the general path, which raises torch.nn's errors.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fastrnn import dispatch, gemm, product_routing
from fastrnn.cell_step import no_graph_step_kind
from fastrnn.cells import cell_spec, module_cell_name
from fastrnn.eager import only_eager_sees
from fastrnn.native_call import states_signature
from fastrnn.parameter_views import NUMPY_DTYPES, numpy_view, parameter_views

_DTYPES = (torch.float32, torch.float64)
_LOADED = []
_NO_BIAS = {n: np.empty(0, dtype=n) for n in NUMPY_DTYPES.values()}


def _backend():
    """fastrnn.backends.numba, imported on first use (numba loads then)."""
    if not _LOADED:
        from fastrnn.backends import numba
        from fastrnn.backends.numba import cell_split, cell_step as step_kernels
        _LOADED.extend((numba, step_kernels, cell_split))
    return _LOADED[0]


def _step_kernels():
    """fastrnn.backends.numba.cell_step (loaded with ``_backend``)."""
    return _LOADED[1]


def _split_kernels():
    """fastrnn.backends.numba.cell_split (loaded with ``_backend``)."""
    return _LOADED[2]


def _plan(module, input: Tensor, hx) -> str:
    """'fast' | 'general' for a call of this signature (grad mode off, plain eager mode:
    ``route``)."""
    dim = input.dim()
    if dim not in (2, 3) or module.proj_size or input.dtype not in _DTYPES or not input.is_cpu:
        return "general"
    if torch.is_autocast_enabled("cpu"):
        return "general"
    batched = dim == 3
    seq_len = input.size(1 if module.batch_first else 0) if batched else input.size(0)
    batch = input.size(0 if module.batch_first else 1) if batched else 1
    if seq_len == 0 or batch == 0 or input.size(-1) != module.input_size:
        return "general"
    backend = module._call_backend(input)  # native never gets here (the module's forward)
    dropout = module.training and module.dropout > 0 and module.num_layers > 1
    if backend != "numba" or dropout:
        return "general"
    if hx is not None:
        layers = module.num_layers * (2 if module.bidirectional else 1)
        want = (layers, batch, module.hidden_size) if batched else (layers, module.hidden_size)
        states = hx if module.mode == "LSTM" else (hx,)
        if module.mode == "LSTM" and type(hx) is not tuple:
            return "general"
        for s in states:
            if tuple(s.shape) != want or s.dtype != input.dtype or not s.is_cpu:
                return "general"
    return "fast"


def _steps_plan(module, seq_len: int, batch: int, itemsize: int, split: bool = True):
    """Per layer whether its steps split their units across torch's team (True) or run on
    one thread, where the call runs as one cell step per time step (``_cell_steps``); None
    where it runs the time loop: past this class's ``product_routing.Bounds.cell_steps_upto``
    steps x rows (``split_steps_upto`` where every layer splits), or where a layer's step
    products would go to ``fastrnn.gemm``. ``split`` False: as on a team of one thread."""
    bounds = product_routing.bounds()
    if seq_len * batch > max(bounds.cell_steps_upto, bounds.split_steps_upto):
        return None
    hidden = module.hidden_size
    gates = cell_spec(module_cell_name(module.mode)).num_gates * hidden
    directions = 2 if module.bidirectional else 1
    plan = []
    for layer in range(module.num_layers):
        inputs = module.input_size if layer == 0 else hidden * directions
        kind = no_graph_step_kind(batch, inputs, hidden, gates, itemsize)
        if kind == "routed":
            return None
        plan.append(split and kind == "split")
    upto = bounds.split_steps_upto if all(plan) else bounds.cell_steps_upto
    return tuple(plan) if seq_len * batch <= upto else None


def _entry(module, input: Tensor, hx):
    """The memo's entry for ``module(input, hx)``: (route, dispatch generation, the steps
    plan of a 'fast' call, ``_steps_plan``)."""
    states = states_signature(hx)
    if states is False:  # some other structure: the general path deals with it
        return "general", None, None
    signature = (input.shape, input.dtype, input.device, torch.is_autocast_enabled("cpu"),
                 module.backend, module.training, module.batch_first, module.dropout,
                 dispatch.env_backend_token(), states)
    memo = module.__dict__.get("_fastrnn_inference_routes")
    hit = memo.get(signature) if memo is not None else None
    if hit is None or hit[1] != dispatch.choices_generation:
        way = _plan(module, input, hx)
        steps = None
        if way == "fast":
            batched = input.dim() == 3
            seq_len = input.size(1 if module.batch_first else 0) if batched else input.size(0)
            batch = input.size(0 if module.batch_first else 1) if batched else 1
            steps = _steps_plan(module, seq_len, batch, input.element_size())
        hit = way, dispatch.choices_generation, steps
        if memo is None or len(memo) >= 256:
            memo = module.__dict__["_fastrnn_inference_routes"] = {}
        memo[signature] = hit
    return hit


def route(module, input: Tensor, hx) -> str:
    """How ``module(input, hx)`` runs with grad mode off in plain eager mode, once the module
    has not sent it to torch.nn: 'fast' (this path) or 'general' (the layer path). From the
    module's memo when a call of this signature was seen before and dispatch still keeps the
    backend choice it rests on (``dispatch.clear_caches`` forgets both)."""
    return _entry(module, input, hx)[0]


def _weights(module, dtype: torch.dtype):
    """Per layer-direction (w_ih, w_hh, b_ih, b_hh) as numpy views (biases None when absent),
    cached on the module (``fastrnn.parameter_views``) with their grouping (regrouped only when
    the views are rebuilt: ~2 us a call); None when a parameter cannot be viewed (the general
    path then runs)."""
    params = [module._parameters.get(name) for name in module._flat_weights_names]
    views = parameter_views(module, "_fastrnn_inference_weights", params, dtype, None,
                            module._expected_weight_shapes)
    if views is None or any(v is None for v in views):
        return None
    grouped = module.__dict__.get("_fastrnn_inference_groups")
    if grouped is not None and grouped[0] is views:
        return grouped[1]
    per = 4 if module.bias else 2
    groups = tuple((v[0], v[1], v[2] if per == 4 else None, v[3] if per == 4 else None)
                   for v in (views[i:i + per] for i in range(0, len(views), per)))
    module.__dict__["_fastrnn_inference_groups"] = (views, groups)
    return groups


def _folded_bias(cell: str, b_ih, b_hh):
    """(bias added to the input GEMM, b_hn) as numpy arrays or None, from the b_ih, b_hh views,
    per call (the bias changes with every parameter update): ``fastrnn.layer.fold_biases`` in
    numpy (its torch ops cost 7 us per call for LSTM, 22 us for GRU at H=64; the float64
    parity tests hold the two to the same result)."""
    if b_ih is None:
        return None, None
    if cell != "gru":
        return b_ih + b_hh, None
    hidden = b_hh.shape[0] // 3
    bias = b_ih.copy()
    bias[:2 * hidden] += b_hh[:2 * hidden]
    return bias, b_hh[2 * hidden:]


def _cell_steps(code: int, team: int, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse: bool, y,
                h_n, c_n) -> None:
    """One layer-direction of a short call as one fused cell step per time step
    (``cell_step.forward_steps``, or ``cell_split``'s on ``team`` threads when it is not 0):
    the weights read in place, nothing packed, the biases as the cells take them. Against the
    time loop (benchmarks/cell_steps_bound.py, AVX2 class, 2-core Intel Xeon): LSTM B=1 H=256
    65 against 289 us at T=2, 297 against 446 at T=16; in line, B=16 won at T=2 and lost from
    T=4 (``product_routing.Bounds.cell_steps_upto``). Shapes as ``cell_step.forward_steps``;
    absent biases None."""
    b_ih = _NO_BIAS[y.dtype.type] if b_ih is None else b_ih
    b_hh = _NO_BIAS[y.dtype.type] if b_hh is None else b_hh
    if team:
        _split_kernels().forward_steps(code, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, y,
                                       h_n, c_n, team)
    else:
        _step_kernels().forward_steps(code, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, y, h_n,
                                      c_n)


def run(module, input: Tensor, hx):
    """``module(input, hx)`` on this path, or None where it does not apply (module docstring).
    input (T, B, I) / (B, T, I) with batch_first / (T, I) unbatched; hx as torch.nn takes it.
    Returns what torch.nn returns: (output, h_n) or (output, (h_n, c_n))."""
    if torch.is_grad_enabled() or not only_eager_sees():
        return None
    way, _, steps = _entry(module, input, hx)
    if way != "fast":
        return None
    dtype = input.dtype
    groups = _weights(module, dtype)
    if groups is None:
        return None
    backend = _backend()
    cell = module_cell_name(module.mode)
    spec = cell_spec(cell)
    is_lstm = spec.has_cell_state
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(1)
    if module.batch_first and batched:
        x = x.transpose(0, 1)
    seq_len, batch = x.shape[:2]
    team = _split_kernels().team() if steps is not None and any(steps) else 0
    if steps is not None and all(steps) and team == 0:
        # planned split, but torch's team has one thread now: the in-line steps' bound holds
        steps = _steps_plan(module, seq_len, batch, input.element_size(), split=False)
    hidden = module.hidden_size
    directions = 2 if module.bidirectional else 1
    layers = module.num_layers * directions
    # outputs allocated in numpy and handed to torch once (torch.empty and .numpy() cost
    # ~1 us each, 6 of them a B=1 call)
    np_dtype = NUMPY_DTYPES[dtype]
    hn = np.empty((layers, batch, hidden), dtype=np_dtype)
    cn = np.empty((layers, batch, hidden) if is_lstm else (layers, batch, 0), dtype=np_dtype)
    if hx is None:
        h0 = c0 = np.zeros((layers, batch, hidden), dtype=np_dtype)
    else:
        h_state, c_state = hx if is_lstm else (hx, None)
        h0 = numpy_view(h_state).reshape(layers, batch, hidden)
        c0 = numpy_view(c_state).reshape(layers, batch, hidden) if is_lstm else None
    no_ws = np.empty((seq_len, batch, 0), dtype=np_dtype)
    gates = spec.num_gates * hidden
    layer_input = x
    for layer in range(module.num_layers):
        fuse = steps is not None or backend.fuses_input_gemm(seq_len, batch,
                                                             layer_input.shape[2], gates)
        x_np = numpy_view(layer_input) if fuse else None
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, b_ih, b_hh = groups[index]
            if steps is not None:
                y = np.empty((seq_len, batch, hidden), dtype=np_dtype)
                _cell_steps(spec.code, team if steps[layer] else 0, x_np, h0[index],
                            c0[index] if is_lstm else h0[index], w_ih, w_hh, b_ih, b_hh,
                            direction == 1, y, hn[index], cn[index] if is_lstm else hn[index])
                outputs.append(y)
                continue
            bias, b_hn = _folded_bias(cell, b_ih, b_hh)
            if fuse:
                xg = None
            else:
                xg = gemm.linear(layer_input, torch.from_numpy(w_ih),
                                 None if bias is None else torch.from_numpy(bias))
                xg = xg.contiguous().numpy()
            y = np.empty((seq_len, batch, hidden), dtype=np_dtype)
            backend.forward_arrays(cell, xg, x_np, w_ih, bias, w_hh, b_hn, h0[index],
                                   c0[index] if is_lstm else None, None, None, direction == 1,
                                   y, hn[index], cn[index], no_ws)
            outputs.append(y)
        layer_input = torch.from_numpy(
            outputs[0] if directions == 1 else np.concatenate(outputs, axis=2))
    out = layer_input
    h_n, c_n = torch.from_numpy(hn), torch.from_numpy(cn)
    if module.batch_first and batched:
        out = out.transpose(0, 1)
    if not batched:
        out, h_n, c_n = out.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
    return (out, (h_n, c_n)) if is_lstm else (out, h_n)
