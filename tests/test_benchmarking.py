"""``fastrnn bench``: shapes, the table, JSON metadata, and a tiny end-to-end run."""
import json

import pytest

from fastrnn import benchmarking
from fastrnn.cli import main


def test_named_shapes_and_parse():
    assert benchmarking.parse_shape("flashrnn")[1][:4] == (1024, 16, 768, 768)
    assert benchmarking.parse_shape("3,2,4,5") == ("3,2,4,5", (3, 2, 4, 5, 1, False))
    with pytest.raises(SystemExit, match="--shape"):
        benchmarking.parse_shape("huge")


def test_bench_tiny_shape_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert main(["bench", "--cell", "gru", "--shape", "3,2,4,5", "--backend", "reference",
                 "--repeat", "1", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "gru" in out and "reference" in out
    data = json.loads(path.read_text())
    machine = data["machine"]
    for key in ("device", "device_name", "torch", "numba", "commit"):
        assert key in machine
    (row,) = data["results"]
    assert row["ratio_fwd"] == pytest.approx(row["fastrnn_fwd_ms"] / row["torch_fwd_ms"])
    assert row["backend"] == "reference" and row["dims"][:4] == [3, 2, 4, 5]


def test_bench_plot(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "speedup.png"
    assert main(["bench", "--cell", "rnn", "--shape", "3,2,4,5", "--backend", "reference",
                 "--repeat", "1", "--plot", str(path)]) == 0
    assert path.stat().st_size > 1000


def test_bench_latency_table_and_json(tmp_path, capsys, monkeypatch):
    from fastrnn import latency

    monkeypatch.setattr(latency, "cases", lambda smoke=False: [("LSTMCell", 0, 1, 8),
                                                               ("GRU", 1, 2, 8),
                                                               ("RNN", 100, 1, 8)])
    path = tmp_path / "latency.json"
    assert main(["bench", "--latency", "--backend", "numba", "--repeat", "1", "--calls", "2",
                 "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "LSTMCell" in out and "/step]" in out
    rows = json.loads(path.read_text())["results"]
    assert [(r["module"], r["seq_len"], r["batch"]) for r in rows] == [
        ("LSTMCell", 0, 1), ("GRU", 1, 2), ("RNN", 100, 1)]
    for r in rows:
        for mode in ("nograd", "train"):
            assert r[f"ratio_{mode}"] == pytest.approx(r[f"fastrnn_{mode}_us"]
                                                      / r[f"torch_{mode}_us"])


def test_latency_cases_cover_the_issue():
    from fastrnn import latency

    full = latency.cases()
    for name in ("LSTMCell", "GRUCell", "RNNCell", "LSTM", "GRU", "RNN"):
        t = 0 if name.endswith("Cell") else 1
        assert {(b, h) for n, s, b, h in full if n == name and s == t} == {
            (1, 64), (1, 256), (16, 64), (16, 256)}
    assert {(n, s, b, h) for n, s, b, h in full if s == 100} == {
        (n, 100, 1, 64) for n in ("LSTM", "GRU", "RNN")}
