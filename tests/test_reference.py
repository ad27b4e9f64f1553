"""The oracle itself: the hand-written reverse loop of ``reference.backward`` equals autograd
through ``reference.recurrence``, and ``reference.forward`` equals ``recurrence``."""
import pytest
import torch

from fastrnn import reference
from fastrnn.testing import recurrence_inputs

CASES = [("rnn_tanh", 0), ("rnn_relu", 0), ("lstm", 0), ("lstm", 3), ("gru", 0)]


@pytest.mark.parametrize("cell,proj", CASES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 2, 0, 4]])
@pytest.mark.parametrize("bias", [True, False])
def test_manual_backward_equals_autograd(cell, proj, reverse, lengths, bias):
    a = recurrence_inputs(cell, 5, 4, 6, proj=proj, bias=bias, lengths=lengths, seed=3,
                          requires_grad=True)
    args = (a["xg"], a["w_hh"], a["b_hn"], a["h0"], a["c0"], a["w_hr"], a["lengths"], reverse)
    y, h_n, c_n = reference.recurrence(cell, *args)
    y2, h_n2, c_n2, ws = reference.forward(cell, *args, True)
    torch.testing.assert_close(y2, y, atol=1e-14, rtol=0)
    torch.testing.assert_close(h_n2, h_n, atol=1e-14, rtol=0)
    gen = torch.Generator().manual_seed(4)
    g_y = torch.randn(y.shape, generator=gen, dtype=y.dtype)
    g_h = torch.randn(h_n.shape, generator=gen, dtype=y.dtype)
    g_c = torch.randn(c_n.shape, generator=gen, dtype=y.dtype) if c_n is not None else None
    outs, grads = [y, h_n], [g_y, g_h]
    if c_n is not None:
        outs.append(c_n)
        grads.append(g_c)
    wrt = [a["xg"], a["h0"]] + ([a["c0"]] if a["c0"] is not None else [])
    expected = torch.autograd.grad(outs, wrt, grads)
    d_xg, d_hn_gru, d_h_proj, d_h0, d_c0 = reference.backward(
        cell, g_y, g_h, g_c if g_c is not None else g_y.new_empty(0), a["w_hh"], a["b_hn"],
        a["h0"], a["c0"], a["w_hr"], a["lengths"], reverse, y2, ws)
    torch.testing.assert_close(d_xg, expected[0], atol=1e-13, rtol=0)
    torch.testing.assert_close(d_h0, expected[1], atol=1e-13, rtol=0)
    if c_n is not None:
        torch.testing.assert_close(d_c0, expected[2], atol=1e-13, rtol=0)
    assert d_hn_gru.numel() == (y.shape[0] * y.shape[1] * 6 if cell == "gru" else 0)
    assert d_h_proj.shape == (y.shape if proj else (0,))
    if lengths is not None:
        invalid = torch.arange(5).view(-1, 1) >= torch.tensor(lengths).view(1, -1)
        assert (y2[invalid] == 0).all() and (d_xg[invalid] == 0).all()

