"""Run a backend and the float64 reference through the backend contract (``fastrnn.backends``)
on the same inputs, and check everything the contract promises (``check_contract``)."""
import torch

from fastrnn import reference
from fastrnn.cells import cell_spec

ORDER = ("xg", "w_hh", "b_hn", "h0", "c0", "w_hr", "lengths")


def run_both(backend, cell, args, reverse):
    """Forward and backward of ``backend`` and of the float64 reference on the same inputs
    (``args``: dict from ``fastrnn.testing.recurrence_inputs``), with the same random output
    gradients. Returns (fwd_ref, fwd, bwd_ref, bwd), all on the CPU."""
    ref_args = {k: (v.double() if v is not None and v.is_floating_point() else v)
                for k, v in args.items()}
    fwd_ref = reference.forward(cell, *(ref_args[k] for k in ORDER), reverse, True)
    fwd = backend.forward(cell, *(args[k] for k in ORDER), reverse, True)
    gen = torch.Generator().manual_seed(7)
    grads = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device)
             for t in fwd_ref[:3]]
    bwd_ref = reference.backward(cell, *grads, *(ref_args[k] for k in ORDER[1:]), reverse,
                                 fwd_ref[0], fwd_ref[3])
    dtype = args["xg"].dtype
    bwd = backend.backward(cell, *(g.to(dtype) for g in grads), *(args[k] for k in ORDER[1:]),
                           reverse, fwd[0], fwd[3])

    def cpu(outs):
        return tuple(t.cpu() for t in outs)
    return cpu(fwd_ref), cpu(fwd), cpu(bwd_ref), cpu(bwd)


def valid_steps(lengths, seq_len, batch):
    """(T, B) bool: the steps where each sequence is running."""
    if lengths is None:
        return torch.ones(seq_len, batch, dtype=torch.bool)
    return torch.arange(seq_len).view(-1, 1) < torch.as_tensor(lengths).view(1, -1).cpu()


def _fresh(outputs, inputs):
    """No output shares memory with an input or another output (empty ones aside)."""
    def spans(ts):
        return [(t.untyped_storage().data_ptr(), t) for t in ts
                if t is not None and t.numel()]
    seen = spans(inputs)
    for ptr, t in spans(outputs):
        assert all(ptr != other for other, _ in seen), "an output aliases another tensor"
        seen.append((ptr, t))


def check_contract(backend, cell, args, reverse, tol):
    """Run ``backend`` (an object with the contract's ``forward``/``backward``) and the float64
    reference on ``args`` (``fastrnn.testing.recurrence_inputs``) and assert the contract:
    shapes and dtypes; values within ``tol`` (atol = rtol) at valid steps; y exactly 0 and the
    workspace finite at invalid steps; absent outputs empty; every output a fresh tensor."""
    spec = cell_spec(cell)
    dtype = args["xg"].dtype
    seq_len, batch = args["xg"].shape[:2]
    fwd_ref, fwd, bwd_ref, bwd = run_both(backend, cell, args, reverse)
    valid = valid_steps(args["lengths"], seq_len, batch)
    names = ("y", "h_n", "c_n", "workspace", "d_xg", "d_hn_gru", "d_h_proj", "d_h0", "d_c0")
    for name, got, want in zip(names, fwd + bwd, fwd_ref + bwd_ref):
        assert got.shape == want.shape or not want.numel() and not got.numel(), name
        if not want.numel():
            continue
        assert got.dtype == dtype, name
        if name == "workspace":  # only valid steps are specified; the rest must be finite
            assert torch.isfinite(got[~valid]).all(), "workspace not finite at invalid steps"
            got, want = got[valid], want[valid]
        torch.testing.assert_close(got.double(), want, atol=tol, rtol=tol, msg=name)
    assert torch.equal(fwd[0][~valid], torch.zeros_like(fwd[0][~valid])), "y must be 0 there"
    if not spec.has_cell_state:
        assert not fwd[2].numel() and not bwd[4].numel()
    inputs = [args[k] for k in ORDER]
    _fresh(fwd, inputs)
    _fresh(bwd, inputs + list(fwd))
