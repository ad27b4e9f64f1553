"""Per-call latency of small calls (issue 14): each cell and each T=1 layer at B in {1, 16},
H in {64, 256}, and B=1 T=100 sequences, no_grad and training, torch.nn beside fastrnn's
default (auto) and forced numba path. CPU, float32. FASTRNN_BENCH_SMOKE=1 keeps B=1, H=64 and
times a few calls (a check that every case runs)."""
import pytest
import torch

from fastrnn import latency
from providers import SMOKE

CALLS = 2 if SMOKE else 100
PROVIDERS = ("torch", "fastrnn-auto", "fastrnn-numba")
CASES = [pytest.param(name, t, b, h, provider, training,
                      id=f"{name}-T{t}-B{b}-H{h}-{'train' if training else 'nograd'}-{provider}")
         for name, t, b, h in latency.cases(SMOKE)
         for training in (False, True)
         for provider in PROVIDERS]


@pytest.mark.parametrize("name,seq_len,batch,hidden,provider,training", CASES)
def test_latency(benchmark, name, seq_len, batch, hidden, provider, training):
    backend = provider.split("-")[-1] if provider != "torch" else "auto"
    baseline, fast, x, hx = latency.build(name, seq_len, batch, hidden, backend)
    module = baseline if provider == "torch" else fast
    if training:
        x = x.clone().requires_grad_()
    call = latency.call(module, x, hx, training)

    def block():  # CALLS calls per round: one call is shorter than the timer's resolution
        for _ in range(CALLS):
            call()
    benchmark.extra_info.update(module=name, seq_len=seq_len, batch=batch, hidden=hidden,
                                provider=provider, training=training, calls_per_round=CALLS)
    call()  # compile and warm up
    benchmark.pedantic(block, rounds=1 if SMOKE else 15, iterations=1,
                       warmup_rounds=0 if SMOKE else 1)
