"""Deploying models that hold fastrnn modules: TorchScript (script, trace, save/load), ONNX
(both exporters, run by onnxruntime), torch.func, quantize_dynamic, torch.export and
torch.compile with dynamic shapes; each compared with the same model built from torch.nn.

Every test runs twice: with auto on torch.nn's own path (no table) and with a table in which
numba wins everywhere, so eager calls run fastrnn's kernels and ``fastrnn.contexts`` must steer
each path (that it does is checked, not assumed: ``_eager_backend``).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Optional

import onnx
import onnxruntime
import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim

import fastrnn
from fastrnn import auto, dispatch

TOL = dict(rtol=1e-5, atol=1e-5)
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
ONNX_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# (cell, constructor keywords, hx given): several layers, both directions, batch_first or not
CONFIGS = [("lstm", dict(num_layers=2, bidirectional=True, batch_first=True), False),
           ("gru", dict(num_layers=2, bidirectional=True), True),
           ("rnn", dict(num_layers=1, nonlinearity="relu", batch_first=True), True),
           ("lstm", dict(num_layers=1), True)]
IDS = [f"{c}-{'-'.join(f'{k}{v}' for k, v in kw.items())}-hx{hx}" for c, kw, hx in CONFIGS]
I, H = 3, 4


@pytest.fixture(params=["native-auto", "kernel-auto"], autouse=True)
def auto_table(request, tmp_path, monkeypatch):
    """auto with no table (torch.nn's path everywhere) or with one where numba wins for every
    cell, mode and size (eager calls then run the kernel)."""
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    if request.param == "kernel-auto":
        points = [dict(kind=kind, cell=cell, dtype="float32", mode=mode, T=T, B=B, H=H,
                       backend="numba", kernel_ms=1.0, native_ms=2.0)
                  for kind in ("sequence", "cell") for cell in ("lstm", "gru", "rnn_tanh")
                  for mode in ("inference", "training") for T in (1, 8, 64) for B in (1, 64)
                  for H in (1, 64)]
        path = tmp_path / "table.json"
        path.write_text(json.dumps({"schema": auto.SCHEMA, "class": "test", "points": points}))
        monkeypatch.setenv(auto.ENV_VAR, str(path))
    dispatch.clear_caches()
    yield request.param
    dispatch.clear_caches()


def _eager_backend(cell: str, mode: str = "inference") -> str:
    name = {"rnn": "rnn_relu"}.get(cell, cell)
    return dispatch.choose_module_backend("auto", name, torch.device("cpu"), torch.float32, 7,
                                          2, H, 0, False, mode, True)


def test_kernel_table_makes_eager_calls_run_the_kernel(auto_table):
    want = "numba" if auto_table == "kernel-auto" else "native"
    assert _eager_backend("lstm") == want and _eager_backend("gru", "training") == want


class Seq(nn.Module):
    """A recurrent module, then a linear head; ``h`` (and ``c``) optional initial states."""

    def __init__(self, cell: str, kwargs: dict):
        super().__init__()
        self.rnn = TORCH[cell](I, H, **kwargs)
        self.head = nn.Linear(H * (2 if kwargs.get("bidirectional") else 1), 2)

    def forward(self, x: Tensor, h: Optional[Tensor] = None, c: Optional[Tensor] = None):
        if h is None:
            y, _ = self.rnn(x)
        elif c is None:
            y, _ = self.rnn(x, h)
        else:
            y, _ = self.rnn(x, (h, c))
        return self.head(y)


class LSTMSeq(Seq):
    """TorchScript needs the LSTM call's state type fixed at compile time."""

    def forward(self, x: Tensor, h: Optional[Tensor] = None, c: Optional[Tensor] = None):
        if h is None or c is None:
            y, _ = self.rnn(x)
        else:
            y, _ = self.rnn(x, (h, c))
        return self.head(y)


class GRUSeq(Seq):
    def forward(self, x: Tensor, h: Optional[Tensor] = None, c: Optional[Tensor] = None):
        if h is None:
            y, _ = self.rnn(x)
        else:
            y, _ = self.rnn(x, h)
        return self.head(y)


def _pair(cell: str, kwargs: dict):
    """(torch.nn model, the same weights converted to fastrnn)."""
    torch.manual_seed(0)
    cls = LSTMSeq if cell == "lstm" else GRUSeq
    reference = cls(cell, kwargs).eval()
    model = cls(cell, kwargs).eval()
    model.load_state_dict(reference.state_dict())
    return reference, fastrnn.convert(model)


def _inputs(cell: str, kwargs: dict, hx: bool, batch: int, steps: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, steps, I) if kwargs.get("batch_first") else (steps, batch, I)
    args = [torch.randn(shape, generator=gen)]
    if hx:
        layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
        args += [torch.randn(layers, batch, H, generator=gen)
                 for _ in range(2 if cell == "lstm" else 1)]
    return tuple(args)


def _reload(module):
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_script_save_load_matches_torch(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    scripted = _reload(torch.jit.script(model))
    for batch, steps in ((2, 5), (3, 9)):
        args = _inputs(cell, kwargs, hx, batch, steps)
        torch.testing.assert_close(scripted(*args), reference(*args), **TOL)
    # the scripted module holds the converted module's own Parameter objects
    fresh = fastrnn.convert(type(model)(cell, kwargs))
    assert all(a is b for a, b in zip(torch.jit.script(fresh).parameters(), fresh.parameters()))


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_trace_save_load_records_torch_op(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    traced = _reload(torch.jit.trace(model, _inputs(cell, kwargs, hx, 2, 5)))
    aten = {"lstm": "aten::lstm", "gru": "aten::gru", "rnn": "aten::rnn_relu"}[cell]
    graph = str(traced.inlined_graph)
    assert aten in graph and "fastrnn::" not in graph
    args = _inputs(cell, kwargs, hx, 3, 9)  # another batch and length: the trace generalizes
    torch.testing.assert_close(traced(*args), reference(*args), **TOL)


def _onnxruntime(proto: bytes, args) -> Tensor:
    session = onnxruntime.InferenceSession(proto, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return torch.from_numpy(session.run(None, dict(zip(names, (a.numpy() for a in args))))[0])


def _check_onnx(cell: str, proto: bytes, recurrent_node: bool = True) -> None:
    graph = onnx.load_from_string(proto).graph
    ops = {n.op_type for n in graph.node}
    domains = {n.domain for n in graph.node}
    if recurrent_node:  # the standard recurrent node, not an unrolled loop
        assert ONNX_OP[cell] in ops, ops
    assert domains <= {"", "ai.onnx"}, domains  # nothing any ONNX runtime lacks


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_onnx_legacy_exporter_dynamic_axes(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    args = _inputs(cell, kwargs, hx, 2, 5)
    names = ["x", "h", "c"][:len(args)]
    x_axes = {0: "batch", 1: "time"} if kwargs.get("batch_first") else {0: "time", 1: "batch"}
    axes = {"x": x_axes, **{n: {1: "batch"} for n in names[1:]}}
    buffer = io.BytesIO()
    torch.onnx.export(model, args, buffer, dynamo=False, input_names=names, dynamic_axes=axes)
    _check_onnx(cell, buffer.getvalue())
    args = _inputs(cell, kwargs, hx, 3, 9)
    torch.testing.assert_close(_onnxruntime(buffer.getvalue(), args), reference(*args), **TOL)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS[:3], ids=IDS[:3])
def test_onnx_dynamo_exporter(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    args = _inputs(cell, kwargs, hx, 2, 5)
    program = torch.onnx.export(model, args, dynamo=True, verbose=False)
    proto = program.model_proto.SerializeToString()
    # torch.nn's RNN too reaches this exporter unrolled (it has no aten::rnn_* translation)
    _check_onnx(cell, proto, recurrent_node=cell != "rnn")
    torch.testing.assert_close(_onnxruntime(proto, args), reference(*args), **TOL)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_onnx_dynamo_exporter_dynamic_batch_and_time(cell, kwargs, hx):
    """torch.nn fails here (its forward specializes the sizes); fastrnn's op becomes the
    standard ONNX node (fastrnn.onnx_export)."""
    reference, model = _pair(cell, kwargs)
    args = _inputs(cell, kwargs, hx, 2, 5)
    program = torch.onnx.export(model, args, dynamo=True, verbose=False,
                                dynamic_shapes=_dynamic_shapes(kwargs, args))
    proto = program.model_proto.SerializeToString()
    _check_onnx(cell, proto)
    for b, t in ((3, 9), (1, 17)):
        more = _inputs(cell, kwargs, hx, b, t)
        torch.testing.assert_close(_onnxruntime(proto, more), reference(*more), **TOL)


def _dynamic_shapes(kwargs: dict, args) -> tuple:
    batch, time = Dim("batch"), Dim("time")
    x_dims = {0: batch, 1: time} if kwargs.get("batch_first") else {0: time, 1: batch}
    return (x_dims,) + tuple({1: batch} for _ in args[1:])


def test_import_fastrnn_imports_no_onnx():
    """The ONNX translation (and numba) load only when an export (a kernel) needs them."""
    code = ("import sys, fastrnn; fastrnn.LSTM(2, 3); bad = [n for n in ('onnx', 'onnxruntime', "
            "'onnxscript', 'numba') if n in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_quantize_dynamic_gives_torch_model(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    spec = {nn.LSTM, nn.GRU, nn.Linear}
    q_ref = torch.ao.quantization.quantize_dynamic(reference, spec)
    q_ours = torch.ao.quantization.quantize_dynamic(model, spec)
    assert type(q_ours.head) is type(q_ref.head)
    if cell in ("lstm", "gru"):
        assert type(q_ours.rnn) is type(q_ref.rnn)
    else:  # not in the spec: torch.nn's stays nn.RNN, ours stays fastrnn's
        assert type(q_ref.rnn) is nn.RNN and type(q_ours.rnn) is fastrnn.RNN
    assert type(model.rnn) is type(fastrnn.convert(TORCH[cell](I, H)))  # not inplace: untouched
    args = _inputs(cell, kwargs, hx, 3, 6)
    torch.testing.assert_close(q_ours(*args), q_ref(*args), **TOL)


def _per_sample_grads(model, args):
    """torch.func: vmap(grad) over the batch (Opacus-style per-sample gradients)."""
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}
    batch_dim = 0 if model.rnn.batch_first else 1

    def loss(p, *sample):
        one = [sample[0].unsqueeze(batch_dim)] + [s.unsqueeze(1) for s in sample[1:]]
        return functional_call(model, p, tuple(one)).square().sum()

    dims = (None, batch_dim) + (1,) * (len(args) - 1)
    return vmap(grad(loss), in_dims=dims)(params, *args)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_func_per_sample_grads(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    args = _inputs(cell, kwargs, hx, 3, 5)
    got = _per_sample_grads(model, args)
    batch_dim = 0 if kwargs.get("batch_first") else 1
    for b in range(3):
        one = [args[0].narrow(batch_dim, b, 1)] + [a.narrow(1, b, 1) for a in args[1:]]
        want = torch.autograd.grad(reference(*one).square().sum(), list(reference.parameters()))
        for (name, g), w in zip(got.items(), want):
            torch.testing.assert_close(g[b], w, **TOL, msg=name)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_func_jacrev_and_jvp(cell, kwargs, hx):
    from torch.func import jacrev, jvp

    reference, model = _pair(cell, kwargs)
    args = _inputs(cell, kwargs, hx, 2, 4)
    x, rest = args[0], args[1:]
    torch.testing.assert_close(jacrev(lambda v: model(v, *rest))(x),
                               jacrev(lambda v: reference(v, *rest))(x), **TOL)
    tangent = torch.randn_like(x)
    out, jv = jvp(lambda v: model(v, *rest), (x,), (tangent,))
    # torch.nn's jvp of its fused recurrences is not implemented; double-backward gives J v
    xr = x.clone().requires_grad_()
    y = reference(xr, *rest)
    u = torch.zeros_like(y, requires_grad=True)
    (vjp,) = torch.autograd.grad(y, xr, u, create_graph=True)
    (want,) = torch.autograd.grad(vjp, u, tangent)
    torch.testing.assert_close(out, y.detach(), **TOL)
    torch.testing.assert_close(jv, want, **TOL)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS, ids=IDS)
def test_export_dynamic_batch_and_time(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    args = _inputs(cell, kwargs, hx, 2, 5)
    program = torch.export.export(model, args, dynamic_shapes=_dynamic_shapes(kwargs, args))
    for b, t in ((3, 9), (1, 17)):
        more = _inputs(cell, kwargs, hx, b, t)
        torch.testing.assert_close(program.module()(*more), reference(*more), **TOL)


@pytest.mark.parametrize("cell,kwargs,hx", CONFIGS[:3], ids=IDS[:3])
def test_compile_dynamic_fullgraph_no_recompile(cell, kwargs, hx):
    reference, model = _pair(cell, kwargs)
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=True, fullgraph=True)
    args = _inputs(cell, kwargs, hx, 2, 5)
    torch.testing.assert_close(compiled(*args), reference(*args), **TOL)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for b, t in ((3, 9), (4, 17)):
            more = _inputs(cell, kwargs, hx, b, t)
            torch.testing.assert_close(compiled(*more), reference(*more), **TOL)


# ---- the three cells inside a user's own loop ----

CELL_TORCH = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


class CellLoop(nn.Module):
    """A user's decoder loop over a GRU or RNN cell: x (T, B, I) -> (B, 2)."""

    def __init__(self, cell: str):
        super().__init__()
        self.cell = CELL_TORCH[cell](I, H)
        self.head = nn.Linear(H, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.zeros(x.size(1), self.cell.hidden_size, dtype=x.dtype)
        for t in range(x.size(0)):
            h = self.cell(x[t], h)
        return self.head(h)


class LSTMCellLoop(CellLoop):
    def forward(self, x: Tensor) -> Tensor:
        h = torch.zeros(x.size(1), self.cell.hidden_size, dtype=x.dtype)
        c = torch.zeros(x.size(1), self.cell.hidden_size, dtype=x.dtype)
        for t in range(x.size(0)):
            h, c = self.cell(x[t], (h, c))
        return self.head(h)


CELLS = ["lstm", "gru", "rnn"]


def _cell_pair(cell: str):
    torch.manual_seed(0)
    cls = LSTMCellLoop if cell == "lstm" else CellLoop
    reference, model = cls(cell).eval(), cls(cell).eval()
    model.load_state_dict(reference.state_dict())
    return reference, fastrnn.convert(model)


def _cell_input(batch: int, steps: int, seed: int = 1) -> Tensor:
    return torch.randn(steps, batch, I, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cell", CELLS)
def test_cell_loop_script_and_trace_save_load(cell):
    reference, model = _cell_pair(cell)
    scripted = _reload(torch.jit.script(model))
    x = _cell_input(3, 6)
    torch.testing.assert_close(scripted(x), reference(x), **TOL)
    _, model = _cell_pair(cell)
    traced = _reload(torch.jit.trace(model, _cell_input(2, 6)))
    assert "fastrnn::" not in str(traced.inlined_graph)
    torch.testing.assert_close(traced(x), reference(x), **TOL)  # same T: the trace unrolls


@pytest.mark.parametrize("cell", CELLS)
def test_cell_loop_onnx_legacy(cell):
    reference, model = _cell_pair(cell)
    buffer = io.BytesIO()
    torch.onnx.export(model, (_cell_input(2, 4),), buffer, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {1: "batch"}})
    domains = {n.domain for n in onnx.load_from_string(buffer.getvalue()).graph.node}
    assert domains <= {"", "ai.onnx"}, domains
    x = _cell_input(3, 4)
    torch.testing.assert_close(_onnxruntime(buffer.getvalue(), (x,)), reference(x), **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_loop_func_transforms(cell):
    from torch.func import functional_call, grad, jacrev, jvp, vmap

    reference, model = _cell_pair(cell)
    x = _cell_input(3, 4)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, sample):
        return functional_call(model, p, (sample.unsqueeze(1),)).square().sum()

    got = vmap(grad(loss), in_dims=(None, 1))(params, x)
    for b in range(3):
        want = torch.autograd.grad(reference(x[:, b:b + 1]).square().sum(),
                                   list(reference.parameters()))
        for (name, g), w in zip(got.items(), want):
            torch.testing.assert_close(g[b], w, **TOL, msg=name)
    torch.testing.assert_close(jacrev(model)(x), jacrev(reference)(x), **TOL)
    tangent = torch.randn_like(x)
    torch.testing.assert_close(jvp(model, (x,), (tangent,))[1],
                               jvp(reference, (x,), (tangent,))[1], **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_loop_quantize_dynamic(cell):
    reference, model = _cell_pair(cell)
    spec = {nn.LSTMCell, nn.GRUCell, nn.RNNCell, nn.Linear}
    q_ref = torch.ao.quantization.quantize_dynamic(reference, spec)
    q_ours = torch.ao.quantization.quantize_dynamic(model, spec)
    assert type(q_ours.cell) is type(q_ref.cell) and type(q_ours.head) is type(q_ref.head)
    x = _cell_input(3, 5)
    torch.testing.assert_close(q_ours(x), q_ref(x), **TOL)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_loop_compile_dynamic_batch(cell):
    reference, model = _cell_pair(cell)
    torch._dynamo.reset()
    compiled = torch.compile(model, dynamic=True, fullgraph=True)
    torch.testing.assert_close(compiled(_cell_input(2, 4)), reference(_cell_input(2, 4)), **TOL)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in (3, 7):  # the loop unrolls over T, so only the batch stays symbolic
            x = _cell_input(batch, 4)
            torch.testing.assert_close(compiled(x), reference(x), **TOL)
