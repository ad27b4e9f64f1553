"""Backend choice: explicit choices never fall back, FASTRNN_BACKEND, the native backend, and
auto read from measured per-class tables (fastrnn.auto)."""
import json

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from fastrnn import auto, dispatch
from fastrnn.backends.problem import Problem
from fastrnn.dispatch import BACKENDS, BackendUnavailableError, auto_decision, choose_backend


def _problem(device="cpu", dtype=torch.float32, cell="lstm", T=4, B=2, H=8, mode="inference",
             training=True):
    return Problem(cell, torch.device(device), dtype, T, B, H, 0, False, mode, training)


@pytest.fixture(autouse=True)
def _fresh_choices():
    dispatch.clear_caches()
    yield
    dispatch.clear_caches()


def _point(cell="lstm", mode="inference", T=100, B=16, H=128, kernel_ms=1.0, native_ms=2.0,
           kind="sequence"):
    return dict(kind=kind, cell=cell, dtype="float32", mode=mode, T=T, B=B, H=H,
                backend="numba", kernel_ms=kernel_ms, native_ms=native_ms)


@pytest.fixture
def table(tmp_path, monkeypatch):
    """Point auto at a table of this test's own (FASTRNN_AUTO_TABLE), for every class."""
    def write(points):
        path = tmp_path / "table.json"
        path.write_text(json.dumps({"schema": auto.SCHEMA, "class": "test", "points": points}))
        monkeypatch.setenv(auto.ENV_VAR, str(path))
        dispatch.clear_caches()
        return path
    return write


def test_available_backends_reports_every_backend_with_reasons():
    report = fastrnn.available_backends("cpu")
    assert set(report) == set(BACKENDS) and "native" in report
    assert report["reference"] == [] and report["native"] == []
    assert report["cuda"], "the CUDA backend cannot run CPU tensors; it must say why"
    assert all(isinstance(r, str) and r for reasons in report.values() for r in reasons)


def test_explicit_unavailable_backend_raises_with_reasons():
    with pytest.raises(BackendUnavailableError, match="'cuda' was requested"):
        choose_backend("cuda", _problem())
    m = fastrnn.LSTM(3, 4, backend="cuda")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        m(torch.randn(2, 1, 3))


def test_env_var_is_an_explicit_choice(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError):
        fastrnn.GRU(3, 4)(torch.randn(2, 1, 3))
    monkeypatch.setenv("FASTRNN_BACKEND", "reference")
    assert choose_backend("auto", _problem()) == "reference"
    # the module's own explicit choice wins over the environment
    assert choose_backend("reference", _problem()) == "reference"
    monkeypatch.setenv("FASTRNN_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTRNN_BACKEND"):
        choose_backend("auto", _problem())


def test_layer_level_auto_picks_first_kernel_in_order():
    report = fastrnn.available_backends("cpu")
    expected = "numba" if not report["numba"] else "reference"
    assert choose_backend("auto", _problem()) == expected
    assert choose_backend("auto", _problem(device="meta")) == "reference"
    with pytest.raises(ValueError, match="whole modules"):
        choose_backend("native", _problem())


# ---------------------------------------------------------------- the native backend
@pytest.mark.parametrize("name,kwargs,packed", [
    ("LSTM", {"num_layers": 2, "bidirectional": True}, False), ("LSTM", {"proj_size": 2}, True),
    ("GRU", {"batch_first": True}, False), ("RNN", {"nonlinearity": "relu"}, True),
    ("LSTMCell", {}, False), ("GRUCell", {}, False), ("RNNCell", {}, False)])
def test_native_is_torch_nn_itself(name, kwargs, packed):
    """backend='native' runs the torch.nn base class's forward on the module's own
    parameters: outputs and gradients are bit-identical to torch.nn's."""
    torch.manual_seed(0)
    ref = getattr(nn, name)(3, 4, **kwargs)
    fast = getattr(fastrnn, name)(3, 4, backend="native", **kwargs)
    fast.load_state_dict(ref.state_dict())
    cell = name.endswith("Cell")
    x = torch.randn(*((5, 3) if cell else (5, 3, 3)), requires_grad=True)

    def make_input():
        return (pack_padded_sequence(x, torch.tensor([5, 2, 4]), enforce_sorted=False)
                if packed else x)
    results = []
    for module in (ref, fast):
        out = module(make_input())
        out = out if cell else out[0]
        data = out.data if packed else (out[0] if isinstance(out, tuple) else out)  # LSTMCell
        grads = torch.autograd.grad(data.square().sum(), [x, *module.parameters()])
        results.append([data, *grads])
    for a, b in zip(*results):
        assert torch.equal(a, b)
    # the same Parameter objects: a change of weights is seen at once (nothing copied)
    with torch.no_grad():
        next(fast.parameters()).add_(1.0)
    out = fast(make_input())
    out = out if cell else out[0]
    data = out.data if packed else (out[0] if isinstance(out, tuple) else out)
    assert not torch.equal(data, results[1][0])


