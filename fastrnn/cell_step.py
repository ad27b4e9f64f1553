"""The cells' own path: one fused step (``fastrnn.backends.numba.cell_step``) for
``RNNCell``/``LSTMCell``/``GRUCell`` on the CPU, with as little Python per call as possible.

A cell is called once per token or frame, so what a call costs besides the kernel is the whole
cost. What depends only on the module and the call's kind is computed once and cached: the
route of each kind of call with its ``StepPlan`` (``resolve``'s memo per module) and the
weights' numpy views (per module, rebuilt when a parameter's storage or version changes).
Nothing derived from the weights' values is cached: ``p.data.copy_(...)`` or ``p.data.mul_(...)`` (target-network and EMA
updates) change a parameter without its version counter, so a cached transposed copy went
stale (the kernels read the parameters in place; the copies saved 0-1.3 us at B=1). Inputs
and outputs cross to numpy without torch allocations (``numpy()`` views in,
``torch.from_numpy`` out). A step (training or not) whose products are large enough for
``fastrnn.product_routing`` to take them off the calling thread runs them on ``fastrnn.gemm``
and only the gate math in the kernel (``_routed_products``; in line, B=64 H=256 steps were
1.8-2.5x torch.nn's time).

``resolve`` decides what runs a call, the one place the modules ask (``cell_route``: its
answer alone, for the tests):

- ``"native"``: torch.nn's own forward (``auto`` measured it faster, or ``backend='native'``);
- ``"native_op"``: the same for a kind of call torch.nn's forward has already run here
  (``native_ran``), on a CPU outside autocast: the ATen op that forward calls, without its
  Python (``fastrnn.native_call.run_cell_op``; its plan is the cell's name);
- ``"step"``: the fused step, no graph recorded;
- ``"step_function"``: the fused step inside ``CellStep`` (an autograd.Function);
- ``"layer"``: everything else, a T=1 sequence on ``fastrnn.layer.layer_direction``: other
  kernels, compile/export/torch.func (that path has the registered custom op and the
  differentiable reference), autocast, float16/bfloat16, and malformed input (it raises
  torch.nn's own errors).
"""
from __future__ import annotations

import importlib
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from fastrnn import dispatch, gemm, native_call, product_routing
from fastrnn.cells import CELLS, step_weight_shapes
from fastrnn.eager import only_eager_sees
from fastrnn.parameter_views import NUMPY_DTYPES, numpy_view, parameter_views

_NATIVE = (torch.float32, torch.float64)
# Workspace slabs of H the forward saves for the backward (fastrnn.backends.numba.cell_step).
_WS = {"rnn_tanh": 0, "rnn_relu": 0, "lstm": 5, "gru": 4}
_EMPTY = {d: np.empty((0, 0), dtype=n) for d, n in NUMPY_DTYPES.items()}
_EMPTY1 = {d: np.empty(0, dtype=n) for d, n in NUMPY_DTYPES.items()}
_CODES = {name: spec.code for name, spec in CELLS.items()}


_LOADED: dict = {}


def _numba_module(name: str):
    """fastrnn.backends.numba.<name>, imported on first use (numba loads then)."""
    found = _LOADED.get(name)
    if found is None:
        found = _LOADED[name] = importlib.import_module("fastrnn.backends.numba." + name)
    return found


def _kernels():
    """The fused step's kernels (fastrnn.backends.numba.cell_step)."""
    return _numba_module("cell_step")


def _split_kernels():
    """The split no-graph step (fastrnn.backends.numba.cell_split; only where ``_splits``)."""
    return _numba_module("cell_split")


