"""TorchScript scripting of fastrnn modules: ``torch.jit.script`` compiles torch.nn's own
forward, on the module's own Parameter objects.

fastrnn's forward is Python around custom ops and dispatch, which TorchScript cannot compile.
``torch.jit.script`` calls ``__prepare_scriptable__`` on every submodule before compiling
(``torch.jit._script.call_prepare_scriptable_func``); fastrnn's modules answer with a view of
themselves as their torch.nn base class: a new instance of that class whose attribute dict is
a shallow copy of the module's, so it holds the *same* Parameter objects, buffers, submodules
and hooks (nothing copied, nothing to go stale; ``torch.jit.save``/``load`` round-trip the
scripted torch.nn module as usual).

Note what torch itself does with the answer: it writes the prepared module back into the
parent's ``_modules``, so after ``torch.jit.script(model)`` the eager ``model`` holds the
torch.nn view (same parameters and state_dict, torch.nn's speed). ``fastrnn.convert(model)``
turns it back in place.
"""
from __future__ import annotations

from torch import nn


def torch_view(module: nn.Module) -> nn.Module:
    """``module`` (a fastrnn module) as an instance of its torch.nn base class
    (``module._torch_class``) sharing every Parameter, buffer, submodule and hook."""
    cls = module._torch_class
    view = cls.__new__(cls)
    state = dict(module.__dict__)
    state.pop("backend", None)
    view.__dict__.update(state)
    return view
