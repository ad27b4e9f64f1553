"""csrc's ``CellKind`` (csrc/params.h) numbers the cells as ``fastrnn.cells`` does.

The kernels receive a cell as that integer (the emulation through ctypes, the extension through
the host dispatch), so an enumerator out of order would run one cell's math for another.
The values come from a tiny program compiled against params.h, not from reading the source.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fastrnn.cells import CELLS
from test_backend_cuda import ROOT, _cuda_include


def _enumerator(cell: str) -> str:
    """The C++ enumerator of a cell name: rnn_tanh -> RnnTanh."""
    return "".join(part.capitalize() for part in cell.split("_"))


def test_cell_kind_enumerators_are_the_python_cells():
    source = (ROOT / "csrc" / "params.h").read_text()
    body = re.search(r"enum class CellKind\s*:\s*int\s*\{([^}]*)\}", source)
    assert body, "csrc/params.h: no `enum class CellKind : int { ... }`"
    names = {re.match(r"\s*(\w+)", item).group(1) for item in body.group(1).split(",")
             if item.strip()}
    assert names == {_enumerator(c) for c in CELLS}, (names, sorted(CELLS))


def test_cell_kind_values_equal_cell_spec_codes(tmp_path):
    include, compiler = _cuda_include(), shutil.which("g++")
    if include is None or compiler is None:
        pytest.skip("needs g++ and the CUDA headers (params.h includes cuda_runtime_api.h)")
    lines = "".join(f'  std::printf("{name} %d\\n", static_cast<int>(fastrnn::CellKind::'
                    f'{_enumerator(name)}));\n' for name in CELLS)
    program = tmp_path / "cell_kinds.cpp"
    program.write_text(f'#include <cstdio>\n#include "params.h"\nint main() {{\n{lines}}}\n')
    exe = tmp_path / "cell_kinds"
    subprocess.run([compiler, "-std=c++20", "-isystem", str(include), "-I",
                    str(ROOT / "csrc"), str(program), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {name: int(value) for name, value in (line.split() for line in out.splitlines())}
    assert got == {name: spec.code for name, spec in CELLS.items()}
