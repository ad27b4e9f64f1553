"""A pytest plugin (``-p gpu_visit.records_plugin``) that selects the GPU tests of the backend
files and turns each outcome into a correctness record (backend, cell, dtype, check, passed).

``GPU_VISIT_SELECT`` chooses the selection: ``gpu`` (every test that exercises a GPU kernel)
or ``dry`` (a handful of the same tests, cheap under Triton's interpreter). Backend, cell and
dtype come from the test's parameters; where a test takes none, from the tables below (its
inputs are ``recurrence_inputs``' float64 default). A test whose cell cannot be told is
recorded for every cell, so that its failure blocks them all. Skipped tests make no record
(nothing was checked) but are listed at the end of the log with their reasons.
"""
from __future__ import annotations

import os

import pytest

from gpu_visit import evidence, stages

FILE_BACKEND = {"test_backend_cuda.py": "cuda", "test_backend_triton.py": "triton"}
FILES = ("test_gradcheck.py", "test_backend_cuda.py", "test_backend_triton.py")
# Tests that check one cell without taking it as a parameter.
CELL_OF_TEST = {"test_gpu_errors_name_the_argument": "lstm",
                "test_gpu_empty_sequence_and_batch": "lstm",
                "test_without_workspace_and_without_gru_bias": "gru",
                "test_outputs_are_fresh_tensors": "lstm"}
# Triton tests that run CPU modules, the interpreter or an offline compile: nothing on a GPU.
NOT_ON_GPU = {"test_module_parity_float64", "test_lstm_projection_is_refused_by_name",
              "test_cpu_needs_the_interpreter", "test_kernels_compile_for_sm90_without_a_gpu",
              "test_reasons"}


def _params(item) -> dict:
    callspec = getattr(item, "callspec", None)
    return dict(callspec.params) if callspec is not None else {}


def _dtype_name(value) -> str:
    return str(value).replace("torch.", "")


def _find(params: dict, test):
    """The first parameter value, or element of a tuple-valued parameter, passing ``test``
    (tests pack cell and shape into one ``case`` tuple as often as they name them)."""
    for value in params.values():
        for candidate in (value, *(value if isinstance(value, (tuple, list)) else ())):
            if test(candidate):
                return candidate
    return None


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, int) for v in value)


def cell_of(params: dict) -> str | None:
    return _find(params, lambda v: isinstance(v, str) and v in evidence.CELLS)


def selected(file: str, name: str, params: dict, mode: str) -> bool:
    """Whether test ``name`` (its function name) of ``file`` runs in selection ``mode``."""
    if file == "test_gradcheck.py":
        if params.get("backend") not in ("cuda", "triton"):
            return False
        if mode == "dry":  # gradcheck under the interpreter takes 10-60 s a case: one case
            return (name == "test_gradcheck" and not params.get("proj")
                    and cell_of(params) == "rnn_tanh"
                    and not any(params.get("packed_reverse") or ()))
        return True
    if file == "test_backend_cuda.py":
        return name.startswith("test_gpu_")
    if file == "test_backend_triton.py":
        if name in NOT_ON_GPU:
            return False
        if mode == "dry":  # the smallest shape in float64, forward; one half-precision case
            if name == "test_matches_reference":
                return (_find(params, _is_shape) == (1, 1, 5) and not params.get("reverse")
                        and _dtype_name(params.get("dtype")) == "float64")
            return name == "test_half_precision_within_twice_torchs_own_error" and \
                cell_of(params) == "gru" and _dtype_name(params.get("dtype")) == "bfloat16"
        return True
    return False


def describe(file: str, name: str, params: dict) -> tuple[str, list[str], str]:
    """(backend, cells, dtype) a test's outcome speaks for."""
    backend = params.get("backend") or FILE_BACKEND[file]
    cell = cell_of(params) or CELL_OF_TEST.get(name)
    cells = [cell] if cell else list(evidence.CELLS)
    if "dtype" in params:
        dtype = _dtype_name(params["dtype"])
    elif "fp32" in name:
        dtype = "float32"
    else:
        dtype = "float64"
    return backend, cells, dtype


