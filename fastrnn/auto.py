"""What ``backend="auto"`` runs for a kind of call on this kind of machine, read from measured
tables: fastrnn's kernel where a table measured on this machine class shows it faster than
torch.nn's own implementation (the ``native`` backend), native everywhere else.

A table (``fastrnn/tables/auto-<class>.json``, written by ``fastrnn tune``) holds, for one
machine class (``machine_class``: CPU ISA class and thread count, or CUDA architecture),
measured points: cell, dtype, mode, T, B, H, the kernel's and native's median times. A call
takes the measured point nearest to it (log scale in T, B and H, same cell, dtype, mode and
kind; for sequences, T=1 points for T=1 calls only); the kernel runs only if that point's
ratio is below ``WIN_RATIO`` and the call lies within ``REACH`` of the measured range in every
dimension. No table for the class, no point of
the call's cell/dtype/mode, or too far from every point: native (so auto is never slower than
torch.nn where nothing was measured). Lookups are cached per call kind: after the first call
of a kind, the decision costs a dictionary lookup, and it never changes within a process.
"""
from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

SCHEMA = "fastrnn-auto-table/1"
ENV_VAR = "FASTRNN_AUTO_TABLE"  # a table file that replaces the packaged one (tests, tuning)
TABLE_DIR = Path(__file__).parent / "tables"
# A kernel must beat native by this margin at the nearest measured point: timings on small
# shared machines drift by several percent between runs (tables are measured with 3 rounds),
# and anything near a tie goes to torch.nn.
WIN_RATIO = 0.9
# How far (factor, per dimension) a call may lie outside the measured range and still use it.
REACH = 2.0
# RNN_RELU runs the same kernels as RNN_TANH at the same cost: it reads RNN_TANH's points.
_SAME_COST = {"rnn_relu": "rnn_tanh"}


@dataclass(frozen=True)
class Point:
    """One measured call kind: a sequence (``kind='sequence'``, T steps) or a cell step."""

    kind: str
    cell: str
    dtype: str
    mode: str  # 'inference' (no graph recorded) or 'training' (forward + backward)
    T: int
    B: int
    H: int
    backend: str  # the kernel measured against native
    kernel_ms: float
    native_ms: float

    @property
    def ratio(self) -> float:
        return self.kernel_ms / self.native_ms


@dataclass(frozen=True)
class Decision:
    """What auto runs for one call kind, and why (a sentence for ``fastrnn info``)."""

    backend: str
    why: str


def machine_class(device: torch.device) -> str:
    """The class a table is measured on: 'cpu-<isa>-<threads>t' (e.g. cpu-avx2-2t: timings
    depend on the vector ISA and on the threads torch and numba share) or 'cuda-sm_<cc>'."""
    if device.type == "cuda":
        try:
            major, minor = torch.cuda.get_device_capability(device)
        except (AssertionError, RuntimeError):  # no CUDA here: nothing can be measured
            return "cuda-unavailable"
        return f"cuda-sm_{major}{minor}"
    if device.type == "cpu":
        from fastrnn import machine
        return f"cpu-{machine.cpu_isa()}-{torch.get_num_threads()}t"
    return device.type


def table_path(cls: str) -> Path:
    """Where the table of class ``cls`` is read from: FASTRNN_AUTO_TABLE if set, else the
    packaged ``fastrnn/tables/auto-<cls>.json``."""
    override = os.environ.get(ENV_VAR, "").strip()
    return Path(override) if override else TABLE_DIR / f"auto-{cls}.json"


