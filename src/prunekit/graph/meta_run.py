"""Run a forward's ATen ops on shape-only stand-ins (PyTorch's ``meta`` device): every shape, no arithmetic.

Why: graph building and the pruned-model check each trace one forward, and on a CNN or ViT the real
convolutions and matmuls were half of graph + prune time (ResNet-50: ~2 × 55 ms of ~0.24 s). Parameters and
buffers run as meta stand-ins, so everything computed from them is meta; tensors computed from the
inputs alone (masks, position ids) stay real, so a forward that checks them (``if mask.all():``) still
runs. A forward that reads a value computed from the weights (``.item()``, ``nonzero``, a boolean
mask, ``.tolist()``) or writes a real tensor in place cannot run this way: :class:`MetaRunner` keeps the
first such error (also where the forward catches it) and the caller records the forward for real.

PyTorch's own meta kernels give the shapes, except for a few frequent ops whose meta kernels are Python
decompositions costing ~0.1–1.4 ms each (batch norm, layer norm, softmax, matmuls, concatenation,
elementwise ops: 90% of a meta forward of ResNet-50 or ViT-B/16 before they were added). Those get the
shapes, strides and dtypes the CPU kernels give, in cases that leave no doubt (dense operands of one
layout and dtype); anything else goes to PyTorch's kernel. ``tests/test_graph_meta_run.py`` checks each
against the real kernel.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes

aten = torch.ops.aten
META = torch.device("meta")


class NeedsValues(RuntimeError):
    """The forward needs values a shape-only run does not have."""


class MetaRunner:
    """Runs ATen ops for a recording: on meta stand-ins where an operand is meta or one of ``heavy``
    (the model's parameters and buffers), for real otherwise. ``error`` is the first failure of a meta op
    (the forward may have caught it); a factory asking for the meta device gets ``device`` instead."""

    def __init__(self, heavy: Iterable[torch.Tensor], device: torch.device) -> None:
        self.heavy = {id(t): t for t in heavy}
        self.twins: dict[int, torch.Tensor] = {}
        self.device = device
        self.error: BaseException | None = None

    def __call__(self, func: torch._ops.OpOverload, args: tuple, kwargs: dict[str, Any]) -> Any:
        if not self._stands_in(args) and not (kwargs and self._stands_in(kwargs.values())):
            if kwargs.get("device") == META:
                kwargs = {**kwargs, "device": self.device}
            return func(*args, **kwargs)
        try:
            data_dependent, spots, fast = _facts(func)
            if data_dependent:
                raise NeedsValues(f"aten.{func.__name__} reads values")
            for written in _written(spots, args, kwargs):
                if not written.is_meta:  # a real tensor (or a weight) the forward changes in place
                    raise NeedsValues(f"aten.{func.__name__} writes a real tensor in place")
            # a fast rule reads only shapes, strides and dtypes (the same on a tensor and its stand-in)
            out = None if fast is None else fast(*args, **kwargs)
            if out is not None:
                return out
            twin = self._twin
            meta_args = tuple([_swap(a, twin) if type(a) in (list, tuple) else twin(a) for a in args])
            meta_kwargs = {k: _swap(v, twin) for k, v in kwargs.items()} if kwargs else kwargs
            if "device" in meta_kwargs:
                meta_kwargs["device"] = META
            return func(*meta_args, **meta_kwargs)
        except Exception as error:
            self.error = self.error or error
            raise

    def _stands_in(self, values: Iterable[Any]) -> bool:
        """Whether a tensor among ATen arguments ``values`` (lists one deep: ``cat``'s ``Tensor[]``) is
        meta or a weight."""
        heavy = self.heavy
        for value in values:
            for t in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(t, torch.Tensor) and (t.is_meta or id(t) in heavy):
                    return True
        return False

    def device_move(
        self, func: torch._ops.OpOverload, args: tuple, kwargs: dict[str, Any]
    ) -> torch.Tensor | None:
        """What ``x.to(device)`` gives where the real forward moves nothing (``x`` is a meta stand-in for
        a tensor on that device, or the device asked for is a meta tensor's): ``x`` or its stand-in,
        recorded as ``x``; None for any other op. (A real forward calls no op there.)"""
        if func is not aten._to_copy.default or "device" not in kwargs or not kwargs.keys() <= _MOVE_OPTIONS:
            return None
        x = args[0]
        if kwargs.get("dtype") not in (None, x.dtype) or kwargs.get("layout") not in (None, torch.strided):
            return None
        if kwargs.get("memory_format") not in (None, torch.preserve_format):
            return None
        target = self.device if kwargs["device"] == META else kwargs["device"]
        if target != (self.device if x.is_meta else x.device):
            return None
        return self._twin(x) if id(x) in self.heavy else x

    def _twin(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or value.is_meta:
            return value
        twin = self.twins.get(id(value))
        if twin is None:
            twin = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=META)
            if id(value) in self.heavy:  # alive as long as the model: its id is not reused
                self.twins[id(value)] = twin
        return twin


class MetaCalls(TorchFunctionMode):
    """Torch functions that must not see the meta device a stand-in reports:

    - ``F.scaled_dot_product_attention``: PyTorch takes the unfused math path for meta tensors, while a
      CPU forward runs the fused flash kernel (whose channel rule prunekit has). The backend is chosen
      on real, uninitialised tensors of the same shapes, and the ATen ops of that choice are called (a
      boolean mask is made additive first, by the same ops).
    - ``torch.tensor(data, device=x.device)`` and the like: made on the real device, as for real."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return self._attention(func, args, kwargs)
        device = kwargs.get("device") if func in _DATA_CONSTRUCTORS else None
        if device is not None and torch.device(device) == META:
            kwargs = {**kwargs, "device": self.device}
        return func(*args, **kwargs)

    def _attention(self, func, args, kwargs):  # type: ignore[no-untyped-def]
        call = _SDPA_SIGNATURE.bind(*args, **kwargs)
        call.apply_defaults()
        q, k, v, mask = (call.arguments[n] for n in ("query", "key", "value", "attn_mask"))
        if not any(isinstance(t, torch.Tensor) and t.is_meta for t in (q, k, v, mask)):
            return func(*args, **kwargs)
        options = {n: call.arguments[n] for n in ("dropout_p", "is_causal", "scale", "enable_gqa")}
        with _disable_current_modes():  # the choice is not an op of the forward
            real = [None if t is None else self._real(t) for t in (q, k, v, mask)]
            choice = torch._fused_sdp_choice(*real[:3], attn_mask=real[3], **options)
        if choice == int(SDPBackend.MATH):
            return func(*args, **kwargs)
        if choice != int(SDPBackend.FLASH_ATTENTION) or self.device.type != "cpu":
            raise NeedsValues(f"attention kernel {choice} on {self.device} is not emulated on meta tensors")
        if mask is not None and mask.dtype == torch.bool:
            ninf = torch.scalar_tensor(-math.inf, dtype=q.dtype, device=mask.device)
            zero = torch.scalar_tensor(0.0, dtype=q.dtype, layout=torch.strided, device=mask.device)
            mask = torch.where(mask, zero, ninf)
        extra = {} if mask is None else {"attn_mask": mask}
        extra.update({} if options["scale"] is None else {"scale": options["scale"]})
        flash = aten._scaled_dot_product_flash_attention_for_cpu
        return flash(q, k, v, options["dropout_p"], options["is_causal"], **extra)[0]

    def _real(self, t: torch.Tensor) -> torch.Tensor:
        device = self.device if t.is_meta else t.device
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)


def _sdpa(  # type: ignore[no-untyped-def]
    query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    """The signature of ``F.scaled_dot_product_attention`` (a builtin: ``inspect`` cannot read it)."""


_SDPA_SIGNATURE = inspect.signature(_sdpa)
_DATA_CONSTRUCTORS = (torch.tensor, torch.as_tensor, torch.asarray)


@dataclass(frozen=True)
class Snapshot:
    """Every module's attributes (its live ``vars``) and every dict or list they hold (``_buffers``, a
    cache, features a forward appends to), each with a shallow copy taken by :func:`snapshot`."""

    attributes: list[dict[str, Any]]
    attribute_copies: list[dict[str, Any]]
    dicts: list[dict[Any, Any]]
    dict_copies: list[dict[Any, Any]]
    lists: list[list[Any]]
    list_copies: list[list[Any]]


def snapshot(modules: Iterable[nn.Module]) -> Snapshot:
    """What :func:`restore` puts back after a forward on stand-ins. ``modules``: every module of the
    model (``model.modules()``)."""
    attributes = [vars(module) for module in modules]
    copies = list(map(dict.copy, attributes))
    held = [c for c in chain.from_iterable(map(dict.values, copies)) if type(c) is dict or type(c) is list]
    dicts, lists = [c for c in held if type(c) is dict], [c for c in held if type(c) is list]
    return Snapshot(
        attributes, copies, dicts, list(map(dict.copy, dicts)), lists, list(map(list.copy, lists))
    )


def restore(saved: Snapshot) -> bool:
    """Put every module's attributes back as :func:`snapshot` found them; return whether any had changed.

    Checked first for all containers at once (lengths, then keys or items and values by identity, in C
    over the concatenation: 0.7× of a check per container on MobileNetV2's 180 modules); only where
    something differs is each container compared and put back."""
    if (
        _unchanged(saved.attributes, saved.attribute_copies)
        and _unchanged(saved.dicts, saved.dict_copies)
        and _unchanged(saved.lists, saved.list_copies)
    ):
        return False
    changed = False
    for live, before in zip(
        saved.attributes + saved.dicts, saved.attribute_copies + saved.dict_copies, strict=True
    ):
        if not _same(live, before):
            live.clear()
            live.update(before)
            changed = True
    for current, content in zip(saved.lists, saved.list_copies, strict=True):
        if len(current) != len(content) or not all(map(operator.is_, current, content)):
            current[:] = content
            changed = True
    return changed


def _unchanged(containers: list[Any], copies: list[Any]) -> bool:
    """Each container as long as its copy, holding the same keys (dicts) or items (lists) and (dicts)
    the same values, by identity: a key replaced by an equal string reads as changed (then
    :func:`_same` compares it by value)."""
    if list(map(len, containers)) != list(map(len, copies)):
        return False
    if not all(map(operator.is_, chain.from_iterable(containers), chain.from_iterable(copies))):
        return False
    if not containers or type(containers[0]) is list:
        return True
    values = chain.from_iterable(map(dict.values, containers)), chain.from_iterable(map(dict.values, copies))
    return all(map(operator.is_, *values))


def _same(live: dict[str, Any], before: dict[str, Any]) -> bool:
    """The same keys in the same order, each holding the same object (compared in C: ``map``)."""
    return (
        len(live) == len(before)
        and all(map(operator.is_, live.values(), before.values()))
        and all(map(operator.eq, live, before))
    )


_MOVE_OPTIONS = frozenset(("device", "dtype", "layout", "memory_format", "non_blocking", "pin_memory"))


def _tensors(values: Iterable[Any]) -> list[torch.Tensor]:
    """The tensors among ATen arguments (which nest at most one list deep: ``cat``'s ``Tensor[]``)."""
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(t for t in value if isinstance(t, torch.Tensor))
    return found


def _swap(value: Any, twin: Callable[[Any], Any]) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(twin(v) for v in value)
    return twin(value)


Spots = tuple[tuple[int, str], ...]  # (position, name) of the arguments an op writes into
_FACTS: dict[int, tuple[torch._ops.OpOverload, tuple[bool, Spots, Callable[..., Any] | None]]] = {}


def _facts(func: torch._ops.OpOverload) -> tuple[bool, Spots, Callable[..., Any] | None]:
    """Whether ``func`` reads values, the arguments it writes into and its fast shape rule, looked up by
    ``id`` (an ``OpOverload`` hashes in Python; the entry holds ``func``, so the ``id`` stays its own)."""
    entry = _FACTS.get(id(func))
    if entry is None:
        spots = tuple(
            (i, a.name)
            for i, a in enumerate(func._schema.arguments)
            if a.alias_info is not None and a.alias_info.is_write
        )
        entry = _FACTS[id(func)] = (func, (func.overloadpacket in _DATA_DEPENDENT, spots, _FAST.get(func)))
    return entry[1]


def _written(spots: Spots, args: tuple, kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The tensors at ``spots`` (:func:`_facts`) that an op writes into (``self`` of ``add_``, ``out=``)."""
    found = []
    for i, name in spots:
        found.extend(_tensors((args[i] if i < len(args) else kwargs.get(name),)))
    return found


# ops that read values, or whose output sizes depend on them (PyTorch's meta kernels refuse these too;
# this list does not rely on it)
_DATA_DEPENDENT = frozenset((
    aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten._unique2, aten.unique_dim,
    aten.unique_consecutive, aten.bincount, aten.equal, aten.is_nonzero,
))  # fmt: skip


# --- shapes of frequent ops whose meta kernels are slow -----------------------------------------


def _layout(x: torch.Tensor) -> tuple[int, ...] | None:
    """``x``'s strides where ``x`` is dense in the standard or the channels-last layout, else None."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x.stride()
    return None


def _like(x: torch.Tensor) -> torch.Tensor | None:
    strides = _layout(x)
    return None if strides is None else torch.empty_strided(x.shape, strides, dtype=x.dtype, device=META)


def _contiguous(shape: Iterable[int], dtype: torch.dtype) -> torch.Tensor:
    sizes = tuple(shape) or ((),)  # passed one by one: PyTorch parses them ~1 µs faster than one tuple
    return torch.empty(*sizes, dtype=dtype, device=META)


def _elementwise(a: Any, b: Any, *_: Any, **__: Any) -> torch.Tensor | None:
    """``a ∘ b`` (add, sub, mul, div, pow; ``alpha`` / ``rounding_mode`` leave shapes alone), no type
    promotion: ``a`` a floating-point tensor, ``b`` a number or a tensor of ``a``'s dtype (or a
    floating-point one-element tensor). Of ``a``'s shape, strides and dtype: ``a``'s layout; broadcast
    where every tensor is contiguous: contiguous."""
    if not isinstance(a, torch.Tensor) or not a.is_floating_point():
        return None
    if not isinstance(b, torch.Tensor):
        return None if isinstance(b, bool) or not isinstance(b, (int, float)) else _like(a)
    if b.shape == a.shape and b.stride() == a.stride() and b.dtype == a.dtype:
        return _like(a)
    if b.dim() == 0 and b.is_floating_point():
        return _like(a)
    if b.dtype != a.dtype or not (a.is_contiguous() and b.is_contiguous()):
        return None
    shape = _broadcast(a.shape, b.shape)
    return None if shape is None else _contiguous(shape, a.dtype)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """The broadcast shape of ``a`` and ``b``; None where they do not broadcast."""
    rank = max(len(a), len(b))
    a, b = (1,) * (rank - len(a)) + tuple(a), (1,) * (rank - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b, strict=True)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b, strict=True))


def _mean(
    x: torch.Tensor, dims: list[int] | None, keepdim: bool = False, dtype: Any = None
) -> torch.Tensor | None:
    """``x.mean(dims, keepdim)`` of a contiguous floating-point ``x``: contiguous."""
    if dtype is not None or not dims or not x.is_floating_point() or not x.is_contiguous() or x.dim() == 0:
        return None
    reduced = {d % x.dim() for d in dims}
    shape = [1 if d in reduced else n for d, n in enumerate(x.shape)]
    return _contiguous(shape if keepdim else [n for d, n in enumerate(x.shape) if d not in reduced], x.dtype)


def _in_place(a: Any, b: Any = None, *_: Any, **__: Any) -> torch.Tensor | None:
    """``a.op_(b)`` on a floating-point ``a`` where ``b`` is absent, a number, or a tensor of ``a``'s shape
    and dtype or one element: the result is ``a`` itself."""
    if not isinstance(a, torch.Tensor) or not a.is_floating_point():
        return None
    if isinstance(b, torch.Tensor) and not (
        (b.shape == a.shape and b.dtype == a.dtype) or (b.dim() == 0 and b.is_floating_point())
    ):
        return None
    return a


def _convolution(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Any,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
) -> torch.Tensor | None:
    """A plain (not transposed) convolution of operands in the standard layout: its output is too.
    PyTorch's meta kernel gives a contiguous output where the CPU kernel keeps the channels-last layout
    of its input or weight: such a convolution is run for real."""
    if any(_channels_last_strides(t) for t in (x, weight)):
        raise NeedsValues("a channels-last convolution: the meta kernel's layout is not the CPU kernel's")
    if (
        transposed
        or x.dim() != weight.dim()
        or x.shape[1] != weight.shape[1] * groups
        or x.dtype != weight.dtype
    ):
        return None
    spatial = [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation, strict=True)
    ]
    return (
        None if min(spatial, default=1) < 1 else _contiguous((x.shape[0], weight.shape[0], *spatial), x.dtype)
    )


def _channels_last_strides(t: torch.Tensor) -> bool:
    """Whether the CPU kernels take ``t`` (4-d or 5-d) as channels-last: c10's stride rule, which
    ``torch._prims_common.suggest_memory_format`` mirrors at the cost of importing sympy (~0.35 s on a
    first call)."""
    rank = t.dim()
    if rank != 4 and rank != 5:
        return False
    strides = t.stride()
    if strides[1] == 0:
        return False
    if t.is_contiguous() and not t.is_contiguous(memory_format=_CHANNELS_LAST[rank]):
        return False  # dense in the standard layout only (both: C or H·W is one, the rule decides)
    sizes, smallest = t.shape, 0
    for d in _CHANNELS_LAST_ORDER[rank]:
        size, stride = sizes[d], strides[d]
        if size == 0 or stride < smallest or (d == 0 and smallest == strides[1]):
            return False
        smallest = stride * size
    return True


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
_CHANNELS_LAST_ORDER = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}  # dims from the smallest stride up


