"""DistributedDataParallel (gloo, 2 CPU processes on 127.0.0.1): the averaged gradients of the
fastrnn char LM equal a single-process torch.nn run on the whole batch (float64, 1e-10)."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import ddp_worker
from fastrnn import demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_grads(tmp_path_factory):
    """{cell: {parameter name: gradient}} from rank 0 of 2 spawned DDP processes (one spawn
    for both cells: starting the processes is most of the time)."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    context = mp.start_processes(ddp_worker.worker, args=(2, _free_port(), str(out)),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2 DDP processes did not finish within 180 s")
    return torch.load(out)


@pytest.mark.parametrize("cell", ddp_worker.CELLS)
def test_ddp_gradients_match_single_process_torch(distributed_grads, cell):
    """Mean loss over 2 ranks x BATCH streams == mean over 2*BATCH streams, so the averaged
    gradients equal the single-process ones; float64, so 1e-10 leaves only summation-order
    rounding (~1e-15 relative) and catches any wrong stream, state or weight."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ids, vocab = ddp_worker.data()
        streams = demo.make_streams(ids, ddp_worker.BATCH * 2)
        torch.manual_seed(0)
        model = demo.CharLM(vocab, ddp_worker.HIDDEN, ddp_worker.LAYERS, cell, "auto",
                            use_torch=True)
        inputs, targets = ddp_worker.first_chunk(streams)
        loss, _ = demo.lm_loss(model, inputs, targets, None)
        loss.backward()
    finally:
        torch.set_default_dtype(old)
    distributed = distributed_grads[cell]
    assert sorted(n for n, _ in model.named_parameters()) == sorted(distributed)
    for name, param in model.named_parameters():
        torch.testing.assert_close(distributed[name], param.grad, atol=1e-10, rtol=1e-10,
                                   msg=lambda m: f"{cell} {name}: {m}")


def test_char_lm_under_torchrun():
    """`torchrun --nproc_per_node=2 examples/char_lm.py` trains with DDP (gloo, 127.0.0.1)."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(root)] + [p for p in
                                                        [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
         str(root / "examples" / "char_lm.py"), "--hidden", "16", "--batch", "4", "--bptt", "8",
         "--steps", "20", "--lr", "1e-2", "--samples", "0", "--quiet"],
        capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(l for l in done.stdout.splitlines() if l.startswith("fastrnn: loss"))
    assert "batch 4x2" in done.stdout
    before, after = (float(v) for v in line.split("loss ")[1].split()[0:3:2])
    assert after < before, line
