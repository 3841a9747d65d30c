"""What pruning bought: parameter, nonzero and byte counts, multiply-accumulates, latency.

MACs are counted with PyTorch's FLOP formulas (``torch.utils.flop_counter.flop_registry``: exact for
matmul and convolution; MACs = FLOPs / 2), applied by a small dispatch mode of ours rather than by
:class:`~torch.utils.flop_counter.FlopCounterMode`: PyTorch wraps that mode's dispatch in
``torch._dynamo.disable``, whose first call imports ``torch._dynamo`` (and sympy): 1.1 s on the first
``layer_macs`` of a process (MobileNetV2), against ~0.03 s for the forward itself. Two gaps of those
formulas on CPU are closed here: the fused CPU attention kernel
(``aten._scaled_dot_product_flash_attention_for_cpu``) gets a formula, and the
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` fast path is switched off while counting, so
their projections run as ordinary, counted ``linear`` calls in their own modules.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper

from ._checks import check_positive_int

ExampleInputs = torch.Tensor | tuple[Any, ...]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries (a parameter shared by several modules counts once)."""
    return sum(p.numel() for p in _parameters(model))


def count_nonzeros(model: nn.Module) -> int:
    """Number of nonzero parameter entries (shared parameters count once)."""
    return sum(int(torch.count_nonzero(p)) for p in _parameters(model))


def dense_bytes(model: nn.Module) -> int:
    """Bytes the parameters take stored densely: Σ numel × element size (buffers excluded)."""
    return sum(p.numel() * p.element_size() for p in _parameters(model))


def nonzero_bytes(model: nn.Module) -> int:
    """Bytes the nonzero parameter values take, before any index overhead of a sparse format."""
    return sum(int(torch.count_nonzero(p)) * p.element_size() for p in _parameters(model))