def _unary(x: Any, *_: Any, **__: Any) -> torch.Tensor | None:
    return _like(x) if isinstance(x, torch.Tensor) and x.is_floating_point() else None


def _softmax(
    x: torch.Tensor, dim: int, half_to_float: bool = False, *_: Any, **__: Any
) -> torch.Tensor | None:
    if half_to_float or not x.is_floating_point():
        return None
    return _contiguous(x.shape, x.dtype)  # the CPU kernel's output is contiguous whatever the input


def _batch_norm_eval(
    x: torch.Tensor, weight: Any, bias: Any, mean: Any, var: Any, training: bool, *_: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``native_batch_norm`` with ``training=False``: the CPU kernel saves no statistics (size 0)."""
    out = None if training else _like(x)
    return None if out is None else (out, _no_elements(x.dtype), _no_elements(x.dtype))


def _no_elements(dtype: torch.dtype) -> torch.Tensor:
    """A shape-only tensor of no elements, one per dtype (batch norm's saved statistics in eval mode: ~1%
    of a MobileNetV2 recording), made again if something resized it."""
    empty = _NO_ELEMENTS.get(dtype)
    if empty is None or empty.shape != (0,):
        empty = _NO_ELEMENTS[dtype] = _contiguous((0,), dtype)
    return empty


_NO_ELEMENTS: dict[torch.dtype, torch.Tensor] = {}


def _batch_norm_no_training(x: torch.Tensor, *args: Any) -> Any:
    return _batch_norm_eval(x, None, None, None, None, False)


def _layer_norm(
    x: torch.Tensor, shape: list[int], *_: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    if x.dtype not in (torch.float32, torch.float64) or tuple(x.shape[x.dim() - len(shape) :]) != tuple(
        shape
    ):
        return None
    stats = (*x.shape[: x.dim() - len(shape)], *(1 for _ in shape))
    return _contiguous(x.shape, x.dtype), _contiguous(stats, x.dtype), _contiguous(stats, x.dtype)


def _matmul(out_shape: Callable[..., tuple[int, ...] | None]) -> Callable[..., torch.Tensor | None]:
    def run(*args: Any, **kwargs: Any) -> torch.Tensor | None:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if len({t.dtype for t in tensors}) != 1 or not tensors[0].is_floating_point():
            return None
        shape = out_shape(*tensors)
        return None if shape is None else _contiguous(shape, tensors[0].dtype)

    return run


def _mm_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...] | None:
    ok = a.dim() == b.dim() == 2 and a.shape[1] == b.shape[0]
    return (a.shape[0], b.shape[1]) if ok else None


def _addmm_shape(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...] | None:
    shape = _mm_shape(a, b)
    fits = (
        shape is not None
        and bias.dim() <= 2
        and all(s in (1, n) for s, n in zip(bias.shape[::-1], shape[::-1], strict=False))
    )
    return shape if fits else None


def _bmm_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...] | None:
    ok = a.dim() == b.dim() == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]
    return (a.shape[0], a.shape[1], b.shape[2]) if ok else None


def _cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor | None:
    """Concatenation of tensors of one rank, dtype and dense layout (the output takes that layout)."""
    first = tensors[0]
    dim = dim % first.dim() if first.dim() else 0
    if first.dim() == 0 or any(
        t.dim() != first.dim() or t.dtype != first.dtype or t.numel() == 0 for t in tensors
    ):
        return None
    if any(
        t.shape[:dim] != first.shape[:dim] or t.shape[dim + 1 :] != first.shape[dim + 1 :] for t in tensors
    ):
        return None
    shape = (*first.shape[:dim], sum(t.shape[dim] for t in tensors), *first.shape[dim + 1 :])
    channels_last = [t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) for t in tensors]
    contiguous = [t.is_contiguous() for t in tensors]
    if all(contiguous) and not any(channels_last):
        return _contiguous(shape, first.dtype)
    if all(channels_last) and not any(contiguous):
        return torch.empty(shape, dtype=first.dtype, device=META).contiguous(
            memory_format=torch.channels_last
        )
    return None  # mixed or ambiguous layouts (a 4-D tensor with one channel or 1×1 pixels): PyTorch's kernel


_UNARY = (
    aten.relu.default, aten.gelu.default, aten.silu.default, aten.sigmoid.default, aten.tanh.default,
    aten.hardtanh.default, aten.hardswish.default, aten.hardsigmoid.default, aten.leaky_relu.default,
    aten.elu.default, aten.mish.default, aten.neg.default, aten.exp.default, aten.rsqrt.default,
    aten.sqrt.default,
)  # fmt: skip
_IN_PLACE = (
    aten.relu_.default, aten.hardtanh_.default, aten.silu_.default, aten.hardswish_.default,
    aten.hardsigmoid_.default, aten.leaky_relu_.default, aten.elu_.default, aten.sigmoid_.default,
    aten.add_.Tensor, aten.add_.Scalar, aten.mul_.Tensor, aten.mul_.Scalar, aten.sub_.Tensor,
    aten.div_.Tensor, aten.div_.Scalar,
)  # fmt: skip
_BINARY = (
    aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.mul.Tensor, aten.mul.Scalar,
    aten.div.Tensor, aten.div.Scalar, aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor,
)  # fmt: skip
_FAST: dict[torch._ops.OpOverload, Callable[..., Any]] = {
    **dict.fromkeys(_UNARY, _unary),
    **dict.fromkeys(_IN_PLACE, _in_place),
    **dict.fromkeys(_BINARY, _elementwise),
    aten.clone.default: lambda x, memory_format=None: (
        _like(x) if memory_format in (None, torch.preserve_format) else None
    ),
    aten._softmax.default: _softmax,
    aten._safe_softmax.default: lambda x, dim, dtype=None: None if dtype is not None else _softmax(x, dim),
    aten.native_batch_norm.default: _batch_norm_eval,
    aten._native_batch_norm_legit_no_training.default: _batch_norm_no_training,
    aten.native_layer_norm.default: _layer_norm,
    aten.mm.default: _matmul(_mm_shape),
    aten.addmm.default: _matmul(_addmm_shape),  # beta and alpha (keyword-only) leave the shape alone
    aten.bmm.default: _matmul(_bmm_shape),
    aten.cat.default: _cat,
    aten.mean.dim: _mean,
    aten.convolution.default: _convolution,
}
