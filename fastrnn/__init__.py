"""fastrnn: drop-in torch.nn RNN / LSTM / GRU whose time loop runs in fused kernels."""
from fastrnn.cell_modules import GRUCell, LSTMCell, RNNCell
from fastrnn.convert import convert
from fastrnn.dispatch import BackendUnavailableError, available_backends
from fastrnn.modules import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "convert",
           "available_backends", "BackendUnavailableError", "__version__"]
