"""Encoder-decoder with teacher forcing: reverse a string of digits.

The encoder is a fastrnn.GRU over the source; the decoder is trained with teacher forcing as
a fastrnn.GRU over the shifted target, and at inference decodes step by step (greedy) with a
fastrnn.GRUCell that shares the decoder's weights.

    python examples/seq2seq.py --steps 400
"""
import argparse
import sys

import torch
from torch import nn

import fastrnn

DIGITS, BOS = 10, 10          # tokens 0-9, and a begin-of-sequence token for the decoder


class Seq2Seq(nn.Module):
    def __init__(self, hidden: int, backend: str):
        super().__init__()
        self.embed = nn.Embedding(DIGITS + 1, hidden)
        self.encoder = fastrnn.GRU(hidden, hidden, backend=backend)
        self.decoder = fastrnn.GRU(hidden, hidden, backend=backend)
        self.step = fastrnn.GRUCell(hidden, hidden, backend=backend)
        self.head = nn.Linear(hidden, DIGITS)

    def tie_step_cell(self):
        """The inference cell uses the decoder's parameters (same names, layer 0)."""
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self.step, name, getattr(self.decoder, name + "_l0"))

    def forward(self, src, tgt):
        """Teacher forcing. src, tgt: (T, B) digits -> logits (T, B, 10)."""
        _, h = self.encoder(self.embed(src))
        shifted = torch.cat([torch.full_like(tgt[:1], BOS), tgt[:-1]])
        out, _ = self.decoder(self.embed(shifted), h)
        return self.head(out)

    @torch.no_grad()
    def greedy(self, src, length: int):
        """Decode step by step with the cell: (T, B) -> (length, B)."""
        self.tie_step_cell()
        _, h = self.encoder(self.embed(src))
        h = h[0]
        token = torch.full_like(src[0], BOS)
        out = []
        for _ in range(length):
            h = self.step(self.embed(token), h)
            token = self.head(h).argmax(-1)
            out.append(token)
        return torch.stack(out)


def run(steps: int = 400, backend: str = "auto", seed: int = 0, length: int = 5,
        quiet: bool = False):
    """Train; returns (losses, exact-match accuracy of greedy decoding on fresh strings)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Seq2Seq(64, backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(steps):
        src = torch.randint(0, DIGITS, (length, 64), generator=gen)
        tgt = src.flip(0)
        logits = model(src, tgt)
        loss = nn.functional.cross_entropy(logits.reshape(-1, DIGITS), tgt.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if not quiet and (step + 1) % 50 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f}")
    src = torch.randint(0, DIGITS, (length, 200), generator=gen)
    decoded = model.greedy(src, length)
    accuracy = (decoded == src.flip(0)).all(0).float().mean().item()
    return losses, accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    losses, accuracy = run(args.steps, args.backend, args.seed)
    first, last = losses[:10], losses[-10:]         # means: one batch's loss is noisy
    print(f"loss {sum(first) / len(first):.3f} -> {sum(last) / len(last):.3f}, "
          f"exact reversals {accuracy:.1%}")
    sys.exit(0)