def test_native_refuses_cudnn_backward_in_eval_mode():
    reasons = dispatch.unsupported_reasons(
        "native", _problem(device="cuda", mode="training", training=False))
    assert any("eval mode" in r for r in reasons)
    assert dispatch.unsupported_reasons("native", _problem(device="cuda", mode="training")) == []
    # auto then takes a kernel that can run it (here, without a GPU: the reference)
    decision = auto_decision(_problem(device="cuda", mode="training", training=False))
    assert decision.backend in ("cuda", "triton", "reference") and "eval mode" in decision.why


# ---------------------------------------------------------------- auto from tables
def test_auto_is_native_without_measurements(monkeypatch, tmp_path):
    monkeypatch.setenv(auto.ENV_VAR, str(tmp_path / "missing.json"))
    decision = auto_decision(_problem())
    assert decision.backend == "native" and "no measurements" in decision.why


def test_auto_takes_the_kernel_only_where_measured_faster(table):
    table([_point(B=1, H=64, kernel_ms=0.5, native_ms=1.0),  # kernel wins
           _point(B=64, H=512, kernel_ms=0.97, native_ms=1.0),  # a tie goes to torch.nn
           _point(mode="training", B=1, H=64, kernel_ms=3.0, native_ms=1.0)])
    assert auto_decision(_problem(T=100, B=1, H=64)).backend == "numba"
    assert auto_decision(_problem(T=80, B=2, H=80)).backend == "numba"  # nearest point
    assert auto_decision(_problem(T=100, B=64, H=512)).backend == "native"
    assert auto_decision(_problem(T=100, B=1, H=64, mode="training")).backend == "native"
    far = auto_decision(_problem(T=100, B=1, H=4096))
    assert far.backend == "native" and "outside the measured range" in far.why
    other = auto_decision(_problem(T=100, B=1, H=64, dtype=torch.float64))
    assert other.backend == "native" and "no sequence point" in other.why
    relu = auto_decision(_problem(cell="rnn_relu", T=100, B=1, H=64))
    assert relu.backend == "native"  # no rnn_tanh points in this table
    proj = Problem("lstm", torch.device("cpu"), torch.float32, 100, 1, 64, 3, False)
    assert auto_decision(proj).backend == "native"


def test_single_step_points_stand_only_for_single_steps(table):
    """T=1 runs the cells' fused step, T>1 the time loop: a T=1 point never decides a T=2
    call (nearest on the log scale, it would) nor a T>1 point a T=1 call."""
    table([_point(T=1, B=1, H=64, kernel_ms=0.5, native_ms=1.0),
           _point(T=3, B=1, H=64, kernel_ms=2.0, native_ms=1.0)])
    assert auto_decision(_problem(T=1, B=1, H=64)).backend == "numba"
    two = auto_decision(_problem(T=2, B=1, H=64))
    assert two.backend == "native" and "T=3" in two.why
    table([_point(T=16, B=1, H=64, kernel_ms=0.5, native_ms=1.0)])
    assert auto_decision(_problem(T=16, B=1, H=64)).backend == "numba"
    one = auto_decision(_problem(T=1, B=1, H=64))
    assert one.backend == "native" and "no sequence point" in one.why
    table([_point(T=1, B=1, H=64, kernel_ms=0.5, native_ms=1.0)])
    assert auto_decision(_problem(T=2, B=1, H=64)).backend == "native"


def test_a_tie_between_points_takes_the_slower_one(table):
    """A call equally far from two measured sizes (H=128 between 64 and 256) is decided by
    the point where the kernel did worse; two kernels at one point: the faster kernel."""
    table([_point(B=1, H=64, kernel_ms=0.5, native_ms=1.0),
           _point(B=1, H=256, kernel_ms=0.95, native_ms=1.0)])
    tie = auto_decision(_problem(T=100, B=1, H=128))
    assert tie.backend == "native" and "H=256" in tie.why
    table([_point(B=1, H=64, kernel_ms=0.5, native_ms=1.0),
           dict(_point(B=1, H=64, kernel_ms=0.3, native_ms=1.0), backend="other")])
    assert auto.load_table("test").nearest("sequence", "lstm", "float32", "inference", 100, 1,
                                           64)[0].backend == "other"


