"""Many-to-one classification: a 2-layer bidirectional fastrnn.GRU reads variable-length
sequences through a PackedSequence (unsorted lengths); the last hidden states of both
directions feed a linear classifier.

Task (synthetic): a sequence of random vectors of length 3..20; the class is the sign of the
sum of its first feature (only the valid steps count, so padding must be ignored).

    python examples/classify.py --steps 150 --backend numba
"""
import argparse
import sys

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn


class Classifier(nn.Module):
    """forward(x (B, T, I) padded, lengths (B,)) -> logits (B, classes)."""

    def __init__(self, features: int, hidden: int, classes: int, backend: str):
        super().__init__()
        self.rnn = fastrnn.GRU(features, hidden, num_layers=2, bidirectional=True,
                               batch_first=True, backend=backend)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, h_n = self.rnn(packed)              # (layers * 2, B, hidden), in the input's order
        last = torch.cat([h_n[-2], h_n[-1]], dim=1)  # top layer, forward and reverse
        return self.head(last)


def make_batch(batch: int, features: int, gen: torch.Generator):
    lengths = torch.randint(3, 21, (batch,), generator=gen)
    x = torch.randn(batch, int(lengths.max()), features, generator=gen)
    mask = torch.arange(x.shape[1]).view(1, -1) < lengths.view(-1, 1)
    x = x * mask.unsqueeze(-1)                 # padding is zero (and must not matter)
    labels = (x[..., 0].sum(dim=1) > 0).long()
    return x, lengths, labels


def run(steps: int = 150, backend: str = "auto", seed: int = 0, quiet: bool = False):
    """Train; returns (losses, final accuracy on a fresh batch)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Classifier(4, 32, 2, backend)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        x, lengths, labels = make_batch(32, 4, gen)
        loss = nn.functional.cross_entropy(model(x, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not quiet and (step + 1) % 25 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f}")
    x, lengths, labels = make_batch(256, 4, gen)
    with torch.no_grad():
        accuracy = (model(x, lengths).argmax(1) == labels).float().mean().item()
    return losses, accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    losses, accuracy = run(args.steps, args.backend, args.seed)
    first, last = losses[:10], losses[-10:]         # means: one batch's loss is noisy
    print(f"loss {sum(first) / len(first):.3f} -> {sum(last) / len(last):.3f}, "
          f"accuracy on fresh data {accuracy:.1%}")
    sys.exit(0)
