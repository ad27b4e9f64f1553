"""What a benchmark compares: providers (torch.nn baseline, each fastrnn backend that runs here,
FlashRNN when installed), the shape grid (shared with ``fastrnn bench``), and the metadata
every result carries."""
from __future__ import annotations

import contextlib
import os
import resource

import torch

import fastrnn
from fastrnn.benchmarking import CPU_GRID, GPU_GRID, SHAPES, machine_info

SMOKE = os.environ.get("FASTRNN_BENCH_SMOKE") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# Smoke mode (CI): tiny shapes so the files run in seconds and cannot rot.
SMOKE_SHAPES = {"smoke": (3, 2, 4, 5, 1, False), "smoke-deep": (3, 2, 4, 5, 2, True)}


def shapes() -> dict:
    if SMOKE:
        return SMOKE_SHAPES
    names = GPU_GRID if DEVICE == "cuda" else CPU_GRID
    return {n: SHAPES[n] for n in names}


def dtypes() -> list:
    if SMOKE or DEVICE == "cpu":
        return [torch.float32]
    return [torch.float32, torch.float16, torch.bfloat16]


def tf32_settings(dtype) -> list:
    """cuDNN runs fp32 RNNs in TF32 unless told not to: benchmark both on CUDA."""
    return [True, False] if DEVICE == "cuda" and dtype == torch.float32 else [False]