def _weights(params: dict, dtype: torch.dtype, module):
    """The numpy views (w_ih, w_hh, b_ih, b_hh) of the module's parameters (size-0 arrays for
    absent biases), cached in ``module.__dict__["_fastrnn_step_weights"]``
    (``fastrnn.parameter_views``); None when a parameter cannot be viewed or has not torch.nn's
    shape for the module. The views' key is built here unrolled (~0.5 us of a ~6 us call less
    than ``version_key``'s loop)."""
    w_ih, w_hh, b_ih, b_hh = (params["weight_ih"], params["weight_hh"], params["bias_ih"],
                              params["bias_hh"])
    key = (dtype, w_ih.data_ptr(), w_ih._version, w_hh.data_ptr(), w_hh._version,
           None if b_ih is None else b_ih.data_ptr(), None if b_ih is None else b_ih._version,
           None if b_hh is None else b_hh.data_ptr(), None if b_hh is None else b_hh._version)
    cached = module.__dict__.get("_fastrnn_step_weights")
    if cached is not None and cached[0] == key:
        return cached[1]
    return parameter_views(module, "_fastrnn_step_weights", (w_ih, w_hh, b_ih, b_hh), dtype,
                           _EMPTY1[dtype],
                           lambda: step_weight_shapes(module._cell_name(), module.input_size,
                                                      module.hidden_size), key)


def _valid_states(hidden: int, hx, is_lstm: bool, batched: bool, input: Tensor):
    """hx as a tuple of state tensors when each is a plain CPU tensor of the shape and dtype
    this call needs; None when something is off (the general path then raises torch.nn's
    error)."""
    if hx is None:
        return ()
    if is_lstm and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
        return None
    states = hx if is_lstm else (hx,)
    want = (input.size(0), hidden) if batched else (hidden,)
    dtype = input.dtype
    for s in states:
        if type(s) is not Tensor or s.shape != want or s.dtype != dtype or not s.is_cpu:
            return None
    return states


def _requires_grad(input: Tensor, params: dict) -> bool:
    if (input.requires_grad or params["weight_ih"].requires_grad
            or params["weight_hh"].requires_grad):
        return True
    bias = params["bias_ih"]
    return bias is not None and (bias.requires_grad or params["bias_hh"].requires_grad)


def _any_state_requires_grad(hx) -> bool:
    states = hx if isinstance(hx, (tuple, list)) else (hx,)
    return any(getattr(s, "requires_grad", False) for s in states)


def _signature(module, input: Tensor, hx):
    """Everything ``resolve``'s answer depends on besides the execution context and the
    weights' layout, as one hashable tuple; None for an hx of unexpected structure (its route
    is then worked out afresh, and is 'layer'). With grad mode off nobody's requires_grad
    matters (``_route``), and the shorter tuple saves a small call ~0.5 us. A CPU input is
    keyed by ``is_cpu`` (a ``torch.device`` and its ``type`` cost ~0.4 us), and so are the
    states: a state off the CPU sends the call to 'layer' whatever its device."""
    grad = torch.is_grad_enabled()
    if hx is None:
        states = None
    elif type(hx) is Tensor:
        states = (hx.shape, hx.dtype, hx.is_cpu, grad and hx.requires_grad)
    elif type(hx) is tuple and len(hx) == 2 and type(hx[0]) is Tensor and type(hx[1]) is Tensor:
        h, c = hx
        states = (h.shape, h.dtype, h.is_cpu, c.shape, c.dtype, c.is_cpu,
                  grad and (h.requires_grad or c.requires_grad))
    else:
        return None
    if input.is_cpu:
        device, autocast = None, torch.is_autocast_enabled("cpu")
    else:
        device = input.device
        autocast = torch.is_autocast_enabled(device.type)
    # an RNNCell's nonlinearity is read at every call, as torch.nn reads it (the plan's cell)
    head = (input.shape, input.dtype, device, grad, autocast, module.backend, module.training,
            dispatch.env_backend_token(), states, module.__dict__.get("nonlinearity"))
    if not grad:
        return head
    params = module._parameters
    bias = params["bias_ih"]
    return head + (input.requires_grad, params["weight_ih"].requires_grad,
                   params["weight_hh"].requires_grad,
                   None if bias is None else (bias.requires_grad, params["bias_hh"].requires_grad))


class StepPlan(NamedTuple):
    """What the fused step needs for one kind of call besides its tensors, fixed by the
    call's signature and so worked out once per kind (``_route``)."""
    cell: str
    code: int  # the kernels' cell code
    is_lstm: bool
    batch: int
    hidden: int
    unbatched: bool  # input (I,), states (H,)
    dtype: type  # numpy dtype of the computation
    routed: bool  # the products on fastrnn.gemm (``_routed_products``)
    split: bool  # a no-graph step's units across torch's team (``_splits``) when it has 2+


