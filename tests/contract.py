"""Run a backend and the float64 reference through the backend contract on the same inputs."""
import torch

from fastrnn import reference

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
    return torch.arange(seq_len).view(-1, 1) < torch.as_tensor(lengths).view(1, -1)