def test_module_auto_follows_the_table(table):
    """The module runs what the table says, per call kind, and the choice is cached."""
    table([_point(T=5, B=3, H=4, kernel_ms=0.5, native_ms=1.0),
           _point(T=5, B=3, H=4, mode="training", kernel_ms=2.0, native_ms=1.0)])
    torch.manual_seed(0)
    fast, ref = fastrnn.LSTM(4, 4), nn.LSTM(4, 4)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        out = fast(x)[0]
    assert dispatch._module_choices and set(dispatch._module_choices.values()) == {"numba"}
    torch.testing.assert_close(out, ref(x)[0], atol=1e-6, rtol=1e-6)
    out = fast(x)[0]  # training: native, bit-identical to torch.nn
    assert torch.equal(out, ref(x)[0])
    assert sorted(dispatch._module_choices.values()) == ["native", "numba"]


def test_single_step_layers_follow_the_tables_sequence_points(table, monkeypatch):
    """A T=1 call of a one-layer module is chosen from the sequence points at T=1 (they time
    that call), never from the cell points (torch.nn's cell is far cheaper than its layer)."""
    from fastrnn import layer_step, sequence_inference
    table([_point(T=1, B=2, H=4, mode="training", kernel_ms=0.5, native_ms=1.0),
           _point(T=1, B=2, H=4, mode="inference", kernel_ms=2.0, native_ms=1.0),
           _point(kind="cell", B=2, H=4, mode="training", kernel_ms=2.0, native_ms=1.0),
           _point(kind="cell", B=2, H=4, mode="inference", kernel_ms=0.5, native_ms=1.0)])
    torch.manual_seed(0)
    fast, ref = fastrnn.LSTM(4, 4), nn.LSTM(4, 4)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(1, 2, 4)
    entered = []
    for name, module in (("step", layer_step), ("run", sequence_inference)):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name: (
            entered.append(name), real(*a))[1])
    out = fast(x)[0]  # training: the kernel, on the fused step
    assert "numba" in dispatch._module_choices.values() and entered == ["step"]
    torch.testing.assert_close(out, ref(x)[0], atol=1e-6, rtol=1e-6)
    entered.clear()
    with torch.no_grad():  # inference: torch.nn, before any of fastrnn's paths
        assert torch.equal(fast(x)[0], ref(x)[0])
    assert entered == []


def test_module_backend_memo_follows_what_the_choice_depends_on(table):
    """The per-module memo of a call's backend sees frozen weights, train/eval, a changed
    ``backend`` attribute and dispatch.clear_caches."""
    table([_point(T=5, B=3, H=4, kernel_ms=0.5, native_ms=1.0),
           _point(T=5, B=3, H=4, mode="training", kernel_ms=2.0, native_ms=1.0)])
    fast = fastrnn.LSTM(4, 4)
    x = torch.randn(5, 3, 4)
    assert fast._call_backend(x) == "native"  # the weights require grad: training
    assert fast._call_backend(x) == "native"  # from the memo
    fast.requires_grad_(False)
    assert fast._call_backend(x) == "numba"
    assert fast._call_backend(x.requires_grad_()) == "native"
    with torch.no_grad():
        assert fast._call_backend(x) == "numba"
    fast.backend = "native"
    assert fast._call_backend(x.detach()) == "native"
    fast.backend = "auto"
    table([_point(T=5, B=3, H=4, kernel_ms=2.0, native_ms=1.0)])  # clears the caches
    assert fast._call_backend(x.detach()) == "native"


def test_shipped_tables_parse_and_name_their_source():
    for path in sorted(auto.TABLE_DIR.glob("auto-*.json")):
        data = json.loads(path.read_text())
        table = auto._parse(path, data["class"])
        assert path.name == f"auto-{data['class']}.json"
        assert table.points and data["source"]["machine"] and data["source"]["command"]
        failed = set(data["failed_checks"])
        assert not any(f"{p.backend} {p.cell} {p.dtype}" in failed for p in table.points)


def test_tune_verifies_and_measures_a_point():
    from fastrnn import tuning
    ok, why = tuning.verified("numba", "gru", "cpu")
    assert ok, why
    point = tuning.measure_point("cell", "lstm", 1, 2, 8, "training", "cpu", "numba", repeat=1)
    assert point.kernel_ms > 0 and point.native_ms > 0 and point.kind == "cell"