_LAYER = ("layer", None, None)


def resolve(module, input, hx) -> tuple:
    """(way, plan, weights) for ``module(input, hx)``: way as ``cell_route`` answers it; for
    'step' and 'step_function' the call kind's ``StepPlan`` and the weights' numpy views
    (``_weights``); for 'native_op' the cell's name and None; else None, None. A repeated kind of call is one lookup in the module's
    memo (``_signature``), valid while dispatch keeps the backend choice it rests on, plus the
    weights' check."""
    if type(input) is not Tensor or not only_eager_sees():
        return _LAYER  # other contexts: the general path (fastrnn.contexts decides there)
    params = module._parameters
    if ("weight_ih" not in params or "weight_hh" not in params or "bias_ih" not in params
            or "bias_hh" not in params):
        return _LAYER  # a parametrized weight: the general path reads it as torch.nn does
    signature = _signature(module, input, hx)
    memo = module.__dict__.get("_fastrnn_routes")
    hit = memo.get(signature) if memo is not None and signature is not None else None
    if hit is None or hit[1] != dispatch.choices_generation:
        hit = _route(module, input, hx)
        if signature is not None:
            if memo is None or len(memo) >= 256:
                memo = module.__dict__["_fastrnn_routes"] = {}
            memo[signature] = hit
    plan = hit[2]
    if plan is None or hit[0] == "native_op":
        return hit[0], plan, None
    weights = _weights(module._parameters, input.dtype, module)
    if weights is None:
        return _LAYER
    return hit[0], plan, weights


def cell_route(module, input, hx) -> str:
    """What runs ``module(input, hx)`` (see the module docstring): 'native', 'native_op',
    'step', 'step_function' or 'layer'. 'native' is decided first, from the call's kind alone
    (it costs torch.nn's call ~1.5 us more); the fused step then needs well-formed arguments."""
    return resolve(module, input, hx)[0]


def native_ran(module, input, hx) -> None:
    """Called once torch.nn's forward has returned for a call ``resolve`` sent to 'native':
    from now on that kind of call is 'native_op' (torch.nn's Python checks passed for its
    shapes, dtypes and devices; the op checks the rest itself). Only a plain CPU call
    outside autocast whose weights are all plain parameters qualifies (else torch.nn's
    forward keeps running it: it finds parametrized weights, casts under autocast)."""
    if not input.is_cpu or torch.is_autocast_enabled("cpu"):
        return
    signature = _signature(module, input, hx)
    memo = module.__dict__.get("_fastrnn_routes")
    hit = memo.get(signature) if memo is not None and signature is not None else None
    if (hit is None or hit[0] != "native" or hit[1] != dispatch.choices_generation
            or native_call.cell_weights(module) is None):
        return
    memo[signature] = ("native_op", hit[1], module._cell_name())


def _route(module, input, hx) -> tuple:
    """(the way before the weights' check, the ``dispatch.choices_generation`` it holds in, or
    None under autocast: the backend choice it rests on is kept until the next generation;
    the ``StepPlan`` for the fused step's ways, else None)."""
    way = _route_way(module, input, hx)
    plan = None
    if way.startswith("step"):
        cell = module._cell_name()
        batch = input.size(0) if input.dim() == 2 else 1
        hidden = module.hidden_size
        gates = CELLS[cell].num_gates * hidden
        kind = no_graph_step_kind(batch, module.input_size, hidden, gates,
                                  input.element_size())
        plan = StepPlan(cell, _CODES[cell], cell == "lstm", batch, hidden, input.dim() == 1,
                        NUMPY_DTYPES[input.dtype], kind == "routed", kind == "split")
    if torch.is_autocast_enabled(input.device.type):
        return way, None, plan  # asked afresh every call, as dispatch does under autocast
    return way, dispatch.choices_generation, plan


