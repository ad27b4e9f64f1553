"""Backend choice: explicit choices (argument or FASTRNN_BACKEND), ``auto``, and the reasons a
backend cannot run an input. An explicit choice never falls back silently: it raises.

Two levels. A module call (``choose_module_backend``) chooses between ``native`` (torch.nn's
own implementation of the whole call) and fastrnn's kernels; ``auto`` takes the kernel only
where this machine class's measurements (``fastrnn.auto``) show it faster. A layer-direction
(``choose_backend``, what ``fastrnn.layer`` runs) chooses among the kernels only.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os

import torch

from fastrnn import auto
from fastrnn.backends.problem import Problem

KERNELS = ("reference", "numba", "triton", "cuda")  # run one layer-direction
BACKENDS = ("native",) + KERNELS
CHOICES = ("auto",) + BACKENDS
ENV_VAR = "FASTRNN_BACKEND"

# A layer-direction asked for 'auto' directly (the functional API) takes the first kernel that
# can run it. Triton runs on the CPU only under TRITON_INTERPRET=1, a test mode.
KERNEL_ORDER = {
    "cuda": ("cuda", "triton", "reference"),
    "cpu": ("numba", "reference"),
}
_MODULES = {"native": "fastrnn.backends.native", "reference": "fastrnn.reference",
            "numba": "fastrnn.backends.numba", "triton": "fastrnn.backends.triton",
            "cuda": "fastrnn.backends.cuda"}


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


def _environment_reader(name: str):
    """A function returning one environment variable's current value in some form that changes
    exactly when the value does (a cache-key part, not the value): ``os.environ``'s own backing
    dict, read with the name encoded once (``os.environ.get`` encodes it on every call, ~0.8 us,
    more than the rest of a cached backend choice); plain ``os.environ.get`` where that dict is
    absent (another Python)."""
    data, encode = getattr(os.environ, "_data", None), getattr(os.environ, "encodekey", None)
    if isinstance(data, dict) and encode is not None:
        key = encode(name)
        return lambda: data.get(key)
    return lambda: os.environ.get(name)


# FASTRNN_BACKEND's state as the per-process choice caches key it (modules, cell_step)
env_backend_token = _environment_reader(ENV_VAR)


def requested_backend(module_choice: str) -> str:
    """The effective request: the module's explicit choice, else FASTRNN_BACKEND, else 'auto'."""
    if module_choice != "auto":
        return module_choice
    env = os.environ.get(ENV_VAR, "").strip()
    return check_backend_name(env, argument=f"environment variable {ENV_VAR}") if env else "auto"


def _explicit(request: str, problem: Problem) -> str:
    reasons = unsupported_reasons(request, problem)
    if reasons:
        raise BackendUnavailableError(
            f"fastrnn backend {request!r} was requested but cannot run this input "
            f"({problem.cell}, {problem.dtype}, device {problem.device}, T={problem.seq_len}, "
            f"B={problem.batch}, H={problem.hidden}): " + "; ".join(reasons))
    return request


@functools.lru_cache(maxsize=4096)
def _choose(request: str, problem: Problem) -> str:
    if request == "native":
        raise ValueError("backend 'native' runs whole modules (fastrnn.LSTM(..., "
                         "backend='native')), not one layer-direction")
    if request != "auto":
        return _explicit(request, problem)
    order = KERNEL_ORDER.get(problem.device.type, ("reference",))
    for name in order:
        if not unsupported_reasons(name, problem):
            return name
    reasons = {name: unsupported_reasons(name, problem) for name in order}
    raise BackendUnavailableError(f"no fastrnn backend can run this input: {reasons}")


def _choose_traced(request: str, cell: str, device: str, dtype: torch.dtype, seq_len: int,
                   batch: int, hidden: int, proj: int, has_lengths: bool) -> str:
    # Plain arguments: under torch.compile the choice is made once at trace time.
    return _choose(request, Problem(cell, torch.device(device), dtype, seq_len, batch, hidden,
                                    proj, has_lengths))


def choose_backend(module_choice: str, problem: Problem) -> str:
    """The kernel that runs one layer-direction ``problem``: the explicit one (checked) or,
    for 'auto', the first of ``KERNEL_ORDER`` that can run it."""
    request = requested_backend(module_choice)
    p = problem
    seq_len, batch = _size_free(p.seq_len), _size_free(p.batch)
    if torch.compiler.is_compiling():
        return _TRACED.get("layer", _choose_traced)(request, p.cell, str(p.device), p.dtype,
                                                    seq_len, batch, p.hidden, p.proj,
                                                    p.has_lengths)
    if (seq_len, batch) != (p.seq_len, p.batch):
        problem = dataclasses.replace(problem, seq_len=seq_len, batch=batch)
    return _choose(request, problem)


def _size_free(size):
    """A concrete stand-in for a symbolic size (torch.export, compile(dynamic=True)): which
    kernel can run a layer-direction never depends on T or B, and a SymInt can be neither
    hashed (the caches) nor passed to an assume_constant_result function. Dynamo shows traced
    code a symbolic size as a plain int, so under dynamo every size counts as symbolic."""
    if isinstance(size, torch.SymInt) or torch.compiler.is_dynamo_compiling():
        return 1
    return size


