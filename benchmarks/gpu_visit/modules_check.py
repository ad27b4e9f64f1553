"""Stage worker: drop-in module parity on the device, per backend, cell and dtype.

``python -m gpu_visit.modules_check [--dry-run]``. For each fastrnn GPU backend (``cuda``,
``triton``), module kind and configuration (odd shapes, packed unsorted lengths, two-layer
bidirectional with batch_first, T=B=I=1), the fastrnn module and torch.nn's (cuDNN on CUDA)
run the same rounded weights and input; outputs and the gradients of input, parameters and
initial state are compared with torch.nn in float64 on the CPU, the oracle:

* float64 and float32 (TF32 off): within ``fastrnn.testing.TOLERANCE`` of the oracle;
* float16/bfloat16: error at most twice torch.nn's own error in that dtype, plus one rounding
  step of the type at the tensor's scale (the rule of the backend tests).

One correctness record per (backend, cell, dtype, configuration). A backend that refuses a
dtype (BackendUnavailableError) makes no record; the log says why.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn.dispatch import BackendUnavailableError
from fastrnn.testing import TOLERANCE, flatten_outputs as _flatten
from gpu_visit import evidence, stages

KINDS = {"rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
         "rnn_relu": ("RNN", {"nonlinearity": "relu"}), "lstm": ("LSTM", {}), "gru": ("GRU", {})}
# name: (T, B, I, H, layers, bidirectional, batch_first, lengths or None, with hx)
CONFIGS = {
    "odd": (37, 3, 5, 130, 1, False, False, None, True),
    "packed": (9, 4, 6, 17, 1, False, False, [9, 1, 5, 3], False),
    "deep-bi": (7, 2, 3, 33, 2, True, True, None, True),
    "ones": (1, 1, 1, 5, 1, True, False, [1], False),
}
DRY_CONFIGS = {
    "odd": (5, 3, 4, 6, 1, False, False, None, True),
    "deep-bi-packed": (3, 2, 3, 4, 2, True, True, [3, 1], True),
}
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
DRY_DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def run_module(module, config, x, hx, device):
    """Outputs, then gradients of x, every parameter and hx, of ``sum(out * fixed weights)``."""
    seq_len, batch, _, _, _, _, batch_first, lengths, _ = config
    x = x.to(device).requires_grad_()
    hx = None if hx is None else tuple(h.to(device).requires_grad_() for h in hx)
    inp = x
    if lengths is not None:
        inp = pack_padded_sequence(x, torch.tensor(lengths), batch_first=batch_first,
                                   enforce_sorted=False)
    state = None if hx is None else (hx if len(hx) == 2 else hx[0])
    outs = _flatten(module(inp, state) if state is not None else module(inp))
    gen = torch.Generator().manual_seed(7)
    weights = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(device, o.dtype)
               for o in outs]
    loss = sum((o * w).sum() for o, w in zip(outs, weights))
    names = [f"output {i}" for i in range(len(outs))] + ["grad input"]
    names += [f"grad {n}" for n, _ in module.named_parameters()]
    names += [f"grad hx {i}" for i in range(len(hx or ()))]
    wrt = [x] + list(module.parameters()) + (list(hx) if hx is not None else [])
    grads = torch.autograd.grad(loss, wrt)
    return {n: t.detach().double().cpu() for n, t in zip(names, outs + list(grads))}


def _max_err(a, b) -> float:
    return (a - b).abs().max().item() if a.numel() else 0.0


def compare(got, theirs, exact, dtype) -> tuple[bool, str]:
    """Whether fastrnn's tensors ``got`` pass against the float64 ``exact`` (with torch.nn's
    ``theirs`` in the same dtype as the yardstick for half types), and a one-line detail
    naming the tensor furthest over (or nearest to) its bound."""
    worst = None  # (err / bound, name, err, bound, torch.nn's err)
    for name, e in exact.items():
        g, t = got[name], theirs[name]
        err, err_theirs = _max_err(g, e), _max_err(t, e)
        scale = e.abs().max().item() if e.numel() else 0.0
        if dtype in TOLERANCE:  # allclose's own bound: atol + rtol * |exact|
            tol = TOLERANCE[dtype]
            over = ((g - e).abs() / (tol + tol * e.abs())).max().item() if e.numel() else 0.0
            bound = tol * (1 + scale)
        else:
            bound = 2 * err_theirs + torch.finfo(dtype).eps * scale
            over = err / bound if bound > 0 else (0.0 if err == 0 else float("inf"))
        if worst is None or over > worst[0]:
            worst = (over, name, err, bound, err_theirs)
    over, name, err, bound, err_theirs = worst
    rule = (f"within {TOLERANCE[dtype]:g} of float64" if dtype in TOLERANCE
            else "at most 2x torch.nn's error + eps")
    return over <= 1, (f"{rule}; worst {name}: err {err:.3g}, bound {bound:.3g}, "
                       f"torch.nn {err_theirs:.3g}")


def check(backend, cell, config_name, config, dtype, device):
    """One parity check; returns (passed, detail), or None when the backend refuses."""
    seq_len, batch, features, hidden, layers, bidirectional, batch_first, lengths, with_hx = config
    kind, extra = KINDS[cell]
    kwargs = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, **extra)
    torch.manual_seed(0)
    oracle = getattr(nn, kind)(features, hidden, **kwargs).double()
    # Round the weights and inputs to the dtype once; every side then computes the same function.
    state = {k: v.to(dtype) for k, v in oracle.state_dict().items()}
    oracle.load_state_dict({k: v.double() for k, v in state.items()})
    theirs = getattr(nn, kind)(features, hidden, **kwargs).to(device, dtype)
    theirs.load_state_dict(state)
    fast = getattr(fastrnn, kind)(features, hidden, backend=backend, **kwargs).to(device, dtype)
    fast.load_state_dict(state)
    gen = torch.Generator().manual_seed(1)
    shape = (batch, seq_len, features) if batch_first else (seq_len, batch, features)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)
    hx = None
    if with_hx:
        n = layers * (2 if bidirectional else 1)
        hx = tuple(torch.randn(n, batch, hidden, generator=gen, dtype=torch.float64).to(dtype)
                   for _ in range(2 if cell == "lstm" else 1))
    exact = run_module(oracle, config, x.double(), None if hx is None else
                       tuple(h.double() for h in hx), "cpu")
    ref = run_module(theirs, config, x, hx, device)
    try:
        got = run_module(fast, config, x, hx, device)
    except BackendUnavailableError as exc:
        return None, str(exc).splitlines()[0]
    return compare(got, ref, exact, dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny configurations")
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    configs = DRY_CONFIGS if args.dry_run else CONFIGS
    dtypes = DRY_DTYPES if args.dry_run else DTYPES
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    out = stages.records_path()
    counts = {True: 0, False: 0}
    for backend in ("cuda", "triton"):
        if backend in stages.crashed_backends():
            print(f"{backend}: left out, it crashed the canary stage")
            continue
        reasons = fastrnn.available_backends(device).get(backend)
        if reasons:
            print(f"{backend}: skipped, it cannot run here: {'; '.join(reasons)}")
            continue
        for dtype in dtypes:
            for cell in KINDS:
                for name, config in configs.items():
                    if stages.time_left() <= 0:
                        print("stopping: the stage's time budget is spent")
                        return stages.EXIT_BUDGET
                    dname = str(dtype).replace("torch.", "")
                    try:
                        passed, detail = check(backend, cell, name, config, dtype, device)
                    except Exception as exc:  # record the failure, go on with the next case
                        passed, detail = False, f"raised {type(exc).__name__}: {exc}"[:600]
                    if passed is None:
                        print(f"{backend} {cell} {dname} {name}: refused ({detail})")
                        continue
                    counts[bool(passed)] += 1
                    print(f"{backend} {cell} {dname} {name}: {'ok' if passed else 'FAILED'} "
                          f"{detail}")
                    evidence.append(out, "correctness", dict(
                        backend=backend, cell=cell, dtype=dname, check=f"module-parity[{name}]",
                        passed=bool(passed), detail=detail))
    # The stage ran every check; their failures are in the records, not in the exit status.
    print(f"module parity: {counts[True]} passed, {counts[False]} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