def _route_way(module, input, hx) -> str:
    dim = input.dim()
    if dim != 2 and dim != 1:
        return "layer"
    batch = input.size(0) if dim == 2 else 1
    if batch == 0:
        return "layer"
    cell = module._cell_name()
    autocast = torch.is_autocast_enabled(input.device.type)
    backend = module._choose(input, cell, 1, batch, module.hidden_size, 0, False, "cell")
    if backend == "native":
        return "native"
    params = module._parameters
    grad = torch.is_grad_enabled() and (
        _requires_grad(input, params) or (hx is not None and _any_state_requires_grad(hx)))
    if (backend != "numba" or not input.is_cpu or input.dtype not in _NATIVE
            or input.size(-1) != module.input_size or autocast
            or _valid_states(module.hidden_size, hx, cell == "lstm", dim == 2, input) is None):
        return "layer"
    return "step_function" if grad else "step"


def _array(t: Tensor):
    """A (B, n) numpy view of a (B, n) or (n,) tensor, copied only when not contiguous."""
    a = numpy_view(t)
    return a.reshape(1, a.shape[0]) if a.ndim == 1 else a


def _state_arrays(hx, is_lstm: bool, batch: int, hidden: int, dtype):
    """(h, c) as (B, H) numpy arrays (zeros for hx None; c is h itself except for LSTM)."""
    if hx is None:
        h = np.zeros((batch, hidden), dtype=NUMPY_DTYPES[dtype])
        return h, h
    if is_lstm:
        return _array(hx[0]), _array(hx[1])
    h = _array(hx)
    return h, h


def _forward_arrays(plan: StepPlan, weights: tuple, x: Tensor, hx):
    """The training forward on the weights ``resolve`` just checked (numpy views, read in
    place: they change every optimizer step), saving the workspace; returns (h', c' or None,
    the arrays the backward reads)."""
    cell, is_lstm, batch, hidden = plan.cell, plan.is_lstm, plan.batch, plan.hidden
    xa = _array(x)
    ha, ca = _state_arrays(hx, is_lstm, batch, hidden, x.dtype)
    w_ih, w_hh, b_ih, b_hh = weights
    ws = np.empty((batch, _WS[cell] * hidden), dtype=plan.dtype) if _WS[cell] else _EMPTY[x.dtype]
    out = np.empty((2 if is_lstm else 1, batch, hidden), dtype=plan.dtype)
    h_out, c_out = out[0], out[-1]
    if plan.routed:
        # two routed GEMMs (biases included), then the gate math alone
        gi = _linear(xa, w_ih, b_ih)
        gh = _linear(ha, w_hh, b_hh)
        _kernels().gates_forward(plan.code, gi, gh, ha, ca, h_out, c_out, ws)
    else:
        _kernels().forward(plan.code, xa, ha, ca, w_ih, w_hh, b_ih, b_hh, h_out, c_out, ws)
    h = torch.from_numpy(h_out[0] if plan.unbatched else h_out)
    c = torch.from_numpy(c_out[0] if plan.unbatched else c_out) if is_lstm else None
    return h, c, (xa, ha, ca, w_ih, w_hh, h_out, ws, plan.routed)


def _routed_products(batch: int, inputs: int, w_hh_shape: tuple) -> bool:
    """Whether a step's products run on ``fastrnn.gemm`` (torch's OpenMP team,
    oneDNN) rather than inside the fused kernel, whose products run on the calling thread:
    where ``product_routing`` takes the larger of them off the calling thread."""
    gates, hidden = w_hh_shape
    return product_routing.beyond_calling_thread(batch, max(inputs, hidden), gates)


def _splits(weight_bytes: int) -> bool:
    """Whether a no-graph step with ``weight_bytes`` of W_ih and W_hh splits its units across
    torch's OpenMP team (``fastrnn.backends.numba.cell_split``): from this class's
    ``product_routing.Bounds.cell_split_from`` up, where torch runs on libgomp. How many
    threads is asked per call (``cell_split.team``)."""
    if weight_bytes < product_routing.bounds().cell_split_from:
        return False
    from fastrnn.backends.numba import omp
    return omp.available()


