"""``torch.ao.quantization`` (``quantize_dynamic``, ``propagate_qconfig_`` + ``convert``) treats
a fastrnn module exactly as it treats the torch.nn module it replaces.

torch's quantization keys everything on the exact class: the qconfig spec lookup
(``qconfig_dict.get(type(module))``), the module mapping (``type(mod) in mapping``) and the
quantized modules' ``from_float`` (``type(mod) not in {nn.LSTM, nn.GRU}`` raises). A fastrnn
subclass matches none of them, so ``quantize_dynamic(model, {nn.LSTM, nn.Linear})`` left it
unquantized. There is no registration hook for subclasses, so fastrnn wraps the one function
every eager-mode flow passes through, ``torch.ao.quantization.quantize.propagate_qconfig_``:

1. a spec keyed by a torch.nn recurrent class also applies to its fastrnn class;
2. after the qconfigs are attached, every fastrnn module that received one becomes its
   torch.nn base class again (``__class__`` only: the same module object and Parameters),
   so ``convert`` swaps it for the quantized torch.nn module exactly as it would torch.nn's.

Modules that receive no qconfig keep their fastrnn class. ``quantize_dynamic`` works on a deep
copy unless ``inplace=True``, as for torch.nn. Installed once, when the first fastrnn module is
made (``install``), only if torch.ao.quantization is importable.
"""
from __future__ import annotations

import functools
import importlib

from torch import nn

_INSTALLED = False


def _fastrnn_classes() -> dict:
    """torch.nn class -> fastrnn class, for the six recurrent modules."""
    from fastrnn.convert import _REPLACEMENTS
    return dict(_REPLACEMENTS)


def _extend_spec(qconfig_spec):
    """The spec with each torch.nn recurrent class's entry also under its fastrnn class."""
    if not isinstance(qconfig_spec, dict):
        return qconfig_spec
    spec = dict(qconfig_spec)
    for torch_class, ours in _fastrnn_classes().items():
        if torch_class in spec and ours not in spec:
            spec[ours] = spec[torch_class]
    return spec


def _back_to_torch(model: nn.Module) -> None:
    """Every fastrnn module given a qconfig becomes its torch.nn base class (in place)."""
    ours = set(_fastrnn_classes().values())
    for module in model.modules():
        if type(module) in ours and getattr(module, "qconfig", None) is not None:
            module.__class__ = module._torch_class
            module.__dict__.pop("backend", None)


def _wrap(propagate):
    @functools.wraps(propagate)
    def propagate_qconfig_(module, qconfig_dict=None, *args, **kwargs):
        result = propagate(module, _extend_spec(qconfig_dict), *args, **kwargs)
        _back_to_torch(module)
        return result

    propagate_qconfig_._fastrnn_wrapped = True
    return propagate_qconfig_


def install() -> None:
    """Wrap ``torch.ao.quantization.quantize.propagate_qconfig_`` (once; see module doc)."""
    global _INSTALLED
    if _INSTALLED:
        return
    _INSTALLED = True
    try:
        quantize = importlib.import_module("torch.ao.quantization.quantize")
    except ImportError:  # a torch build without eager-mode quantization: nothing to adapt
        return
    if not getattr(quantize.propagate_qconfig_, "_fastrnn_wrapped", False):
        wrapped = _wrap(quantize.propagate_qconfig_)
        quantize.propagate_qconfig_ = wrapped
        package = importlib.import_module("torch.ao.quantization")
        if getattr(package, "propagate_qconfig_", None) is not None:
            package.propagate_qconfig_ = wrapped