def test_tune_can_measure_some_sequence_lengths_and_merge_them_in(monkeypatch):
    """``fastrnn tune --seq-len T`` measures only those sequence points; merging such a table
    into a full one keeps the full one's other points and takes the larger ratio where both
    measured (benchmarks/merge_auto_tables.py)."""
    import importlib.util
    from pathlib import Path
    from fastrnn import tuning
    measured = []
    monkeypatch.setattr(tuning, "measure_point", lambda *a, **k: measured.append(a[:6]) or
                        auto.Point(a[0], a[1], "float32", a[5], a[2], a[3], a[4], a[7], 1.0, 2.0))
    monkeypatch.setattr(tuning, "verified", lambda *a: (True, ""))
    table = tuning.tune("cpu", 1, False, seq_lens=[400])
    assert measured and {(m[0], m[2]) for m in measured} == {("sequence", 400)}
    assert len(table["points"]) == len(measured) == 3 * len(tuning.MODES) * 8
    spec = importlib.util.spec_from_file_location(
        "merge_auto_tables", Path(__file__).parents[1] / "benchmarks" / "merge_auto_tables.py")
    measured.clear()
    tuning.tune("cpu", 1, False, batches=[4])
    assert {(m[0], m[3]) for m in measured} == {("sequence", 4)}
    assert {m[2] for m in measured} == set(tuning.GRID["T"])
    merging = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(merging)
    old = dict(table, points=[_point(T=100), dict(table["points"][0], kernel_ms=1.9)])
    merged = merging.merge(table, old, [])
    assert len(merged["points"]) == len(table["points"]) + 1  # the T=100 point stays
    first = [p for p in merged["points"] if merging._key(p) == merging._key(old["points"][1])]
    assert [p["kernel_ms"] for p in first] == [1.9]  # the larger ratio of the two
    # merged again, the table keeps both sources it came from
    again = merging.merge(merged, dict(old, source={"command": "third"}), [])
    assert again["source"]["merged_with"] == [old["source"], {"command": "third"}]


def _evidence(passed=True, sanitizer_clean=True, dry_run=False):
    rec = dict(cell="lstm", shape="flashrnn", dims=[1024, 16, 768, 768, 1, False], tf32=False,
               mode="forward", fastrnn_ms=1.0, cudnn_ms=2.0, ratio=0.5)
    return {"schema": "fastrnn-gpu-evidence/1", "dry_run": dry_run,
            "machine": {"device_name": "NVIDIA H200", "capability": "9.0", "arch": "sm_90"},
            "correctness": [{"backend": "cuda", "cell": "lstm", "dtype": "bfloat16",
                             "check": "parity", "passed": passed, "detail": ""},
                            {"backend": "triton", "cell": "lstm", "dtype": "bfloat16",
                             "check": "parity", "passed": True, "detail": ""}],
            "sanitizer": [{"tool": tool, "backend": backend, "cell": "lstm",
                           "passed": sanitizer_clean or backend == "triton", "detail": ""}
                          for tool in ("memcheck", "racecheck") for backend in ("cuda", "triton")],
            "results": [dict(rec, backend="cuda", dtype="bfloat16"),
                        dict(rec, backend="triton", dtype="bfloat16", fastrnn_ms=3.0, ratio=1.5),
                        dict(rec, backend="triton", dtype="float16"),  # never checked
                        dict(rec, backend="flashrnn", dtype="bfloat16")]}


def test_gpu_evidence_becomes_a_table_only_where_checks_passed(table):
    """A GPU visit's evidence feeds auto for its architecture: a kernel's timing counts only
    where its correctness checks passed and its sanitizer runs were clean; FlashRNN rows and
    dry runs never do."""
    from fastrnn import tuning
    made = tuning.from_evidence(_evidence(), "gpu.json")
    assert made["class"] == "cuda-sm_90"
    assert [(p["backend"], p["dtype"], p["mode"]) for p in made["points"]] == [
        ("cuda", "bfloat16", "inference"), ("triton", "bfloat16", "inference")]
    assert "triton lstm float16" in made["failed_checks"]
    assert not tuning.from_evidence(_evidence(passed=False), "g")["points"][0]["backend"] == "cuda"
    assert all(p["backend"] != "cuda"
               for p in tuning.from_evidence(_evidence(sanitizer_clean=False), "g")["points"])
    with pytest.raises(ValueError, match="dry run"):
        tuning.from_evidence(_evidence(dry_run=True), "g")
    # the table drives auto on that architecture: the faster verified kernel, per mode
    path = table(made["points"])
    point = auto.load_table("cuda-sm_90").nearest("sequence", "lstm", "bfloat16", "inference",
                                                  1024, 16, 768)[0]
    assert point.backend == "cuda" and path.exists()


def test_compile_on_a_gpu_without_evidence_stays_native():
    """Under torch.compile auto chooses without sizes: on CUDA only a kernel with evidence for
    the architecture (none here), else torch.nn's own forward; on the CPU the first kernel."""
    from fastrnn import contexts
    assert contexts._size_free_kernel("gru", torch.device("cuda"), torch.float32, 8, 0,
                                      False) == "native"
    assert contexts._size_free_kernel("gru", torch.device("cpu"), torch.float32, 8, 0,
                                      False) in ("numba", "reference")