def no_graph_step_kind(batch: int, inputs: int, hidden: int, gates: int, itemsize: int) -> str:
    """How a step of these sizes runs its products: 'routed' (on ``fastrnn.gemm``, the gate
    math alone in the kernel), else, with no graph to record, 'split' (its units across
    torch's team, ``cell_split``) or 'inline' (one thread). The cells' plans and the short
    sequences of ``fastrnn.sequence_inference`` read it here."""
    if _routed_products(batch, inputs, (gates, hidden)):
        return "routed"
    return "split" if _splits(gates * (inputs + hidden) * itemsize) else "inline"


def _linear(a, w, b):
    """a (B, K) @ w (N, K)^T + b (N,) as a numpy array, on ``fastrnn.gemm`` (b of size 0: none)."""
    t = gemm.linear(torch.from_numpy(a), torch.from_numpy(w),
                    torch.from_numpy(b) if b.shape[0] else None)
    return t.numpy() if t.is_contiguous() else t.contiguous().numpy()


def inference_arrays(plan: StepPlan, weights: tuple, x: Tensor, hx) -> tuple:
    """The no-graph step of a call ``resolve`` sent to 'step' (with its plan and weights):
    inputs passed by address (``forward_at``), (h', c') returned as numpy-allocated (B, H)
    arrays (c' is h' except for LSTM; ``run`` and ``fastrnn.layer_step`` shape them). Every
    tensor query here costs ~0.1 us of a ~6 us call: each is asked once."""
    if not x.is_contiguous():
        x = x.contiguous()
    h_at = c_at = 0
    if hx is not None:
        h0, c0 = hx if plan.is_lstm else (hx, hx)
        if not h0.is_contiguous():
            h0 = h0.contiguous()
        if not c0.is_contiguous():
            c0 = c0.contiguous()
        h_at, c_at = h0.data_ptr(), c0.data_ptr()
    w_ih, w_hh, b_ih, b_hh = weights
    if plan.routed:
        return _routed_inference(plan, x, hx, w_ih, w_hh, b_ih, b_hh)
    if plan.is_lstm:
        h_out, c_out = np.empty((2, plan.batch, plan.hidden), dtype=plan.dtype)
    else:
        h_out = c_out = np.empty((plan.batch, plan.hidden), dtype=plan.dtype)
    split = _split_kernels() if plan.split else None
    team = split.team() if split is not None else 0
    if team:
        split.forward_at(plan.code, x.data_ptr(), h_at, c_at, w_ih, w_hh, b_ih, b_hh, h_out,
                         c_out, team)
    else:
        _kernels().forward_at(plan.code, x.data_ptr(), h_at, c_at, w_ih, w_hh, b_ih, b_hh,
                              h_out, c_out)
    return h_out, c_out


def _routed_inference(plan: StepPlan, x, hx, w_ih, w_hh, b_ih, b_hh):
    """A large no-graph step: the two products on ``fastrnn.gemm`` (biases included), the
    gate math alone in numba; (h', c') as (B, H) arrays."""
    ha, ca = _state_arrays(hx, plan.is_lstm, plan.batch, plan.hidden, x.dtype)
    out = np.empty((2 if plan.is_lstm else 1, plan.batch, plan.hidden), dtype=plan.dtype)
    h_out, c_out = out[0], out[-1]
    _kernels().gates_forward(plan.code, _linear(_array(x), w_ih, b_ih),
                             _linear(ha, w_hh, b_hh), ha, ca, h_out, c_out, _EMPTY[x.dtype])
    return h_out, c_out


def run(module, way: str, plan: StepPlan, weights: tuple, input: Tensor, hx):
    """``module(input, hx)`` on the fused step, for a call ``resolve`` sent to ``way``
    ('step' or 'step_function') with ``plan`` and ``weights``. input (B, I) or (I,); hx:
    (B, H)/(H,) (LSTM: a pair) or None. Returns h' (B, H)/(H,) (LSTM: (h', c'))."""
    if way == "step":
        h_out, c_out = inference_arrays(plan, weights, input, hx)
        if plan.unbatched:
            h_out, c_out = h_out[0], c_out[0]
        if plan.is_lstm:
            return torch.from_numpy(h_out), torch.from_numpy(c_out)
        return torch.from_numpy(h_out)
    is_lstm = plan.is_lstm
    h0 = hx[0] if is_lstm and hx is not None else hx
    c0 = hx[1] if is_lstm and hx is not None else None
    params = module._parameters
    outs = _apply_step(plan, weights, input, h0, c0, params["weight_ih"], params["weight_hh"],
                       params["bias_ih"], params["bias_hh"])
    return outs if is_lstm else outs[0]


