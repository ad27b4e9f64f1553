"""Python launchers: buffers, block sizes, the scheme choice and the per-step loop (stepwise).

Shapes: T steps, B batch, H hidden, R recurrent width (P with an LSTM projection, else H),
G gates, W workspace slabs. Every output is a fresh tensor that the kernels write completely
(zeros at invalid steps), so ``torch.empty`` is safe.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from fastrnn.cells import cell_spec

from . import interpreter_fix, kernels

# Corrects Triton's interpreter where a probe shows it differs from the GPU; compiled
# kernels never run that code.
interpreter_fix.install()
SCHEMES = ("persistent", "stepwise")
# The stepwise scheme pays a launch per step (~5-10 us on a GPU) but spreads the hidden tiles
# of a step over many SMs; the persistent scheme runs one program per batch tile. Below 4 batch
# tiles with H > 256 the persistent kernel would leave almost the whole GPU idle while each of
# its few programs walks through H/BLOCK_H tiles per step, so the split-H stepwise one wins.
STEPWISE_MIN_HIDDEN = 256
STEPWISE_MAX_BATCH_TILES = 4


def interpreting(device: torch.device) -> bool:
    """True when Triton runs on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


class Config:
    """Compile-time choices for one call: block sizes, dot path, accumulation dtype.

    ``dtype``/``device`` of the tensors, ``batch`` = B, ``hidden`` = H, ``width`` = R (the
    recurrent state's width; None: H). The R columns are tiled with BLOCK_H as well.
    """

    def __init__(self, dtype: torch.dtype, device: torch.device, batch: int, hidden: int,
                 width: int | None = None):
        interp = interpreting(device)
        # tl.dot: fp16/fp32 always; bf16 except under the interpreter, whose numpy tl.dot
        # misreads bfloat16; float64 always takes the broadcast-and-sum path (see step.py).
        self.use_dot = dtype in (torch.float16, torch.float32) or (
            dtype == torch.bfloat16 and not interp)
        self.acc = tl.float64 if dtype == torch.float64 else tl.float32
        self.acc_torch = torch.float64 if dtype == torch.float64 else torch.float32
        # Like cuDNN: TF32 only when the user allows it for cuDNN and the tensors are CUDA.
        self.precision = ("tf32" if dtype == torch.float32 and device.type == "cuda"
                          and torch.backends.cudnn.allow_tf32 else "ieee")
        # tl.dot needs every block >= 16; masks cover B, H that are not multiples.
        self.block_b = 16 if not interp else max(16, min(64, triton.next_power_of_2(batch)))
        if interp:
            # Under the interpreter larger tiles mean fewer numpy calls: that is its only cost.
            self.block_h = max(16, min(64, triton.next_power_of_2(hidden)))
        elif self.use_dot:
            # 32: with 4 warps the LSTM step (4 fp32 accumulators + 4 weight tiles) stays
            # under 255 registers without spills (ptxas for sm_90, Triton 3.9); 64 spills.
            self.block_h = max(16, min(32, triton.next_power_of_2(hidden)))
        else:
            # The broadcast path materialises a (BLOCK_B, BLOCK_K, BLOCK_H) product: keep it
            # at 4096 elements so that a float64 tile does not spill registers wholesale.
            self.block_h = 16
        self.block_k = self.block_h
        self.num_warps = 4
        self.batch_tiles = triton.cdiv(batch, self.block_b)
        self.hidden_tiles = triton.cdiv(hidden, self.block_h)
        self.state_tiles = triton.cdiv(hidden if width is None else width, self.block_h)

    def default_scheme(self, hidden: int) -> str:
        """'stepwise' when H > 256 with fewer than 4 batch tiles, else 'persistent' (a guess
        from launch-latency arithmetic, not yet measured on a GPU)."""
        if hidden > STEPWISE_MIN_HIDDEN and self.batch_tiles < STEPWISE_MAX_BATCH_TILES:
            return "stepwise"
        return "persistent"

    def common(self):
        """Constexprs and launch options every kernel takes."""
        return dict(ACC=self.acc, BLOCK_B=self.block_b, BLOCK_H=self.block_h,
                    num_warps=self.num_warps)

    def product(self):
        """Constexprs of the products (recurrent, projection, and backward phase 1's dm with an
        LSTM projection): every kernel takes them."""
        return dict(BLOCK_K=self.block_k, USE_DOT=self.use_dot, PRECISION=self.precision)


