"""The numba matmul in every ISA class this host can run: the class's register tiles (wide and
narrow; the one-row tiles over several panels for the rows short of a tile), the plain kernels
for the rows and columns they leave, both entry points (b in place; b packed, also from a
transposed view), float32 and float64, a transposed ``a``, k over several of the tiles' k
blocks.

Each class runs in its own process (``FASTRNN_CPU_ISA`` picks the class at import, and numba
then compiles for it), this file being that process's script; CI on an AVX2 box runs the
generic and AVX2 classes, on an AVX-512 box all three. The process also reports whether its
compiled code uses zmm / ymm registers: the AVX2 class must never touch zmm."""
import json
import os
import subprocess
import sys

import pytest

numba = pytest.importorskip("numba")

from fastrnn import machine  # noqa: E402

CLASSES = ("generic", "avx2", "avx512")


def _sweep() -> dict:
    """Run in the child process: every case against float64 numpy; returns what the parent
    asserts on."""
    import numpy as np

    from fastrnn.backends.numba import matmul as mm
    from fastrnn.backends.numba import vector_tile as vt

    failures, kinds_seen = [], set()
    for dtype in ("float32", "float64"):
        size = np.dtype(dtype).itemsize
        lane = vt.lanes(size)
        wide, narrow = vt.VECTORS[0] * lane, vt.VECTORS[1] * lane
        # n: one column; fewer than a narrow tile; exactly one narrow tile; wide tiles (n >=
        # WIDE) then a narrow one then leftover columns; several plain-kernel panels (> PANEL).
        n_big = max(vt.WIDE, 2 * wide) + narrow + 3
        n_values = [1, narrow - 1, narrow, n_big, mm.PANEL + 70]
        for n in n_values:
            kinds_seen.update(int(k) for k in mm._panels(n, size)[:, 2])
        # k: 1; not a multiple of 4; several k blocks of DEPTH with a short last one
        k_values = [1, 7, 2 * vt.DEPTH + 37]
        rows_values = sorted({1, 3, vt.ROWS, vt.ROWS + 1, 2 * vt.ROWS + 3, 13})
        rng = np.random.default_rng(7)
        # the rows short of a whole tile take one-row tiles of 8, 4, 2 and 1 panels (in place:
        # narrow panels over the whole row; packed: runs of wide, then narrow panels): n with
        # 15 narrow panels, and with 3 wide panels then a narrow one, covers every span
        span_n = [15 * narrow + 5, 3 * wide + narrow + 5]
        cases = [(n, k, rows) for n in n_values for k in k_values for rows in rows_values]
        cases += [(n, k, rows) for n in span_n for k in k_values[1:]
                  for rows in sorted({1, vt.ROWS - 1, vt.ROWS + 1} - {0})]
        for n, k, rows in cases:
            for transposed in (False, True):
                a = rng.standard_normal((k, rows) if transposed else (rows, k))
                a = (a.T if transposed else a).astype(dtype)
                b = rng.standard_normal((k, n)).astype(dtype)
                want = a.astype(np.float64) @ b.astype(np.float64)
                tol = 1e-4 if dtype == "float32" else 1e-12
                for entry in ("in place", "packed", "packed from a transpose"):
                    out = np.full((rows, n), np.nan, dtype=dtype)
                    if entry == "in place":
                        mm.matmul(a, b, out)
                    elif entry == "packed":
                        mm.matmul_packed(a, mm.pack_b(b), out)
                    else:  # b = w.T, w's rows contiguous (W_hh^T): transpose.py's blocks
                        mm.matmul_packed(a, mm.pack_b(np.ascontiguousarray(b.T).T), out)
                    if not np.allclose(out, want, rtol=tol, atol=tol * np.sqrt(k)):
                        err = float(np.nanmax(np.abs(out - want)))
                        failures.append(f"{entry} {dtype} rows={rows} k={k} n={n} "
                                        f"transposed={transposed}: max error {err}")
    # transpose_into alone: whole register blocks, the edges, rows of dst further apart
    from numba import njit

    from fastrnn.backends.numba.transpose import transpose_into

    @njit
    def transpose(src, dst):
        transpose_into(src, dst)
    for dtype in ("float32", "float64"):
        for n, k in ((1, 1), (7, 9), (17, 33), (256, 64), (40, 24), (3, 100)):
            src = rng.standard_normal((n, k)).astype(dtype)
            room = np.full((k, n + 5), np.nan, dtype=dtype)
            for dst in (np.full((k, n), np.nan, dtype=dtype), room[:, :n]):
                transpose(src, dst)
                if not (dst == src.T).all():
                    failures.append(f"transpose_into {dtype} ({n}, {k}), dst row stride "
                                    f"{dst.strides[0] // dst.itemsize}")
    # b with strided rows: no tiles (they need contiguous rows), all on the plain kernels
    rng = np.random.default_rng(8)
    a = rng.standard_normal((2 * vt.ROWS, 50)).astype(np.float32)
    b = rng.standard_normal((50, 2 * (vt.WIDE + 100))).astype(np.float32)[:, ::2]
    out = np.full((a.shape[0], b.shape[1]), np.nan, dtype=np.float32)
    mm.matmul(a, b, out)
    if not np.allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4 * np.sqrt(50)):
        failures.append("in place, b with strided rows")
    try:
        mm.matmul_packed(a, np.zeros(7, np.float32), out)
        failures.append("matmul_packed_into accepted a packed b of the wrong size")
    except ValueError:
        pass
    asm = "".join(text for f in (mm.matmul, mm.matmul_packed, mm.pack_b)
                  for text in f.inspect_asm().values())
    return {"isa": machine.cpu_isa(), "shape": vt.ACTIVE, "rows": vt.ROWS,
            "failures": failures, "kinds": sorted(kinds_seen),
            "zmm": "zmm" in asm, "ymm": "ymm" in asm}


@pytest.mark.parametrize("isa", CLASSES)
def test_matmul_in_each_isa_class(isa, tmp_path):
    """Every tile kind of the class, and the plain kernels, against float64 numpy; the class's
    tiles really are the ones that ran, and no wider registers than the class allows."""
    if CLASSES.index(isa) > CLASSES.index(machine.host_isa()):
        pytest.skip(f"host ISA class is {machine.host_isa()}: cannot run {isa} code")
    # an empty numba cache: kernels loaded from a warm cache carry no assembly to inspect
    env = dict(os.environ, FASTRNN_CPU_ISA=isa, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["isa"] == isa
    assert got["failures"] == []
    from fastrnn.backends.numba.vector_tile import SHAPES
    expected = SHAPES[isa]
    assert (got["shape"] is None) == (expected is None)
    if expected is None:
        assert got["kinds"] == [0]  # everything on the plain kernels
        assert not got["ymm"] and not got["zmm"]  # generic: x86-64 baseline (SSE) code
    else:
        assert got["rows"] == expected.rows
        assert got["kinds"] == [0, 1, 2]  # wide and narrow tiles and leftover columns all ran
        assert got["zmm"] == (expected.bits == 512)
        assert got["ymm"]


if __name__ == "__main__":
    print(json.dumps(_sweep()))