def _grad_array(g, batch: int, hidden: int, dtype):
    """A (B, H) numpy array of an output gradient (zeros where autograd passed None)."""
    if g is None:
        return np.zeros((batch, hidden), dtype=NUMPY_DTYPES[dtype])
    return _array(g)


def _out(shape, dtype, wanted: bool):
    return np.empty(shape, dtype=NUMPY_DTYPES[dtype]) if wanted else _EMPTY[dtype]


class CellStep(torch.autograd.Function):
    """One fused cell step with its fused backward (plain eager mode only: ``resolve``).

    forward(plan, weights (``resolve``), x (B, I) | (I,), h0 | None, c0 | None (LSTM), w_ih,
    w_hh, b_ih, b_hh)
    -> (h', c') for LSTM, (h',) otherwise. create_graph backward differentiates torch's own
    cell (``torch._VF``) recomputed from the saved inputs, so higher derivatives are exact.
    """

    @staticmethod
    def forward(ctx, plan, weights, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        cell, is_lstm = plan.cell, plan.is_lstm
        hx = ((h0, c0) if is_lstm else h0) if h0 is not None else None
        h, c, arrays = _forward_arrays(plan, weights, x, hx)
        ctx.cell, ctx.arrays, ctx.unbatched = cell, arrays, plan.unbatched
        ctx.set_materialize_grads(False)
        # Saved for torch's version checks and the create_graph backward; the fused backward
        # reads the arrays above (the same memory, no second numpy view per tensor).
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, h if cell.startswith("rnn")
                              else None)
        return (h, c) if is_lstm else (h,)

    @staticmethod
    def backward(ctx, grad_h, grad_c=None):
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, _ = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (None, None, *_torch_grads(ctx.cell, (x, h0, c0, w_ih, w_hh, b_ih, b_hh),
                                              grad_h, grad_c, ctx.needs_input_grad[2:]))
        xa, ha, ca, wa_ih, wa_hh, h_out, ws, routed = ctx.arrays  # routed: as the forward ran
        batch, hidden = ha.shape
        dtype = x.dtype
        need = ctx.needs_input_grad
        is_lstm = ctx.cell == "lstm"
        has_bias = b_ih is not None
        gh = _grad_array(grad_h, batch, hidden, dtype)
        gc = _grad_array(grad_c, batch, hidden, dtype) if is_lstm else gh
        dc = _out(ha.shape, dtype, is_lstm and need[4])
        if routed:
            dh = _out(ha.shape, dtype, need[3])
            dx, dh, dw_ih, dw_hh, db_ih, db_hh = _routed_backward(
                ctx.cell, gh, gc, xa, ha, ca, wa_ih, wa_hh, h_out, ws, dc, dh,
                need[2], need[5], need[6], has_bias and need[7], has_bias and need[8])
        else:
            dx = _out(xa.shape, dtype, need[2])
            dh = _out(ha.shape, dtype, need[3])
            dw_ih = _out(wa_ih.shape, dtype, need[5])
            dw_hh = _out(wa_hh.shape, dtype, need[6])
            db_ih = (np.empty(wa_ih.shape[0], NUMPY_DTYPES[dtype]) if has_bias and need[7]
                     else _EMPTY1[dtype])
            db_hh = (np.empty(wa_hh.shape[0], NUMPY_DTYPES[dtype]) if has_bias and need[8]
                     else _EMPTY1[dtype])
            _kernels().backward(_CODES[ctx.cell], gh, gc, xa, ha, ca, wa_ih, wa_hh, h_out, ws,
                                dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh)

        def state(a, wanted):
            if not wanted:
                return None
            return torch.from_numpy(a[0] if ctx.unbatched else a)

        def tensor(a, wanted):
            return (a if isinstance(a, Tensor) else torch.from_numpy(a)) if wanted else None
        return (None, None, state(dx, need[2]), state(dh, need[3]),
                state(dc, is_lstm and need[4]), tensor(dw_ih, need[5]), tensor(dw_hh, need[6]),
                tensor(db_ih, has_bias and need[7]), tensor(db_hh, has_bias and need[8]))


