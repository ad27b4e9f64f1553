"""Drop-in ``RNN``, ``LSTM``, ``GRU``: subclasses of the torch.nn classes (same constructor,
parameters, state_dict, errors) whose forward runs on fastrnn's fused recurrence.

Argument checks reuse torch.nn's own methods (``check_forward_args``, ``permute_hidden``);
errors that torch raises deep inside its C++ kernels (state dtype or device mismatches) are
produced by calling torch.nn itself on the offending input, so type and message are exactly
the installed torch's.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fastrnn.autocast import autocast_compute_dtype
from fastrnn.cells import layer_weight_shapes, module_cell_name
from fastrnn.contexts import context_backend, is_symbolic
from fastrnn.eager import only_eager_sees
from fastrnn.dispatch import (_module_choices, check_backend_name, choose_module_backend,
                              env_backend_token, module_choice_key, requested_backend)
from fastrnn.layers import run_stack
from fastrnn import dispatch, layer_step, native_call, sequence_inference
from fastrnn.scripting import torch_view


def raise_like_torch(torch_forward, *args, expected: str):
    """Call torch.nn's forward on an input we know it rejects, so its own exception escapes.

    If torch accepts the input after all, raise rather than compute something else silently.
    """
    torch_forward(*args)
    raise RuntimeError(f"fastrnn rejects this input ({expected}) but torch.nn accepted it; "
                       "please report this as a fastrnn bug")


def check_tensors_agree(input: torch.Tensor, states, weights, torch_forward, *args) -> None:
    """States and weights must share the input's device, and states its dtype (torch checks
    these in C++; we let torch raise its own error for them)."""
    for state in states:
        if state.device != input.device or state.dtype != input.dtype:
            raise_like_torch(torch_forward, *args,
                             expected="hidden state device and dtype equal to the input's")
    for weight in weights:
        if weight is not None and weight.device != input.device:
            raise_like_torch(torch_forward, *args, expected="parameters on the input's device")


def allow_dynamo_tracing() -> None:
    """Let torch.compile trace our modules. Dynamo refuses every instance of nn.RNN/LSTM/GRU
    unless ``torch._dynamo.config.allow_rnn`` is set; ours are such instances (for isinstance
    parity) but their forward is plain traceable Python around custom ops. Set only once a
    fastrnn module exists; it also lets dynamo trace plain torch.nn RNNs (torch's own option)."""
    import torch._dynamo

    from fastrnn import dispatch
    torch._dynamo.config.allow_rnn = True
    dispatch.prepare_for_dynamo()


# A call's short key (what _choose sees, without the FASTRNN_BACKEND read explicit choices
# never need) -> dispatch's full key for it: the choice itself stays in dispatch's dict, so
# dispatch.clear_caches() still forgets it.
_choice_keys: dict = {}


class BackendMixin:
    """The ``backend`` attribute every fastrnn module adds to its torch.nn base class, and the
    choice of what runs a call: ``native`` (the torch.nn base class's own forward) or a kernel."""

    def _init_backend(self, backend: str) -> None:
        self.backend = check_backend_name(backend)
        allow_dynamo_tracing()

    def _choose(self, x: torch.Tensor, cell: str, seq_len: int, batch: int, hidden: int,
                proj: int, packed: bool, kind: str) -> str:
        """The backend of this call. Everything the choice depends on forms one key, looked up
        in a per-process dict: a repeated kind of call costs ~1 us, not a dispatch."""
        grad = torch.is_grad_enabled() and (
            x.requires_grad or any(w.requires_grad for w in self._weights_for_dispatch()))
        device = x.device
        dtype = x.dtype
        eager = not (torch.jit.is_tracing() or torch._C._are_functorch_transforms_active()
                     or torch.compiler.is_compiling())
        if eager:  # no context to consult (fastrnn.contexts): a repeated call is two lookups
            key = (self.backend, cell, device, dtype, seq_len, batch, hidden, proj, packed,
                   grad, self.training, kind, torch.is_autocast_enabled(device.type),
                   env_backend_token() if self.backend == "auto" else None)
            full_key = _choice_keys.get(key)
            if full_key is not None:
                backend = _module_choices.get(full_key)  # None once dispatch.clear_caches ran
                if backend is not None:
                    return backend
        if dtype.is_floating_point and torch.is_autocast_enabled(device.type):
            # auto has no measurements under autocast: torch.nn's own path (or the kernel
            # computing in the autocast dtype, when chosen explicitly)
            dtype = torch.get_autocast_dtype(device.type)
        mode = "training" if grad else "inference"
        # tracing, exporting, torch.func transforms, symbolic sizes: fastrnn.contexts decides
        backend = context_backend(requested_backend(self.backend), cell, device, dtype,
                                  seq_len, batch, hidden, proj, packed)
        if backend is not None:
            return backend
        backend = choose_module_backend(self.backend, cell, device, dtype, seq_len, batch,
                                        hidden, proj, packed, mode, self.training, kind)
        if eager and not is_symbolic(seq_len, batch):
            if len(_choice_keys) >= 65536:
                _choice_keys.clear()
            _choice_keys[key] = module_choice_key(self.backend, cell, device, dtype, seq_len,
                                                  batch, hidden, proj, packed, mode,
                                                  self.training, kind)
        return backend

    def __prepare_scriptable__(self):
        """torch.jit.script compiles torch.nn's forward on this module's own parameters
        (fastrnn.scripting)."""
        return torch_view(self)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        backend = getattr(self, "backend", "auto")
        return s if backend == "auto" else s + f", backend={backend!r}"


class RecurrentMixin(BackendMixin):
    """What RNN, LSTM and GRU share on top of torch.nn.RNNBase."""

    _torch_class: type

    def _weights_for_dispatch(self):
        return self._flat_weights

    def _expected_weight_shapes(self) -> list:
        """torch.nn's shape of each of ``_flat_weights`` for this module's configuration
        (kept per configuration in the module's __dict__)."""
        config = (self.mode, self.input_size, self.hidden_size, self.proj_size,
                  self.num_layers, self.bidirectional, self.bias)
        cached = self.__dict__.get("_fastrnn_weight_shapes")
        if cached is None or cached[0] != config:
            cached = self.__dict__["_fastrnn_weight_shapes"] = (config, layer_weight_shapes(
                module_cell_name(self.mode), self._flat_weights_names, self.input_size,
                self.hidden_size, self.proj_size, self.bidirectional))
        return cached[1]

    def _check_weight_shapes(self) -> None:
        """Raise a RuntimeError naming a parameter replaced by one of another shape than the
        module's configuration needs. Our own message: torch.nn's CPU kernels accept some such
        weights (an LSTM's weight_hh_l0 of (4H, 3) for H=8 ran without an error, reading
        memory it does not own), so there is no torch.nn error to re-raise."""
        for name, w, shape in zip(self._flat_weights_names, self._flat_weights,
                                  self._expected_weight_shapes()):
            if w.shape != shape:
                raise RuntimeError(
                    f"{type(self).__name__}: {name} has shape {tuple(w.shape)}, expected "
                    f"{tuple(shape)} for input_size={self.input_size}, hidden_size="
                    f"{self.hidden_size}, proj_size={self.proj_size}")

    def _probe_ctor(self):
        kwargs = {}
        if self.mode == "RNN_RELU":
            kwargs["nonlinearity"] = "relu"
        if self.proj_size > 0:
            kwargs["proj_size"] = 2
        return (2, 3), kwargs

    def _expand_input(self, input, hx):
        """torch.nn's preamble: returns (x (T,B,I) time-major, lengths|None, hx sorted, info)."""
        given_hx = hx
        is_lstm = self.mode == "LSTM"
        name = {"LSTM": "LSTM", "GRU": "GRU"}.get(self.mode, "RNN")
        directions = 2 if self.bidirectional else 1
        width = self.proj_size if self.proj_size > 0 else self.hidden_size
        packed = isinstance(input, PackedSequence)
        info = {"packed": packed, "batched": True}
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            info.update(batch_sizes=batch_sizes, sorted_indices=sorted_indices,
                        unsorted_indices=unsorted_indices)
            x, batch_sizes_arg = data, batch_sizes
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            if input.dim() not in (2, 3):
                tail = "D tensor instead" if name == "RNN" else "D instead"
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}{tail}")
            batched = input.dim() == 3
            info["batched"] = batched
            batch_dim = 0 if self.batch_first else 1
            x = input if batched else input.unsqueeze(batch_dim)
            batch_sizes_arg = None
            if hx is not None and is_lstm:
                want = 3 if batched else 2
                if hx[0].dim() != want or hx[1].dim() != want:
                    kind = "batched 3-D" if batched else "unbatched 2-D"
                    raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but "
                                       f"got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
                if not batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            elif hx is not None:
                want = 3 if batched else 2
                if hx.dim() != want:
                    kind = "batched 3-D" if batched else "unbatched 2-D"
                    raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got "
                                       f"{hx.dim()}-D tensor")
                if not batched:
                    hx = hx.unsqueeze(1)
        batch = int(batch_sizes_arg[0]) if packed else x.size(0 if self.batch_first else 1)
        if hx is None:
            zeros = dict(dtype=x.dtype, device=x.device)
            h_zeros = torch.zeros(self.num_layers * directions, batch, width, **zeros)
            hx = (h_zeros, torch.zeros(self.num_layers * directions, batch, self.hidden_size,
                                       **zeros)) if is_lstm else h_zeros
        if packed and is_lstm:
            # torch.nn.LSTM skips its Python shape checks on packed input and fails later in
            # C++; let torch raise that error itself.
            try:
                self.check_forward_args(x, hx, batch_sizes_arg)
            except (RuntimeError, ValueError):
                raise_like_torch(self._torch_class.forward, self, input, given_hx,
                                 expected="states matching the packed batch")
        else:
            self.check_forward_args(x, hx, batch_sizes_arg)
        seq_len = (batch_sizes_arg.numel() if packed else
                   x.size(1 if self.batch_first else 0))
        if seq_len == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        return x, batch_sizes_arg, hx, info

    def _call_backend(self, input) -> str:
        """'native' or the kernel for this call; 'auto'/the explicit name when the input is
        malformed (the fastrnn path then raises torch.nn's own error for it).

        A plain-tensor call in plain eager mode (no autocast) of a kind this module saw
        before is one lookup in the module's memo, ~1.2 us: where auto sends the call to
        torch.nn, this is all fastrnn adds to torch.nn's own time (``_choose`` alone cost
        ~2.8 us with the size parsing before it). The memo holds while dispatch keeps the
        choices it repeats (``dispatch.choices_generation``)."""
        if input.__class__ is not torch.Tensor or not only_eager_sees():
            return self._call_backend_uncached(input)
        device = input.device
        if torch.is_autocast_enabled(device.type):  # asked afresh, as dispatch does then
            return self._call_backend_uncached(input)
        w = self._flat_weights
        grad = torch.is_grad_enabled() and (input.requires_grad
                                            or any(p.requires_grad for p in w))
        key = (input.shape, input.dtype, device, grad, self.training, self.backend,
               self.batch_first, env_backend_token())
        memo = self.__dict__.get("_fastrnn_backends")
        if memo is not None and memo[0] == dispatch.choices_generation:
            backend = memo[1].get(key)
            if backend is not None:
                return backend
        else:
            memo = None
        backend = self._call_backend_uncached(input)
        if memo is None or len(memo[1]) >= 256:
            memo = self.__dict__["_fastrnn_backends"] = (dispatch.choices_generation, {})
        memo[1][key] = backend
        return backend

    def _call_backend_uncached(self, input) -> str:
        if isinstance(input, PackedSequence):
            x, seq_len = input.data, input.batch_sizes.numel()
            batch, packed = (int(input.batch_sizes[0]) if seq_len else 0), True
        elif isinstance(input, torch.Tensor) and input.dim() in (2, 3):
            x, packed = input, False
            if input.dim() == 3:
                seq_len = input.size(1 if self.batch_first else 0)
                batch = input.size(0 if self.batch_first else 1)
            else:
                seq_len, batch = input.size(0), 1
        else:
            return self.backend
        if seq_len == 0 or batch == 0:
            return self.backend
        return self._choose(x, module_cell_name(self.mode), seq_len, batch, self.hidden_size,
                            self.proj_size, packed, "sequence")

    def forward(self, input, hx=None):
        # the backend first (a repeated kind of call: one lookup), so that a call auto sends
        # to torch.nn pays nothing for fastrnn's paths (they cost 5 us a T=1 call before);
        # native: torch.nn's forward, or for a repeated dense CPU call its op (native_call)
        backend = self._call_backend(input)
        if backend == "native":
            return native_call.run(self, input, hx)
        if input.__class__ is torch.Tensor:
            if self.num_layers == 1:
                # one step of one layer: the cells' fused step where it applies (layer_step)
                stepped = layer_step.step(self, input, hx)
                if stepped is not None:
                    return stepped
            # no graph to record, numba chosen: the lean path (sequence_inference)
            done = sequence_inference.run(self, input, hx)
            if done is not None:
                return done
        self._update_flat_weights()
        given_hx = hx
        x, batch_sizes, hx, info = self._expand_input(input, hx)
        states = list(hx) if self.mode == "LSTM" else [hx]
        if not torch.compiler.is_compiling():
            check_tensors_agree(x, states, self._flat_weights,
                                self._torch_class.forward, self, input, given_hx)
            self._check_weight_shapes()
        weights = self._flat_weights
        compute = autocast_compute_dtype(self, self._torch_class, *self._probe_ctor(), x.dtype,
                                         info["packed"], x.device.type)
        if compute is not None:
            x = x.to(compute)
            states = [s.to(compute) for s in states]
            weights = [w.to(compute) for w in weights]
        lengths = None
        if info["packed"]:
            x, lengths_cpu = pad_packed_sequence(PackedSequence(x, batch_sizes))
            lengths = lengths_cpu.to(x.device)
        elif self.batch_first:
            x = x.transpose(0, 1)
        no_autocast = (torch.autocast(x.device.type, enabled=False) if compute is not None
                       else contextlib.nullcontext())
        with no_autocast:
            out, h_n, c_n = run_stack(
                module_cell_name(self.mode), x, lengths, states[0],
                states[1] if self.mode == "LSTM" else None, weights, self.bias,
                self.proj_size > 0, self.num_layers, self.bidirectional, self.dropout,
                self.training, backend)
        hidden = (h_n, c_n) if self.mode == "LSTM" else h_n
        if info["packed"]:
            data = pack_padded_sequence(out, lengths_cpu).data
            packed = PackedSequence(data, batch_sizes, info["sorted_indices"],
                                    info["unsorted_indices"])
            return packed, self.permute_hidden(hidden, info["unsorted_indices"])
        if self.batch_first:
            out = out.transpose(0, 1)
        if not info["batched"]:
            out = out.squeeze(0 if self.batch_first else 1)
            hidden = ((hidden[0].squeeze(1), hidden[1].squeeze(1)) if self.mode == "LSTM"
                      else hidden.squeeze(1))
        return out, hidden


class RNN(RecurrentMixin, nn.RNN):
    """Drop-in ``torch.nn.RNN`` (tanh or relu); extra keyword ``backend`` ('auto' default)."""

    _torch_class = nn.RNN

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class LSTM(RecurrentMixin, nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` (proj_size included); extra keyword ``backend``."""

    _torch_class = nn.LSTM

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)


class GRU(RecurrentMixin, nn.GRU):
    """Drop-in ``torch.nn.GRU``; extra keyword ``backend``."""

    _torch_class = nn.GRU

    def __init__(self, *args, backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self._init_backend(backend)
