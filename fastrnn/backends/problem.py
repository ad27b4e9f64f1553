"""The description of one call that dispatch hands to `unsupported_reasons`."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Problem:
    """Everything a backend needs to decide whether it can run a call (no tensor data).

    Attributes:
        cell: op-level cell name (see ``fastrnn.cells``).
        device: device of every tensor of the call.
        dtype: dtype of xg / w_hh / states.
        seq_len, batch, hidden, proj: T, B, H, and P (0 = no LSTM projection).
        has_lengths: variable lengths (PackedSequence) are present.
        mode: 'training' when autograd records a graph of the call, else 'inference'.
        module_training: the module's ``training`` flag (cuDNN's backward needs it set).
    """

    cell: str
    device: torch.device
    dtype: torch.dtype
    seq_len: int
    batch: int
    hidden: int
    proj: int
    has_lengths: bool
    mode: str = "inference"
    module_training: bool = True

    @property
    def recurrent_width(self) -> int:
        """R: the width of h fed back into the recurrence."""
        return self.proj if self.proj > 0 else self.hidden