@dataclass(frozen=True)
class Table:
    cls: str
    path: str
    points: tuple[Point, ...]

    def nearest(self, kind: str, cell: str, dtype: str, mode: str, T: int, B: int,
                H: int) -> tuple[Optional[Point], str]:
        """The measured point nearest to a call (None and why when none may stand for it)."""
        cell = _SAME_COST.get(cell, cell)
        # a sequence of one step runs another path than a longer one (the cells' fused step,
        # fastrnn.layer_step, against the time loop), at another fixed cost: T=1 points stand
        # for T=1 calls only, and T>1 calls are read off T>1 points (T=2 calls read off the T=1
        # point lost to torch.nn by up to 2.4x)
        same = [p for p in self.points
                if (p.kind, p.cell, p.dtype, p.mode) == (kind, cell, dtype, mode)
                and (kind != "sequence" or (p.T == 1) == (T == 1))]
        if not same:
            return None, f"no {kind} point for {cell} {dtype} {mode} in {self.path}"
        dims = {"T": T, "B": B, "H": H} if kind == "sequence" else {"B": B, "H": H}
        for name, value in dims.items():
            lo = min(getattr(p, name) for p in same)
            hi = max(getattr(p, name) for p in same)
            if value < lo / REACH or value > hi * REACH:
                return None, (f"{name}={value} is outside the measured range {lo}..{hi} "
                              f"(x{REACH:g}) in {self.path}")

        def distance(p: Point) -> float:
            return sum(math.log(max(v, 1) / max(getattr(p, n), 1)) ** 2 for n, v in dims.items())
        closest = min(distance(p) for p in same)
        # several kernels measured at one point (GPU: cuda and triton): the fastest of them;
        # points at different sizes equally near (a call halfway between grid points): the
        # slowest, so a tie never sends a call to a kernel that lost at one of them
        fastest: dict = {}
        for p in same:
            if distance(p) == closest:
                at = (p.T, p.B, p.H)
                if at not in fastest or p.ratio < fastest[at].ratio:
                    fastest[at] = p
        return max(fastest.values(), key=lambda p: p.ratio), ""


def _parse(path: Path, cls: str) -> Table:
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema must be {SCHEMA!r}, got {data.get('schema')!r}")
    points = tuple(Point(**{k: p[k] for k in Point.__dataclass_fields__}) for p in data["points"])
    return Table(cls, str(path), points)


@functools.lru_cache(maxsize=None)
def load_table(cls: str) -> Optional[Table]:
    """The table of machine class ``cls``, or None when there is none (read once)."""
    path = table_path(cls)
    if not path.exists():
        return None
    return _parse(path, cls)


def dtype_label(device: torch.device, dtype: torch.dtype) -> str:
    """The dtype as tables name it: 'float32', ..., and 'float32-tf32' for CUDA float32 while
    cuDNN may use TF32 (torch.backends.cudnn.allow_tf32, on by default): a different contest."""
    name = str(dtype).split(".")[-1]
    if device.type == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        name += "-tf32"
    return name


@functools.lru_cache(maxsize=4096)
def decide(cls: str, kind: str, cell: str, dtype: str, mode: str, T: int, B: int, H: int,
           proj: int) -> Decision:
    """Auto's choice between native and the measured kernel for one call kind (``dtype`` as
    ``dtype_label`` names it; sizes are the per-layer T, B, H). Only the table decides here;
    whether the kernel or native can run the call at all is checked by ``fastrnn.dispatch``."""
    table = load_table(cls)
    if table is None:
        return Decision("native", f"no measurements for machine class {cls} "
                                  f"({table_path(cls)} does not exist; `fastrnn tune` makes one)")
    if proj:
        return Decision("native", "LSTM proj_size > 0 was not measured")
    point, why = table.nearest(kind, cell, dtype, mode, T, B, H)
    if point is None:
        return Decision("native", why)
    at = (f"nearest measured point {point.kind} {point.cell} T={point.T} B={point.B} "
          f"H={point.H}: {point.backend} {point.kernel_ms:.3g} ms vs native "
          f"{point.native_ms:.3g} ms (ratio {point.ratio:.2f}, {Path(table.path).name})")
    if point.ratio < WIN_RATIO:
        return Decision(point.backend, at)
    return Decision("native", at + f"; a kernel needs a ratio below {WIN_RATIO}")


def clear_caches() -> None:
    """Forget loaded tables and decisions (tests that point FASTRNN_AUTO_TABLE elsewhere)."""
    load_table.cache_clear()
    decide.cache_clear()


def measured_kernels(cls: str) -> tuple[str, ...]:
    """The kernels the table of class ``cls`` measured (each passed the correctness checks on
    that class before it was timed, see ``fastrnn.tuning``), fastest-ratio first."""
    table = load_table(cls)
    if table is None:
        return ()
    best: dict[str, float] = {}
    for p in table.points:
        best[p.backend] = min(best.get(p.backend, math.inf), p.ratio)
    return tuple(sorted(best, key=best.get))