class Recorder:
    def __init__(self, mode: str, path: str):
        self.mode, self.path = mode, path
        self.outcomes: dict[str, tuple[str, str]] = {}  # nodeid -> (outcome, detail)
        self.items: dict[str, object] = {}
        self.skips: list[str] = []
        self.broken: list[str] = []  # files that failed to import: none of their tests ran
        self.out_of_time = False

    def pytest_collectreport(self, report):
        if report.failed and report.nodeid.split("/")[-1] in FILES:
            self.broken.append(report.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        keep, drop = [], []
        crashed = stages.crashed_backends()  # their canary records already say why
        for item in items:
            name = getattr(item, "originalname", None) or item.name.split("[")[0]
            params = _params(item)
            if selected(item.path.name, name, params, self.mode) and \
                    describe(item.path.name, name, params)[0] not in crashed:
                keep.append(item)
                self.items[item.nodeid] = item
            else:
                drop.append(item)
        items[:] = keep
        config.hook.pytest_deselected(items=drop)

    def pytest_runtest_logreport(self, report):
        if report.nodeid not in self.items:
            return
        if report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
                report.longrepr)
            self.skips.append(f"{report.nodeid}: {reason}")
            self.outcomes[report.nodeid] = ("skipped", reason)
        elif report.failed:
            text = str(report.longrepr)
            self.outcomes.setdefault(report.nodeid, ("failed",
                                                     f"{report.when} failed: {text[-600:]}"))
        elif report.when == "call":
            self.outcomes[report.nodeid] = ("passed", f"passed in {report.duration:.2f} s")
        if report.when == "teardown":  # the outcome is final: record it now, so that a stage
            self._record(report.nodeid)  # killed at its budget keeps what it checked

    def _record(self, nodeid: str) -> None:
        outcome, detail = self.outcomes.get(nodeid, ("failed", "no outcome was reported"))
        if outcome == "skipped":
            return
        item = self.items[nodeid]
        name = getattr(item, "originalname", None) or item.name.split("[")[0]
        backend, cells, dtype = describe(item.path.name, name, _params(item))
        if len(cells) > 1:
            detail = f"the test names no cell, so it speaks for all: {detail}"
        for cell in cells:
            evidence.append(self.path, "correctness", dict(
                backend=backend, cell=cell, dtype=dtype, check=nodeid,
                passed=outcome == "passed", detail=detail))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        yield
        if stages.time_left() <= 0:  # stop between tests rather than be killed inside one
            item.session.shouldstop = "gpu_visit: the stage's time budget is spent"
            self.out_of_time = True

    def pytest_sessionfinish(self, session):
        for nodeid in self.broken:  # a failing record for all it would have checked
            file = nodeid.split("/")[-1]
            for backend in [FILE_BACKEND[file]] if file in FILE_BACKEND else ["cuda", "triton"]:
                for cell in evidence.CELLS:
                    evidence.append(self.path, "correctness", dict(
                        backend=backend, cell=cell, dtype="float64", check=nodeid,
                        passed=False, detail="the test file failed to import (collection "
                                             "error): none of its checks ran"))
        print(f"\ngpu_visit: {sum(o == 'passed' for o, _ in self.outcomes.values())} passed, "
              f"{sum(o == 'failed' for o, _ in self.outcomes.values())} failed, "
              f"{len(self.skips)} skipped (no record)")
        # Failed tests are findings, recorded above; the stage itself failed only when a
        # file could not be collected (pytest exits 1 for either).
        if self.out_of_time:
            session.exitstatus = stages.EXIT_BUDGET
        elif session.exitstatus == pytest.ExitCode.TESTS_FAILED and not self.broken:
            session.exitstatus = pytest.ExitCode.OK
        reasons: dict[str, int] = {}
        for line in self.skips:
            reason = line.split(": ", 1)[1]
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            print(f"  skipped {count}: {reason}")


def pytest_configure(config):
    mode = os.environ.get("GPU_VISIT_SELECT", "gpu")
    if mode not in ("gpu", "dry"):
        raise pytest.UsageError(f"GPU_VISIT_SELECT must be 'gpu' or 'dry', got {mode!r}")
    path = os.environ.get("GPU_VISIT_RECORDS")
    if not path:
        raise pytest.UsageError("GPU_VISIT_RECORDS must name the records file")
    config.pluginmanager.register(Recorder(mode, path), "gpu_visit_recorder")
