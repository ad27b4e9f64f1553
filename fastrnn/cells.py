"""What a recurrent cell is: gate count, state count, gate order, saved workspace. No math here.

Every backend and the reference agree on these names and layouts. Tensors are time-major:
``T`` steps, ``B`` batch, ``H`` hidden units, ``R`` recurrent width (``proj_size`` if the LSTM
has a projection, else ``H``), ``G`` gates.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CellSpec:
    """Static description of one cell kind.

    Attributes:
        name: op-level name: ``rnn_tanh``, ``rnn_relu``, ``lstm`` or ``gru``.
        code: the integer kernels use for the cell (numba, triton, and csrc's ``CellKind``,
            whose order a test checks against this one).
        num_gates: G; ``w_ih`` has ``G*H`` rows, in ``gate_order``.
        gate_order: torch.nn's row order of the stacked gate weights.
        has_cell_state: LSTM carries ``c`` besides ``h``.
        workspace: names of the per-step (T, B, H) slabs the forward saves for backward, in order;
            the workspace tensor is (T, B, len(workspace) * H), empty when nothing is saved.
    """

    name: str
    code: int
    num_gates: int
    gate_order: tuple[str, ...]
    has_cell_state: bool
    workspace: tuple[str, ...]

    @property
    def workspace_width(self) -> int:
        return len(self.workspace)


# RNN saves nothing: the derivative of tanh / relu is read off the output h_t itself.
RNN_TANH = CellSpec("rnn_tanh", 0, 1, ("h",), False, ())
RNN_RELU = CellSpec("rnn_relu", 1, 1, ("h",), False, ())
# LSTM saves the activated gates and the new cell state c_t (o * tanh(c_t) is recomputed).
LSTM = CellSpec("lstm", 2, 4, ("i", "f", "g", "o"), True, ("i", "f", "g", "o", "c"))
# GRU saves the activated gates and hn = W_hn h_{t-1} + b_hn, which dr needs.
GRU = CellSpec("gru", 3, 3, ("r", "z", "n"), False, ("r", "z", "n", "hn"))

CELLS: dict[str, CellSpec] = {c.name: c for c in (RNN_TANH, RNN_RELU, LSTM, GRU)}


def cell_spec(name: str) -> CellSpec:
    """Return the spec of cell ``name``; raise ValueError naming the accepted cells otherwise."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {name!r}") from None


def module_cell_name(mode: str) -> str:
    """Map torch.nn's ``mode`` ('RNN_TANH', 'RNN_RELU', 'LSTM', 'GRU') to the op-level cell name."""
    return {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}[mode]


def step_weight_shapes(cell: str, input_size: int, hidden_size: int) -> tuple:
    """torch.nn's shapes of a cell's (weight_ih, weight_hh, bias_ih, bias_hh): (G*H, I),
    (G*H, H), (G*H,), (G*H,)."""
    rows = cell_spec(cell).num_gates * hidden_size
    return (rows, input_size), (rows, hidden_size), (rows,), (rows,)


def layer_weight_shapes(cell: str, names, input_size: int, hidden_size: int, proj_size: int,
                        bidirectional: bool) -> list:
    """torch.nn's shape of each of an RNN/LSTM/GRU's flat weights ``names``
    (``weight_ih_l{k}[_reverse]``, ``weight_hh_l..``, ``bias_ih_l..``, ``bias_hh_l..``,
    ``weight_hr_l..``)."""
    rows = cell_spec(cell).num_gates * hidden_size
    width = proj_size or hidden_size
    shapes = []
    for name in names:
        kind, layer = name.rsplit("_l", 1)
        below = input_size if layer.split("_")[0] == "0" else width * (2 if bidirectional else 1)
        shapes.append({"weight_ih": (rows, below), "weight_hh": (rows, width),
                       "bias_ih": (rows,), "bias_hh": (rows,),
                       "weight_hr": (proj_size, hidden_size)}[kind])
    return shapes