def _routed_backward(cell, gh, gc, xa, ha, ca, w_ih, w_hh, h_out, ws, dc, dh, want_dx,
                     want_dw_ih, want_dw_hh, want_db_ih, want_db_hh):
    """The backward of a large step: the gate derivatives in numba (writing dc, and dh's
    direct part for GRU), the four products on ``fastrnn.gemm`` and the bias sums on torch.
    Returns (dx, dh, dw_ih, dw_hh, db_ih, db_hh): numpy arrays or tensors, None where not
    wanted (dh: the array passed in, size 0 when not wanted)."""
    batch, gates = ha.shape[0], w_hh.shape[0]
    dgi = np.empty((batch, gates), dtype=xa.dtype)
    dgh = np.empty((batch, gates), dtype=xa.dtype) if cell == "gru" else dgi
    _kernels().gate_grads(_CODES[cell], gh, gc, ha, ca, h_out, ws, dgi, dgh, dc, dh)
    t = torch.from_numpy
    g_in, g_h = t(dgi), t(dgh)
    if dh.shape[0] == batch:
        product = gemm.matmul(g_h, t(w_hh))
        if cell == "gru":
            dh += product.numpy()  # gate_grads wrote the direct part d*z
        else:
            dh = product.numpy()
    return (gemm.matmul(g_in, t(w_ih)).numpy() if want_dx else None, dh,
            gemm.matmul_tn(g_in, t(xa)) if want_dw_ih else None,
            gemm.matmul_tn(g_h, t(ha)) if want_dw_hh else None,
            g_in.sum(0) if want_db_ih else None, g_h.sum(0) if want_db_hh else None)


# Function.apply minus its Python preamble (functorch's dead-wrapper unwrapping, ~2 us a
# call): resolve sends only plain tensors here, with no torch.func transform active.
_apply_step = torch._C._FunctionBase.__dict__["apply"].__get__(None, CellStep)

_TORCH_CELLS = {"rnn_tanh": torch._VF.rnn_tanh_cell, "rnn_relu": torch._VF.rnn_relu_cell,
                "lstm": torch._VF.lstm_cell, "gru": torch._VF.gru_cell}


def _torch_grads(cell, inputs, grad_h, grad_c, needs):
    """create_graph=True: the gradients of torch's own cell step recomputed from ``inputs``
    (x, h0, c0, w_ih, w_hh, b_ih, b_hh), differentiable themselves."""
    with torch.enable_grad():
        x, h0, c0, w_ih, w_hh, b_ih, b_hh = [
            t if t is None or t.requires_grad else t.detach().requires_grad_() for t in inputs]
        batched = x.dim() == 2
        xb = x if batched else x.unsqueeze(0)
        hidden = w_hh.shape[1]
        zeros = xb.new_zeros(xb.shape[0], hidden)
        hb = zeros if h0 is None else (h0 if batched else h0.unsqueeze(0))
        if cell == "lstm":
            cb = zeros if c0 is None else (c0 if batched else c0.unsqueeze(0))
            outs = list(_TORCH_CELLS[cell](xb, (hb, cb), w_ih, w_hh, b_ih, b_hh))
            grads = [grad_h, grad_c]
        else:
            outs, grads = [_TORCH_CELLS[cell](xb, hb, w_ih, w_hh, b_ih, b_hh)], [grad_h]
        if not batched:
            outs = [o.squeeze(0) for o in outs]
        pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
        leaves = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
        wanted = [t for t, need in zip(leaves, needs) if need and t is not None]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                       create_graph=True, allow_unused=True)
                   if pairs and wanted else ())
        result = [next(got) if (need and t is not None) else None
                  for t, need in zip(leaves, needs)]
    return [r if r is not None or t is None or not need else torch.zeros_like(t)
            for r, t, need in zip(result, leaves, needs)]
