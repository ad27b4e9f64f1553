"""The examples on tiny settings: each trains (its loss falls) on the default backend and on
the reference; and the textbook case: 'hell' -> 'ello' for every cell."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import fastrnn
from fastrnn import demo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))
import classify  # noqa: E402
import seq2seq  # noqa: E402

BACKENDS = ["auto", "reference"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_hello_predicts_ello(kind, backend):
    """One word, four letters: from 'hell' predict the next letter at every step."""
    vocab = "helo"
    source = torch.tensor([vocab.index(c) for c in "hell"])
    target = torch.tensor([vocab.index(c) for c in "ello"])
    torch.manual_seed(0)
    rnn = getattr(fastrnn, kind)(4, 16, backend=backend)
    head = nn.Linear(16, 4)
    params = list(rnn.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=0.05)
    x = nn.functional.one_hot(source, 4).float().unsqueeze(1)   # (T=4, B=1, 4)
    for _ in range(100):
        logits = head(rnn(x)[0][:, 0])
        loss = nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    predicted = "".join(vocab[i] for i in head(rnn(x)[0][:, 0]).argmax(1))
    assert predicted == "ello"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_char_lm_loss_falls(cell, backend, capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--cell", cell, "--backend", backend, "--hidden", "32",
                              "--batch", "8", "--bptt", "16", "--steps", "40", "--samples", "1",
                              "--quiet", "--lr", "1e-2"])
    assert demo.main(args) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("fastrnn: loss"))
    before, after = (float(v) for v in line.split("loss ")[1].split(" (")[0].split(" -> "))
    assert after < before - 0.5, line
    assert "--- sample 1\nAlice " in out


def test_char_lm_compare_reports_both_speeds(capsys):
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--hidden", "16", "--batch", "4", "--bptt", "8", "--steps", "3",
                              "--samples", "0", "--quiet", "--compare"])
    assert demo.main(args) == 0
    out = capsys.readouterr().out
    assert "tokens/s" in out and "fastrnn/torch.nn speed" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_classify_packed_bidirectional(backend):
    losses, accuracy = classify.run(steps=30, backend=backend, quiet=True)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.2
    assert accuracy > 0.75          # chance is 50%; 30 steps reach ~91% (seed 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seq2seq_teacher_forcing(backend):
    losses, accuracy = seq2seq.run(steps=80, backend=backend, length=3, quiet=True)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5
    assert accuracy > 0.5           # chance is 1/1000; 80 steps reach ~99% (seed 0)


@pytest.mark.parametrize("script, arguments, result", [
    ("char_lm.py", ["--hidden", "16", "--batch", "4", "--bptt", "8", "--steps", "30",
                    "--samples", "1", "--quiet", "--lr", "1e-2"], "fastrnn: loss"),
    ("classify.py", ["--steps", "30"], "accuracy on fresh data"),
    ("seq2seq.py", ["--steps", "30"], "exact reversals"),
])
def test_example_scripts_run(script, arguments, result):
    """Each file under examples/ runs as a script (argument parsing, __main__) and its loss
    falls; the training itself is tested above."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *arguments,
                           "--backend", "reference"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if result in l)
    before, after = (float(v.rstrip(",")) for v in line.split("loss ")[1].split()[0:3:2])
    assert after < before, line


def test_char_lm_unavailable_backend_is_an_error_not_a_traceback(capsys):
    """An explicit backend never falls back: the demo stops with status 2 and the reasons."""
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--backend", "cuda", "--device", "cpu", "--hidden", "8",
                              "--steps", "1", "--quiet"])
    assert demo.main(args) == 2
    assert "backend 'cuda'" in capsys.readouterr().err
