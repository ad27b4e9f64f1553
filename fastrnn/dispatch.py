"""Backend choice: the auto order, explicit choices (argument or FASTRNN_BACKEND), and the
reasons a backend cannot run an input. An explicit choice never falls back silently."""
from __future__ import annotations

import functools
import importlib
import os

import torch

from fastrnn.backends.problem import Problem

BACKENDS = ("reference", "numba", "triton", "cuda")
CHOICES = ("auto",) + BACKENDS
ENV_VAR = "FASTRNN_BACKEND"

# Fastest first, per device type. On CUDA the compiled kernels come first, then Triton.
# On the CPU numba's fused loop beats the reference's per-step torch ops everywhere (see
# README, "CPU results"); triton runs on the CPU only under TRITON_INTERPRET=1, a test mode.
AUTO_ORDER = {
    "cuda": ("cuda", "triton", "reference"),
    "cpu": ("numba", "reference"),
}
_MODULES = {"reference": "fastrnn.reference", "numba": "fastrnn.backends.numba",
            "triton": "fastrnn.backends.triton", "cuda": "fastrnn.backends.cuda"}


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run the given input here."""


def check_backend_name(backend: str, argument: str = "backend") -> str:
    """Validate a backend name; raises ValueError naming the argument and the choices."""
    if not isinstance(backend, str) or backend not in CHOICES:
        raise ValueError(f"{argument} must be one of {list(CHOICES)}, got {backend!r}")
    return backend


def load_backend(name: str):
    """Import and return the backend module ``name`` (lazily: heavy imports happen here)."""
    return importlib.import_module(_MODULES[check_backend_name(name)])


def unsupported_reasons(name: str, problem: Problem) -> list[str]:
    """Why backend ``name`` cannot run ``problem`` (empty list: it can)."""
    try:
        module = load_backend(name)
    except Exception as exc:  # a broken optional install must not break the other backends
        return [f"{name}: failed to import ({type(exc).__name__}: {exc})"]
    return list(module.unsupported_reasons(problem))


def requested_backend(module_choice: str) -> str:
    """The effective request: the module's explicit choice, else FASTRNN_BACKEND, else 'auto'."""
    if module_choice != "auto":
        return module_choice
    env = os.environ.get(ENV_VAR, "").strip()
    return check_backend_name(env, argument=f"environment variable {ENV_VAR}") if env else "auto"


@torch.compiler.assume_constant_result
def _choose_traced(request: str, cell: str, device: str, dtype: torch.dtype, seq_len: int,
                   batch: int, hidden: int, proj: int, has_lengths: bool) -> str:
    # Plain arguments: under torch.compile the choice is made once at trace time.
    return _choose(request, Problem(cell, torch.device(device), dtype, seq_len, batch, hidden,
                                    proj, has_lengths))


@functools.lru_cache(maxsize=4096)
def _choose(request: str, problem: Problem) -> str:
    if request != "auto":
        reasons = unsupported_reasons(request, problem)
        if reasons:
            raise BackendUnavailableError(
                f"fastrnn backend {request!r} was requested but cannot run this input "
                f"({problem.cell}, {problem.dtype}, device {problem.device}, T={problem.seq_len}, "
                f"B={problem.batch}, H={problem.hidden}): " + "; ".join(reasons))
        return request
    order = AUTO_ORDER.get(problem.device.type, ("reference",))
    for name in order:
        if not unsupported_reasons(name, problem):
            return name
    reasons = {name: unsupported_reasons(name, problem) for name in order}
    raise BackendUnavailableError(f"no fastrnn backend can run this input: {reasons}")


def choose_backend(module_choice: str, problem: Problem) -> str:
    """Name of the backend that runs ``problem``: explicit (checked) or the first in auto order."""
    request = requested_backend(module_choice)
    if torch.compiler.is_compiling():
        p = problem
        return _choose_traced(request, p.cell, str(p.device), p.dtype, p.seq_len, p.batch,
                              p.hidden, p.proj, p.has_lengths)
    return _choose(request, problem)


def available_backends(device: str | torch.device | None = None) -> dict[str, list[str]]:
    """For each backend, the reasons it cannot run a float32 LSTM on ``device`` (empty = available).

    ``device`` defaults to CUDA when present, else the CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    problem = Problem("lstm", torch.device(device), torch.float32, 8, 4, 32, 0, False)
    return {name: unsupported_reasons(name, problem) for name in BACKENDS}