@contextlib.contextmanager
def tf32_mode(enabled: bool):
    """cuDNN and cuBLAS TF32 switches, as a user sets them (both)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def providers() -> list[str]:
    names = ["torch"]
    report = fastrnn.available_backends(DEVICE)
    for backend, reasons in report.items():
        if backend == "reference" and not SMOKE:
            continue  # a readable Python loop: too slow to time on real shapes
        if not reasons:
            names.append(f"fastrnn-{backend}")
    names += ["fastrnn-auto", "flashrnn"]
    if DEVICE == "cpu":
        names.append("onnxruntime")  # CPU inference baseline: the torch.nn model exported
    return names


def build(provider: str, cell: str, shape, dtype):
    """The module a provider runs for ``cell`` on ``shape``, or a skip reason string."""
    seq_len, batch, features, hidden, layers, bidirectional = shape
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, device=DEVICE, dtype=dtype)
    if provider == "torch":
        return getattr(torch.nn, CELLS[cell])(features, hidden, **kwargs)
    if provider.startswith("fastrnn-"):
        return getattr(fastrnn, CELLS[cell])(features, hidden, backend=provider[8:], **kwargs)
    if provider == "flashrnn":
        try:
            import flashrnn  # noqa: F401  (optional, PyPI `flashrnn`)
        except ImportError as exc:
            return f"flashrnn is not importable ({exc}; pip install flashrnn einops)"
        if layers != 1 or bidirectional:
            return "flashrnn: one unidirectional layer only (FlashRNN has no stacked or " \
                   "bidirectional module, and this wrapper does not build one)"
        twin = getattr(torch.nn, CELLS[cell])(features, hidden, **kwargs)
        return FlashRNNModule(twin, "cuda_fused" if DEVICE == "cuda" else "vanilla")
    if provider == "onnxruntime":
        return OnnxRuntimeModule.build(getattr(torch.nn, CELLS[cell])(features, hidden, **kwargs),
                                       shape, dtype)
    raise ValueError(f"unknown provider {provider!r}")


class OnnxRuntimeModule:
    """torch.nn's module exported to ONNX (legacy exporter: standard LSTM/GRU/RNN nodes) and run
    by onnxruntime on the CPU, inference only: the CPU inference bar of design.md.

    ``__call__(x)``: x (T, B, I) -> (y (T, B, D*H),) as numpy-backed tensors.
    """

    def __init__(self, session):
        self.session = session

    @classmethod
    def build(cls, twin, shape, dtype):
        try:
            import io

            import onnxruntime
        except ImportError as exc:
            return f"onnxruntime is not importable ({exc}; pip install -e '.[bench]')"
        if dtype != torch.float32:
            return "onnxruntime: float32 only here"
        buffer = io.BytesIO()
        x = torch.randn(shape[0], shape[1], shape[2])
        torch.onnx.export(twin.eval(), (x,), buffer, dynamo=False, input_names=["x"])
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads as torch
        return cls(onnxruntime.InferenceSession(buffer.getvalue(), options,
                                                providers=["CPUExecutionProvider"]))

    def __call__(self, x):
        return (torch.from_numpy(self.session.run(None, {"x": x.numpy()})[0]),)


class FlashRNNModule(torch.nn.Module):
    """torch.nn's single-layer RNN/LSTM/GRU computed by FlashRNN (``flashrnn.flashrnn``).

    FlashRNN takes the input projection already done (``Wx``, (B, T, G, heads, H)), the
    recurrent matrix per gate ``R`` (G, heads, H_out, H_in) and the biases ``b`` (G_t, heads,
    H), zero initial states, and returns the states (S, B, T, heads, H). One head spans the
    whole hidden size, as in design.md's FlashRNN anchor. The input GEMM runs in torch here,
    as fastrnn's does. Gate maps from torch.nn (read off FlashRNN's pointwise code):
    LSTM [i, f, g, o] is FlashRNN's [i, f, z, o]; GRU's recurrent gates are [n, r, z] (W_hn
    first), its input gates torch's [r, z, n], its biases [b_hn, b_ir+b_hr, b_iz+b_hz, b_in],
    so b_hn stays inside the r product as in torch; RNN (tanh) is FlashRNN's ``elman``.
    Its CUDA kernels compile on first use for each hidden size, batch and dtype.

    ``forward(x)``: x (T, B, I) -> (y (T, B, H), h_n (1, B, H)), LSTM (y, (h_n, c_n)).
    """

    FUNCTIONS = {"LSTM": "lstm", "GRU": "gru", "RNN": "elman"}

    def __init__(self, twin: torch.nn.RNNBase, backend: str):
        super().__init__()
        if twin.mode == "RNN_RELU":
            raise ValueError("flashrnn has no ReLU RNN (its 'elman' cell is tanh)")
        self.function = self.FUNCTIONS[type(twin).__name__]
        self.backend, self.hidden = backend, twin.hidden_size
        hidden = twin.hidden_size
        w_hh = twin.weight_hh_l0.detach()
        b_ih, b_hh = twin.bias_ih_l0.detach(), twin.bias_hh_l0.detach()
        if self.function == "gru":
            r, z, n = (slice(k * hidden, (k + 1) * hidden) for k in range(3))
            recurrent = torch.cat([w_hh[n], w_hh[r], w_hh[z]])
            bias = torch.cat([b_hh[n], b_ih[r] + b_hh[r], b_ih[z] + b_hh[z], b_ih[n]])
        else:
            recurrent, bias = w_hh, b_ih + b_hh
        self.weight_ih = torch.nn.Parameter(twin.weight_ih_l0.detach().clone())
        self.R = torch.nn.Parameter(recurrent.reshape(-1, 1, hidden, hidden).clone())
        self.b = torch.nn.Parameter(bias.reshape(-1, 1, hidden).clone())

    def forward(self, x):
        from flashrnn import flashrnn

        seq_len, batch, _ = x.shape
        wx = torch.nn.functional.linear(x.transpose(0, 1), self.weight_ih)
        wx = wx.reshape(batch, seq_len, -1, 1, self.hidden)
        states, last = flashrnn(wx, self.R, self.b, function=self.function,
                                backend=self.backend, dtype=str(x.dtype).split(".")[-1])
        y = states[0, :, :, 0].transpose(0, 1)
        h_n = last[0, :, -1, 0].unsqueeze(0)
        if self.function == "lstm":
            return y, (h_n, last[1, :, -1, 0].unsqueeze(0))
        return y, h_n


def peak_memory_reset() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> float:
    """CUDA: max allocated since reset. CPU: the process's max RSS so far (ru_maxrss), which
    only grows: compare CPU figures within one run, in order."""
    if DEVICE == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def extra_info(cell, shape_name, shape, dtype, provider, tf32) -> dict:
    info = machine_info(DEVICE)
    info.update(cell=cell, shape=shape_name, dims=list(shape), dtype=str(dtype).split(".")[-1],
                provider=provider, tf32=tf32, smoke=SMOKE)
    return info