def layer_macs(model: nn.Module, example_inputs: ExampleInputs) -> dict[str, int]:
    """Dense multiply-accumulates per module for one forward on ``example_inputs`` (eval mode, no grad).

    Keys are module names as in ``model.named_modules()`` (``""`` is the model itself). Each MAC is
    counted once, in the innermost module that ran it: a ``Linear`` holds its matmul, and a parent holds
    only what its own ``forward`` computes (e.g. attention scores), so the values sum to the model's total.
    Modules that compute no matmul or convolution are left out. MACs grow with the batch size of
    ``example_inputs`` (a tensor, a tuple of positional inputs or a mapping of keyword inputs).
    Training modes are restored afterwards.
    """
    _check_model(model)
    kwargs = dict(example_inputs) if isinstance(example_inputs, Mapping) else {}
    args = () if kwargs else _as_args(example_inputs)
    counter = _FlopCounter()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with _inference(model), _innermost_module(model, counter.stack), counter:
            model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return {name: flops // 2 for name, flops in counter.flops.items() if flops > 0}


def sparse_macs(model: nn.Module, dense_macs: Mapping[str, int]) -> dict[str, int]:
    """MACs left when zero weights are skipped: each module's dense MACs × the density of its ``weight``.

    ``dense_macs`` is the output of :func:`layer_macs`. A module without a ``weight`` parameter (or whose
    MACs do not involve it, such as attention scores in a parent module) counts as dense. The theoretical
    speed-up of ShrinkBench (Blalock et al., 2020) is ``sum(dense) / sum(sparse)``. Values are rounded down.
    """
    _check_model(model)
    if not isinstance(dense_macs, Mapping):
        raise TypeError(
            f"dense_macs must be the mapping module name → MACs that layer_macs returns, got "
            f"{type(dense_macs).__name__}; call sparse_macs(model, layer_macs(model, example_inputs))"
        )
    out = {}
    for name, macs in dense_macs.items():
        try:
            module = model.get_submodule(name)
        except AttributeError as err:
            raise ValueError(
                f"dense_macs names module {name!r}, which the model does not have; pass the output of "
                "layer_macs for this same model"
            ) from err
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel() > 0:
            out[name] = macs * int(torch.count_nonzero(weight)) // weight.numel()
        else:
            out[name] = macs
    return out


def measure_latency(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    warmup: int = 5,
    repeats: int = 30,
    threads: int | None = None,
) -> dict[str, float]:
    """Wall-clock seconds of one forward on ``example_inputs`` (eval mode, no grad).

    Runs ``warmup`` untimed forwards, then times ``repeats`` forwards with :func:`time.perf_counter`.
    ``threads`` sets ``torch.set_num_threads`` for the measurement (``None`` keeps the current value);
    the previous value and the training modes are restored afterwards. Returns ``median_s``, ``p90_s``
    (90th percentile, linear interpolation), ``repeats``, ``warmup`` and ``threads`` (the count used).
    """
    _check_model(model)
    args = _as_args(example_inputs)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0 (untimed forwards before timing), got {warmup!r}")
    check_positive_int(repeats, "repeats")
    if threads is not None:
        check_positive_int(threads, "threads")
    sync = _synchronizer(model)
    previous = torch.get_num_threads()
    times = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        with _inference(model):
            for _ in range(warmup):
                model(*args)
            sync()
            for _ in range(repeats):
                start = time.perf_counter()
                model(*args)
                sync()
                times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    p90 = statistics.quantiles(times, n=10, method="inclusive")[-1] if len(times) > 1 else times[0]
    median = statistics.median(times)
    return {"median_s": median, "p90_s": p90, "repeats": repeats, "warmup": warmup, "threads": used}


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the fused CPU attention kernel: Q·Kᵀ then softmax(·)·V, 2 FLOPs per MAC.

    Shapes: query (batch, heads, L_q, E), key (batch, heads_kv, L_k, E), value (batch, heads_kv, L_k, E_v);
    grouped key/value heads are broadcast to the query's heads, so the query's batch dimensions count.
    A causal mask is not discounted (as in torch's own attention formulas).
    """
    *batch, length_q, dim_qk = query_shape
    length_k, dim_v = value_shape[-2], value_shape[-1]
    return 2 * math.prod(batch) * length_q * length_k * (dim_qk + dim_v)


class _FlopCounter(TorchDispatchMode):
    """FLOPs of every op with a formula, added to the module on top of ``stack`` (the innermost one
    running; a module the model does not register counts toward its caller). An op without a formula
    but with a decomposition is counted through its parts, as ``FlopCounterMode`` does."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # otherwise the first dispatch imports torch._dynamo (see the module docstring)

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.flops: dict[str, int] = {}
        sdpa = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        self.formulas = {**flop_registry, sdpa: shape_wrapper(_sdpa_cpu_flops)}  # as registered now

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        formula = self.formulas.get(func.overloadpacket)
        if formula is None and func is not torch.ops.prim.device.default:
            with self:
                parts = func.decompose(*args, **kwargs)
            if parts is not NotImplemented:
                return parts
        out = func(*args, **kwargs)
        if formula is not None:
            name = self.stack[-1] if self.stack else ""
            self.flops[name] = self.flops.get(name, 0) + formula(*args, **kwargs, out_val=out)
        return out


@contextmanager
def _innermost_module(model: nn.Module, stack: list[str]) -> Iterator[None]:
    """Keep ``stack`` = names (as in ``named_modules``) of the modules whose forward is running."""

    def leave(*_: Any) -> None:  # returning None keeps the module's output
        stack.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(lambda *_, name=name: stack.append(name)))
        handles.append(module.register_forward_hook(leave, always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no grad inside; every module's own training flag restored on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def _synchronizer(model: nn.Module) -> Callable[[], None]:
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def _parameters(model: nn.Module) -> Iterator[torch.Tensor]:
    _check_model(model)
    return (p.detach() for p in model.parameters())


def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _as_args(example_inputs: Any) -> tuple[Any, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, tuple):
        return example_inputs
    raise TypeError(
        "example_inputs must be a tensor, a tuple of the model's positional inputs or a dict of keyword "
        f"inputs, got {type(example_inputs).__name__}; wrap several inputs in a tuple: (x, mask)"
    )
