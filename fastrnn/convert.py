"""``convert(model)``: turn every torch.nn recurrent module inside a model into fastrnn's."""
from __future__ import annotations

from torch import nn

from fastrnn import quantization
from fastrnn.cell_modules import GRUCell, LSTMCell, RNNCell
from fastrnn.dispatch import check_backend_name
from fastrnn.modules import GRU, LSTM, RNN, allow_dynamo_tracing

_REPLACEMENTS = {nn.RNN: RNN, nn.LSTM: LSTM, nn.GRU: GRU,
                 nn.RNNCell: RNNCell, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell}

# torch.ao.quantization keys on exact classes: teach it fastrnn's (fastrnn.quantization). Done
# at import (torch has already imported its quantization package) so that modules made by
# unpickling, which runs no __init__, are covered too.
quantization.install()


def convert(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Replace, in place, every ``torch.nn`` RNN/LSTM/GRU and cell inside ``model`` (``model``
    itself included) by the fastrnn class, and return ``model``.

    The modules keep their identity, parameter tensors, state_dict keys and hooks: only their
    class changes (fastrnn's classes are subclasses that add a ``backend`` attribute and a
    forward). Subclasses of the torch.nn classes are left alone: their forward may be custom.
    """
    check_backend_name(backend)
    for module in model.modules():
        replacement = _REPLACEMENTS.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
            module.backend = backend
            allow_dynamo_tracing()
    return model