def _scheme(cfg: Config, hidden: int, scheme: str | None) -> str:
    scheme = scheme or os.environ.get("FASTRNN_TRITON_SCHEME") or cfg.default_scheme(hidden)
    if scheme not in SCHEMES:
        raise ValueError(f"triton scheme must be one of {SCHEMES}, got {scheme!r}")
    return scheme


def _lengths(lengths, seq_len, batch, device):
    if lengths is None:
        return torch.full((batch,), seq_len, dtype=torch.int64, device=device)
    return lengths.to(device=device, dtype=torch.int64).contiguous()


def run_forward(cell, xg, w_hh, b_hn, h0, c0, w_hr, lengths, reverse, need_workspace,
                scheme=None):
    """Forward recurrence. xg (T,B,G*H), w_hh (G*H,R), b_hn (H,)|None, h0 (B,R), c0 (B,H)|None,
    w_hr (P,H)|None (LSTM projection, R = P), lengths (B,)|None. Returns y (T,B,R), h_n (B,R),
    c_n (B,H) or empty, ws (T,B,W*H) or empty.
    ``scheme``: 'persistent' | 'stepwise' | None (FASTRNN_TRITON_SCHEME, else the heuristic)."""
    spec = cell_spec(cell)
    seq_len, batch, gates = xg.shape
    hidden = gates // spec.num_gates
    width = h0.shape[1]
    proj = w_hr is not None
    dtype, device = xg.dtype, xg.device
    cfg = Config(dtype, device, batch, hidden, width)
    scheme = _scheme(cfg, hidden, scheme)
    dummy = xg.new_empty(1)  # never dereferenced (its constexpr flag is off)
    y = xg.new_empty((seq_len, batch, width))
    need_ws = bool(need_workspace) and spec.workspace_width > 0
    ws = xg.new_empty((seq_len, batch, spec.workspace_width * hidden)) if need_ws else None
    hbuf = xg.new_empty((2, batch, width))
    hbuf[0].copy_(h0)
    cbuf = (c0.to(cfg.acc_torch, copy=True) if spec.has_cell_state
            else torch.empty(1, dtype=cfg.acc_torch, device=device))
    mbuf = xg.new_empty((batch, hidden)) if proj else dummy
    w_hr_arg = w_hr if proj else dummy
    lens = _lengths(lengths, seq_len, batch, device)
    bias = b_hn if b_hn is not None else dummy
    flags = dict(CELL=spec.code, PROJ=proj, HAS_BHN=b_hn is not None, NEED_WS=need_ws,
                 **cfg.common(), **cfg.product())
    ws_arg = ws if need_ws else dummy
    if seq_len > 0 and batch > 0:
        if scheme == "persistent":
            kernels.forward_persistent[(cfg.batch_tiles,)](
                xg, w_hh, bias, w_hr_arg, lens, y, ws_arg, hbuf, cbuf, mbuf, seq_len, batch,
                hidden, width, REVERSE=bool(reverse), **flags)
        else:
            grid = (cfg.batch_tiles, cfg.hidden_tiles)
            proj_grid = (cfg.batch_tiles, cfg.state_tiles)
            for s in range(seq_len):
                t = seq_len - 1 - s if reverse else s
                kernels.forward_step[grid](xg, w_hh, bias, lens, y, ws_arg, hbuf, cbuf, mbuf, t,
                                           s % 2, batch, hidden, width, **flags)
                if proj:
                    kernels.forward_project[proj_grid](w_hr, lens, y, hbuf, mbuf, t, s % 2,
                                                       batch, hidden, width, **cfg.common(),
                                                       **cfg.product())
    h_n = hbuf[seq_len % 2].clone()
    c_n = cbuf.to(dtype, copy=True) if spec.has_cell_state else xg.new_empty(0)
    return y, h_n, c_n, (ws if need_ws else xg.new_empty(0))


