"""``fastrnn demo``: a character-level language model trained with truncated backpropagation
through time on *Alice's Adventures in Wonderland* (bundled, public domain).

The hidden state is carried across chunks (detached), gradients are clipped, a progress bar
shows loss and tokens/s, and samples are printed at the end. ``--compare`` trains the same
model with torch.nn from the same initial weights and reports both speeds. Under ``torchrun``
(or with ``--ddp``) every process trains on its own share of the text streams with
DistributedDataParallel (gloo on the CPU).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from importlib import resources

import torch
from torch import nn

import fastrnn

CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def load_text() -> str:
    return (resources.files("fastrnn") / "data" / "alice.txt").read_text(encoding="ascii")


class CharLM(nn.Module):
    """Embedding -> recurrent layers -> linear over the vocabulary.

    forward(tokens (T, B) int64, state) -> (logits (T, B, V), state).
    """

    def __init__(self, vocab: int, hidden: int, layers: int, cell: str, backend: str,
                 use_torch: bool = False):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        kind = CELLS[cell]
        if use_torch:
            self.rnn = getattr(nn, kind)(hidden, hidden, layers)
        else:
            self.rnn = getattr(fastrnn, kind)(hidden, hidden, layers, backend=backend)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, state=None):
        out, state = self.rnn(self.embed(tokens), state)
        return self.head(out), state


def detach_state(state):
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def make_streams(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(N,) token ids -> (N // batch, batch): ``batch`` contiguous streams read in parallel."""
    steps = ids.numel() // batch
    return ids[:steps * batch].view(batch, steps).t().contiguous()


def chunks(streams: torch.Tensor, bptt: int):
    """Yield (inputs (T, B), targets (T, B)) chunks in order, forever."""
    while True:
        for start in range(0, streams.shape[0] - 1 - bptt, bptt):
            yield streams[start:start + bptt], streams[start + 1:start + 1 + bptt]


def lm_loss(model, inputs, targets, state):
    logits, state = model(inputs, state)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    return loss, state


def train(model, streams, steps: int, bptt: int, lr: float, clip: float, label: str,
          show_progress: bool = True, ddp: bool = False):
    """Truncated BPTT; returns (losses per step, tokens per second)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    batches = chunks(streams, bptt)
    state, losses = None, []
    tokens = 0
    start = last_shown = time.perf_counter()
    for step in range(steps):
        inputs, targets = next(batches)
        loss, state = lm_loss(model, inputs, targets, state)
        state = detach_state(state)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        tokens += inputs.numel() * (torch.distributed.get_world_size() if ddp else 1)
        now = time.perf_counter()
        if show_progress and (now - last_shown > 0.25 or step + 1 == steps):
            last_shown = now
            _bar(step + 1, steps, f"{label} loss {losses[-1]:.3f} "
                                  f"{tokens / (now - start):,.0f} tok/s")
    return losses, tokens / (time.perf_counter() - start)


def _bar(done: int, total: int, text: str) -> None:
    width = 24
    filled = int(width * done / total)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {text}   ")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


@torch.no_grad()
def sample(model, stoi: dict, itos: list, prompt: str, length: int, temperature: float,
           seed: int) -> str:
    """Generate ``length`` characters after ``prompt``, one step at a time."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    state = None
    ids = torch.tensor([[stoi[c]] for c in prompt if c in stoi], device=device)
    logits, state = model(ids, state)
    out = []
    for _ in range(length):
        # Sample on the CPU so that one seed gives the same text on every device.
        probs = torch.softmax(logits[-1, 0].double().cpu() / temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=gen)
        out.append(itos[token.item()])
        logits, state = model(token.view(1, 1).to(device), state)
    model.train()
    return prompt + "".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--bptt", type=int, default=64, help="steps per truncated-BPTT chunk")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto",
                        help="'cpu', 'cuda', 'cuda:1', ...; auto: cuda when available, else cpu")
    parser.add_argument("--samples", type=int, default=2, help="samples printed at the end")
    parser.add_argument("--compare", action="store_true",
                        help="also train with torch.nn from the same weights; report both speeds")
    parser.add_argument("--ddp", action="store_true",
                        help="DistributedDataParallel (gloo); implied under torchrun")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def pick_device(name: str, ddp: bool) -> torch.device:
    """--device -> torch.device; under DDP each process on a GPU takes cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and ddp:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def main(args) -> int:
    """Run the demo; returns the exit status (2 when the requested backend cannot run)."""
    try:
        return _run(args)
    except fastrnn.BackendUnavailableError as error:
        sys.stderr.write(f"\nfastrnn demo: {error}\n")
        return 2


def _run(args) -> int:
    ddp = args.ddp or "LOCAL_RANK" in os.environ
    device = pick_device(args.device, ddp)
    rank, world = 0, 1
    if ddp:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    text = load_text()
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    streams = make_streams(ids, args.batch * world)[:, rank * args.batch:(rank + 1) * args.batch]
    streams = streams.to(device)
    torch.manual_seed(args.seed)
    model = CharLM(len(itos), args.hidden, args.layers, args.cell, args.backend).to(device)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trained = nn.parallel.DistributedDataParallel(model) if ddp else model
    if rank == 0:
        print(f"fastrnn demo: {args.cell.upper()} char LM on Alice in Wonderland "
              f"({len(text):,} chars, vocabulary {len(itos)}), hidden {args.hidden}, "
              f"batch {args.batch}x{world}, bptt {args.bptt}, {args.steps} steps, {device}")
    losses, rate = train(trained, streams, args.steps, args.bptt, args.lr, args.clip,
                         "fastrnn", show_progress=rank == 0 and not args.quiet, ddp=ddp)
    head, tail = losses[:10], losses[-10:]
    if rank == 0:
        print(f"fastrnn: loss {sum(head) / len(head):.3f} -> {sum(tail) / len(tail):.3f} "
              f"(uniform guess {math.log(len(itos)):.3f}), {rate:,.0f} tokens/s")
        for i in range(args.samples):
            print(f"--- sample {i + 1}\n" + sample(model, stoi, itos, "Alice ", 160, 0.8, i))
    if args.compare and not ddp:
        torch.manual_seed(args.seed)
        baseline = CharLM(len(itos), args.hidden, args.layers, args.cell, args.backend,
                          use_torch=True).to(device)
        baseline.load_state_dict(initial)
        base_losses, base_rate = train(baseline, streams, args.steps, args.bptt, args.lr,
                                       args.clip, "torch.nn", show_progress=not args.quiet)
        print(f"torch.nn: loss {sum(base_losses[:10]) / 10:.3f} -> "
              f"{sum(base_losses[-10:]) / 10:.3f}, {base_rate:,.0f} tokens/s; "
              f"fastrnn/torch.nn speed {rate / base_rate:.2f}x")
    if ddp:
        # Leave together: without the barrier one process could exit (taking down the store
        # it hosts) while the other still tears down its process group, waiting on the gone
        # peer (seen as a 1-in-5 hang at exit under torchrun).
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0
