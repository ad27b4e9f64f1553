"""Compile every triton-backend kernel for an NVIDIA target without a GPU; print resources.

Run as a script WITHOUT TRITON_INTERPRET (under the interpreter @triton.jit functions cannot be
compiled): ``python tests/triton_compile_check.py 90``. For each kernel, dtype and cell (and
the LSTM with projection, ``lstm+proj``) it prints ``OK <kernel> <dtype> <cell> REG:<n>
STACK:<bytes>`` (STACK > 0 means register spills) or ``FAIL ...`` with the error, then
``COMPILED <n>`` with the number of OK lines. Block sizes come from the backend's own
``launch.Config`` for a CUDA problem, so this checks what would really run on the GPU. Uses
Triton's ASTSource / triton.compile (3.x API; 3.6 and 3.9 checked) and the cuobjdump shipped in
the Triton wheel.
"""
import os
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from fastrnn.backends.triton import kernels
from fastrnn.backends.triton.launch import Config
from fastrnn.cells import CELLS

DTYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
          torch.float64: "fp64"}
STATE_BUFFERS = ("cbuf", "dhbuf", "dcbuf")  # accumulation dtype
INTS = ("T", "B", "H", "R", "t", "src")
KERNELS = (kernels.forward_persistent, kernels.forward_step, kernels.backward_persistent,
           kernels.backward_phase1, kernels.backward_phase2)
# (cell, with projection, kernels): every cell without, the LSTM also with its projection
VARIANTS = ([(name, False, KERNELS) for name in CELLS]
            + [("lstm", True, KERNELS + (kernels.forward_project,))])


def signature(fn, dtype, cfg, cell, proj):
    acc = "fp64" if dtype == torch.float64 else "fp32"
    flags = dict(CELL=CELLS[cell].code, PROJ=proj, REVERSE=True, HAS_BHN=cell == "gru",
                 NEED_WS=True, ACC=cfg.acc, BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h,
                 BLOCK_K=cfg.block_k, USE_DOT=cfg.use_dot, PRECISION=cfg.precision)
    sig, constexprs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in flags:
            sig[name] = "constexpr"
            constexprs[(i,)] = flags[name]
        elif name in INTS:
            sig[name] = "i32"
        elif name == "lengths":
            sig[name] = "*i64"
        else:
            sig[name] = "*" + (acc if name in STATE_BUFFERS else DTYPES[dtype])
    return sig, constexprs


def resources(cubin: bytes) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                        "cuobjdump")
    if not os.path.exists(tool):
        return "REG:? STACK:?"
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    line = next((ln for ln in out.splitlines() if "REG:" in ln), "REG:? STACK:?")
    return " ".join(line.split()[:2])


def main(arch: int, batch: int = 16, hidden: int = 768, proj: int = 256) -> int:
    target = GPUTarget("cuda", arch, 32)
    failures = compiled = 0
    for dtype in DTYPES:
        for cell, with_proj, fns in VARIANTS:
            cfg = Config(dtype, torch.device("cuda"), batch, hidden,
                         proj if with_proj else None)
            for fn in fns:
                sig, constexprs = signature(fn, dtype, cfg, cell, with_proj)
                label = f"{fn.__name__} {DTYPES[dtype]} {cell}{'+proj' if with_proj else ''}"
                try:
                    kernel = triton.compile(ASTSource(fn=fn, signature=sig,
                                                      constexprs=constexprs),
                                            target=target,
                                            options={"num_warps": cfg.num_warps})
                    print(f"OK {label} {resources(kernel.asm['cubin'])}", flush=True)
                    compiled += 1
                except Exception as exc:  # report every kernel, then fail
                    failures += 1
                    print(f"FAIL {label} {type(exc).__name__}: {exc}", flush=True)
    print(f"COMPILED {compiled}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 90))
