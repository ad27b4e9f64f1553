"""One process of the DDP gradient test (imported by the spawned children, so it stays free of
pytest): the fastrnn char LM under DistributedDataParallel, gloo on 127.0.0.1."""
import datetime
import faulthandler
import os
import sys

import torch

from fastrnn import demo

SEQ, BATCH, HIDDEN, LAYERS, CHARS = 12, 3, 16, 2, 4000
STUCK_S = 150  # under the parent's 180 s deadline (tests/test_ddp.py)
CELLS = ("lstm", "gru")


def data():
    """The first CHARS characters as ids (T,), and the size of the full text's vocabulary."""
    text = demo.load_text()
    itos = sorted(set(text))
    return torch.tensor([itos.index(c) for c in text[:CHARS]]), len(itos)


def first_chunk(streams):
    return next(demo.chunks(streams, SEQ))


def worker(rank: int, world: int, port: int, out_path: str) -> None:
    """Gradients of one DDP step for every cell in CELLS; rank 0 saves {cell: {name: grad}}."""
    # A child stuck past STUCK_S prints every thread's stack to stderr (the test shows it) and
    # exits, so a hang reports where it is instead of running into the parent's deadline.
    faulthandler.dump_traceback_later(STUCK_S, exit=True)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if sys.platform.startswith("linux"):
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"   # loopback only, never the host's address
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world,
                                         timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)  # 2 ranks share the cores; torchrun sets OMP_NUM_THREADS=1 alike
    torch.set_default_dtype(torch.float64)
    ids, vocab = data()
    # Rank r reads streams [r*BATCH, (r+1)*BATCH) of the 2*BATCH streams the single run reads.
    streams = demo.make_streams(ids, BATCH * world)[:, rank * BATCH:(rank + 1) * BATCH]
    grads = {}
    for cell in CELLS:
        torch.manual_seed(0)
        model = demo.CharLM(vocab, HIDDEN, LAYERS, cell, "auto")
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        inputs, targets = first_chunk(streams)
        loss, _ = demo.lm_loss(ddp, inputs, targets, None)
        loss.backward()                            # DDP all-reduces (averages) the gradients
        grads[cell] = {n: p.grad for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(grads, out_path)
    torch.distributed.barrier()   # both ranks are done with every collective (and the store)
    # Leave without running torch's teardown: in torch 2.13 the process group's destructor can
    # deadlock. It joins gloo's worker threads while holding the GIL, and a worker may still be
    # destroying a backward's all-reduce work, whose thread-local state holds a Python object
    # (the context `torch.autograd` stashes per backward), so it waits for the GIL. Observed
    # here with py-spy: MainThread in ~ProcessGroupGloo -> thread::join, the worker in
    # ~AsyncAllreduceWork -> gil_scoped_acquire, both idle until the test's deadline.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