def auto_decision(problem: Problem, kind: str = "sequence") -> auto.Decision:
    """What ``auto`` runs for a module call ``problem`` (``kind``: 'sequence' for RNN/LSTM/GRU,
    'cell' for the cells), and why."""
    cls = auto.machine_class(problem.device)
    decision = auto.decide(cls, kind, problem.cell, auto.dtype_label(problem.device, problem.dtype),
                           problem.mode, problem.seq_len, problem.batch, problem.hidden,
                           problem.proj)
    if decision.backend != "native" and unsupported_reasons(decision.backend, problem):
        why = "; ".join(unsupported_reasons(decision.backend, problem))
        decision = auto.Decision("native", f"{decision.backend} measured faster but: {why}")
    native_reasons = unsupported_reasons("native", problem)
    if decision.backend == "native" and native_reasons:
        # torch.nn cannot serve this call (e.g. cuDNN's backward in eval mode): the fastest
        # kernel measured on this class, else the first kernel that can run it.
        for name in auto.measured_kernels(cls) + KERNEL_ORDER.get(problem.device.type, ()):
            if not unsupported_reasons(name, problem):
                return auto.Decision(name, "; ".join(native_reasons) + f"; {name} instead")
        raise BackendUnavailableError(f"no backend can run this input: {native_reasons}")
    return decision


def _choose_module(request: str, problem: Problem, kind: str) -> str:
    if request != "auto":
        return _explicit(request, problem)
    return auto_decision(problem, kind).backend


def _choose_module_traced(request: str, cell: str, device: str, dtype: torch.dtype,
                          seq_len: int, batch: int, hidden: int, proj: int, has_lengths: bool,
                          mode: str, module_training: bool, kind: str) -> str:
    # Plain arguments: under torch.compile the choice is made once at trace time.
    return _choose_module(request, Problem(cell, torch.device(device), dtype, seq_len, batch,
                                           hidden, proj, has_lengths, mode, module_training),
                          kind)


_TRACED: dict = {}  # the two choosers as torch.compile sees them (prepare_for_dynamo)


def prepare_for_dynamo() -> None:
    """Wrap the choosers in ``torch.compiler.assume_constant_result``, so that under
    torch.compile a choice is made once at trace time from plain arguments. Called when a
    fastrnn module is made (outside any trace), not at import: the wrapper imports torch._dynamo
    (and triton with it), ~1.5 s that plain eager users never need."""
    if not _TRACED:
        _TRACED["layer"] = torch.compiler.assume_constant_result(_choose_traced)
        _TRACED["module"] = torch.compiler.assume_constant_result(_choose_module_traced)


_module_choices: dict = {}  # call key -> backend name: a process's choices never change
# how many times _module_choices was emptied: a memo of a choice (cell_step, sequence_inference)
# made in the same generation still holds (entries are never removed one by one)
choices_generation = 0


def module_choice_key(module_choice, cell, device, dtype, seq_len, batch, hidden, proj,
                      has_lengths, mode, module_training, kind) -> tuple:
    """The key of a module call's choice in the per-process cache (``choose_module_backend``'s
    arguments and FASTRNN_BACKEND)."""
    return (module_choice, cell, device, dtype, seq_len, batch, hidden, proj, has_lengths, mode,
            module_training, kind, env_backend_token())


def choose_module_backend(module_choice: str, cell: str, device: torch.device,
                          dtype: torch.dtype, seq_len: int, batch: int, hidden: int, proj: int,
                          has_lengths: bool, mode: str, module_training: bool,
                          kind: str = "sequence") -> str:
    """The backend of a whole module call: 'native' (the caller then runs torch.nn's own
    forward) or a kernel name that every layer-direction of the call then uses. ``mode`` is
    'training' when autograd records the call; sizes are the per-layer T, B, H and P;
    ``kind`` is 'sequence' (RNN/LSTM/GRU) or 'cell'. Explicit choices are checked (raise)."""
    if torch.compiler.is_compiling():
        # symbolic sizes reach here only for explicit choices (fastrnn.contexts steers auto
        # then), and checking an explicit choice does not depend on T or B
        return _TRACED.get("module", _choose_module_traced)(
            requested_backend(module_choice), cell, str(device), dtype, _size_free(seq_len),
            _size_free(batch), hidden, proj, has_lengths, mode, module_training, kind)
    key = module_choice_key(module_choice, cell, device, dtype, seq_len, batch, hidden, proj,
                            has_lengths, mode, module_training, kind)
    backend = _module_choices.get(key)
    if backend is None:
        problem = Problem(cell, device, dtype, seq_len, batch, hidden, proj, has_lengths, mode,
                          module_training)
        backend = _choose_module(requested_backend(module_choice), problem, kind)
        if len(_module_choices) >= 65536:  # many distinct lengths: start over, stay bounded
            _forget_module_choices()
        _module_choices[key] = backend
    return backend


def _forget_module_choices() -> None:
    global choices_generation
    _module_choices.clear()
    choices_generation += 1


def clear_caches() -> None:
    """Forget every choice made so far (tests that change tables or the environment)."""
    _forget_module_choices()
    _choose.cache_clear()
    auto.clear_caches()


def available_backends(device: str | torch.device | None = None) -> dict[str, list[str]]:
    """For each backend, the reasons it cannot run a float32 LSTM on ``device`` (empty = available).

    ``device`` defaults to CUDA when present, else the CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    problem = Problem("lstm", torch.device(device), torch.float32, 8, 4, 32, 0, False)
    return {name: unsupported_reasons(name, problem) for name in BACKENDS}
