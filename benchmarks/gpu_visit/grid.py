"""Stage worker: the timed benchmark grid, each provider against torch.nn (cuDNN) in one run.

``python -m gpu_visit.grid [--dry-run] [--providers fastrnn-cuda,fastrnn-triton] ...``.
For each dtype setting (fp32 with TF32 on, bf16, fp16, fp32 with TF32 off), named shape and
cell: one forward of every provider is first checked against torch.nn in float64 on the
same device (relative error at most twice torch.nn's own in that dtype, plus one rounding
step: a correctness record per provider), then forward (no_grad) and training
(forward+backward) are timed: torch.nn and every provider alternate in rounds
(``fastrnn.benchmarking._median_ms_in_rounds``: warm-up, CUDA synchronized, medians).
Shapes and providers come from ``fastrnn.benchmarking`` and ``benchmarks/providers.py``.
Settings run in the order above, so a stage stopped at its budget loses whole settings last.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

import fastrnn
import providers
from providers import tf32_mode
from fastrnn.benchmarking import GPU_GRID, SHAPES, _median_ms_in_rounds
from fastrnn.dispatch import BackendUnavailableError
from gpu_visit import evidence, stages

DTYPE_NAMES = ("float32", "float16", "bfloat16")
SETTINGS = [("float32", True), ("bfloat16", False), ("float16", False), ("float32", False)]
PROVIDER_BACKEND = {"fastrnn-cuda": "cuda", "fastrnn-triton": "triton", "flashrnn": "flashrnn"}
# Above this many ms for one call of the slowest contender, time fewer rounds.
SLOW_CALL_MS = 100.0


def _sync():
    if providers.DEVICE == "cuda":
        torch.cuda.synchronize()


def build_all(names, cell, shape, dtype, log):
    """torch.nn's module and each provider's, all with torch.nn's weights; a provider that
    cannot run here is logged with its reasons and left out (no record: nothing was run)."""
    torch.manual_seed(0)
    base = providers.build("torch", cell, shape, dtype)
    built = {}
    for name in names:
        if name.startswith("fastrnn-"):
            reasons = fastrnn.available_backends(providers.DEVICE).get(name[8:])
            if reasons is None or reasons:
                log(f"  {name}: skipped: {'; '.join(reasons or ['no such backend'])}")
                continue
        torch.manual_seed(0)  # FlashRNN's wrapper derives its weights from a torch.nn twin
        module = providers.build(name, cell, shape, dtype)
        if isinstance(module, str):
            log(f"  {name}: skipped: {module}")
            continue
        if isinstance(module, torch.nn.RNNBase):
            module.load_state_dict(base.state_dict())
        built[name] = module
    return base, built


def _rel_err(y, exact) -> float:
    return ((y.double() - exact).norm() / exact.norm().clamp_min(1e-300)).item()


def forward_check(base, built, cell, shape, dtype, x):
    """(passed, detail) per provider: its forward output against torch.nn in float64."""
    oracle = providers.build("torch", cell, shape, torch.float64)
    oracle.load_state_dict({k: v.double() for k, v in base.state_dict().items()})
    with torch.no_grad():
        exact = oracle(x.double())[0]
        theirs = _rel_err(base(x)[0], exact)
        out = {}
        for name, module in built.items():
            try:
                mine = _rel_err(module(x)[0], exact)
            except BackendUnavailableError as exc:  # refuses this dtype or shape: no record
                out[name] = (None, str(exc).splitlines()[0])
                continue
            except Exception as exc:
                out[name] = (False, f"raised {type(exc).__name__}: {exc}"[:600])
                continue
            bound = 2 * theirs + torch.finfo(dtype).eps
            out[name] = (mine <= bound, f"relative error {mine:.3g}, bound {bound:.3g} "
                                        f"(torch.nn's {theirs:.3g})")
    return out


def time_case(base, built, x, mode, repeat, log, block=3):
    """Median ms of torch.nn and of each provider for one mode, alternating in rounds; a
    provider whose first call raises is dropped (logged, and returned among the failures)."""
    inp = x.clone().requires_grad_() if mode == "training" else x

    def call(module):
        if mode == "training":
            return lambda: module(inp)[0].sum().backward()

        def forward():
            with torch.no_grad():
                module(inp)
        return forward
    base_fn = call(base)
    start = time.perf_counter()
    base_fn()  # torch.nn must run: if it cannot, the device is broken and the stage fails
    fns, failures = {}, {}
    for name, module in built.items():  # one probe call each: compiles, and sizes the rounds
        try:
            call(module)()
            _sync()
            fns[name] = call(module)
        except Exception as exc:
            failures[name] = f"{mode} raised {type(exc).__name__}: {exc}"[:600]
            log(f"  {name}: {failures[name]}")
    _sync()
    probe_ms = (time.perf_counter() - start) * 1e3
    slow = probe_ms > SLOW_CALL_MS * (1 + len(fns))
    rounds = max(2, repeat // 2) if slow else repeat
    times = _median_ms_in_rounds([base_fn] + list(fns.values()), rounds, providers.DEVICE,
                                 block=block)
    return times[0], dict(zip(fns, times[1:])), failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, one round")
    parser.add_argument("--providers", default="fastrnn-cuda,fastrnn-triton")
    parser.add_argument("--shapes", default=None, help="comma-separated names (default: "
                        "design.md's GPU grid; dry run: the smoke shapes)")
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--settings", default=None,
                        help="dtype settings in order (default: fp32+TF32, bf16, fp16, fp32; "
                        "dry run: the first two), e.g. float32+tf32,bfloat16")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per case")
    args = parser.parse_args(argv)
    out = stages.records_path()
    table = providers.SMOKE_SHAPES if args.dry_run else SHAPES
    # The dry run keeps to one shape and two settings: Triton's interpreter takes ~0.1-1 s a call.
    names = args.shapes.split(",") if args.shapes else (["smoke"] if args.dry_run else GPU_GRID)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"--shapes: unknown {unknown}; known: {list(table)}")
    settings = []
    default = SETTINGS[:2] if args.dry_run else SETTINGS
    for item in (args.settings.split(",") if args.settings else
                 [f"{d}{'+tf32' if t else ''}" for d, t in default]):
        dname, _, flag = item.partition("+")
        if dname not in DTYPE_NAMES or flag not in ("", "tf32"):
            raise SystemExit(f"--settings: {item!r} is not DTYPE or DTYPE+tf32")
        settings.append((dname, flag == "tf32"))
    crashed = stages.crashed_backends()
    wanted = [name for name in args.providers.split(",")
              if name.removeprefix("fastrnn-") not in crashed]
    if crashed:
        print(f"left out, they crashed the canary stage: {sorted(crashed)}")
    repeat = 1 if args.dry_run else args.repeat
    print(f"grid on {providers.DEVICE}: providers {wanted}, shapes {names}, settings {settings}")
    for dname, tf32 in settings:
        dtype = getattr(torch, dname)
        for shape_name in names:
            shape = table[shape_name]
            for cell in args.cells.split(","):
                if stages.time_left() <= 0:
                    print("stopping: the stage's time budget is spent")
                    return stages.EXIT_BUDGET
                label = f"{cell} {shape_name} {dname}{' tf32' if tf32 else ''}"
                print(label)
                with tf32_mode(tf32):
                    base, built = build_all(wanted, cell, shape, dtype, print)
                    if not built:
                        continue
                    gen = torch.Generator().manual_seed(1)
                    x = torch.randn(shape[0], shape[1], shape[2], generator=gen).to(
                        providers.DEVICE, dtype)
                    checks = forward_check(base, built, cell, shape, dtype, x)
                    for name, (passed, detail) in checks.items():
                        if passed is None:
                            print(f"  {name}: refused: {detail}")
                            built.pop(name)
                            continue
                        print(f"  {name}: {'ok' if passed else 'FAILED'} {detail}")
                        evidence.append(out, "correctness", dict(
                            backend=PROVIDER_BACKEND[name], cell=evidence.OP_CELL[cell],
                            dtype=dname, check=f"grid-forward[{shape_name}"
                                                f"{',tf32' if tf32 else ''}]",
                            passed=bool(passed), detail=detail))
                        if detail.startswith("raised"):
                            built.pop(name)
                    for mode in ("forward", "training"):
                        if not built:
                            break
                        torch_ms, mine, failed = time_case(base, built, x, mode, repeat,
                                                           print, block=1 if args.dry_run else 3)
                        for name, detail in failed.items():
                            built.pop(name)
                            evidence.append(out, "correctness", dict(
                                backend=PROVIDER_BACKEND[name], cell=evidence.OP_CELL[cell],
                                dtype=dname, check=f"grid-{mode}[{shape_name}"
                                                    f"{',tf32' if tf32 else ''}]",
                                passed=False, detail=detail))
                        for name, ms in mine.items():
                            print(f"  {mode} {name}: {ms:.3f} ms, torch.nn {torch_ms:.3f} ms")
                            evidence.append(out, "results", dict(
                                cell=evidence.OP_CELL[cell], shape=shape_name,
                                dims=list(shape), dtype=dname, tf32=tf32, mode=mode,
                                backend=PROVIDER_BACKEND[name], fastrnn_ms=round(ms, 4),
                                cudnn_ms=round(torch_ms, 4), ratio=round(ms / torch_ms, 4)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