def run_backward(cell, grad_y, grad_hn, grad_cn, w_hh, h0, c0, w_hr, lengths, reverse, y,
                 workspace, scheme=None):
    """Reverse-time loop. grad_y (T,B,R), grad_hn (B,R), grad_cn (B,H) or empty, w_hh (G*H,R),
    w_hr (P,H)|None, y (T,B,R), workspace (T,B,W*H) from forward. Returns d_xg (T,B,G*H),
    d_hn_gru (T,B,H) or empty, d_h_proj (T,B,P) or empty, d_h0 (B,R), d_c0 (B,H) or empty."""
    spec = cell_spec(cell)
    seq_len, batch, width = grad_y.shape
    gates = w_hh.shape[0]
    hidden = gates // spec.num_gates
    proj = w_hr is not None
    dtype, device = grad_y.dtype, grad_y.device
    cfg = Config(dtype, device, batch, hidden, width)
    scheme = _scheme(cfg, hidden, scheme)
    dummy = grad_y.new_empty(1)
    d_xg = grad_y.new_empty((seq_len, batch, gates))
    is_gru = cell == "gru"
    d_hn_gru = grad_y.new_empty((seq_len, batch, hidden)) if is_gru else None
    d_h_proj = grad_y.new_empty((seq_len, batch, width)) if proj else None
    dhbuf = grad_hn.to(cfg.acc_torch, copy=True)
    dcbuf = (grad_cn.to(cfg.acc_torch, copy=True) if spec.has_cell_state
             else torch.empty(1, dtype=cfg.acc_torch, device=device))
    lens = _lengths(lengths, seq_len, batch, device)
    ws = workspace if workspace.numel() else dummy
    c0_arg = c0 if c0 is not None else dummy
    w_hr_arg = w_hr if proj else dummy
    d_hn_arg = d_hn_gru if is_gru else dummy
    d_proj_arg = d_h_proj if proj else dummy
    flags = dict(CELL=spec.code, PROJ=proj, **cfg.common(), **cfg.product())
    if seq_len > 0 and batch > 0:
        if scheme == "persistent":
            kernels.backward_persistent[(cfg.batch_tiles,)](
                grad_y, w_hh, w_hr_arg, h0, c0_arg, lens, y, ws, d_xg, d_hn_arg, d_proj_arg,
                dhbuf, dcbuf, seq_len, batch, hidden, width, REVERSE=bool(reverse), **flags)
        else:
            grid1 = (cfg.batch_tiles, cfg.hidden_tiles)
            grid2 = (cfg.batch_tiles, cfg.state_tiles)
            for s in range(seq_len):
                t = s if reverse else seq_len - 1 - s
                kernels.backward_phase1[grid1](
                    grad_y, w_hh, w_hr_arg, h0, c0_arg, lens, y, ws, d_xg, d_hn_arg, dhbuf,
                    dcbuf, t, seq_len, batch, hidden, width, REVERSE=bool(reverse), **flags)
                kernels.backward_phase2[grid2](
                    grad_y, w_hh, lens, ws, d_xg, d_hn_arg, d_proj_arg, dhbuf, t, batch, hidden,
                    width, **flags)
    d_h0 = dhbuf.to(dtype, copy=True)
    d_c0 = dcbuf.to(dtype, copy=True) if spec.has_cell_state else grad_y.new_empty(0)
    return (d_xg, (d_hn_gru if is_gru else grad_y.new_empty(0)),
            (d_h_proj if proj else grad_y.new_empty(0)), d_h0, d_c0)
