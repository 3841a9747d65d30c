"""Record one forward pass as a list of ATen ops with exact shapes (by default with the weights as
shape-only stand-ins, :mod:`.meta_run`; the real forward where that cannot run).

Why a ``TorchDispatchMode`` recording and not ``torch.export`` or ``torch.fx``: measured on ResNet-50
(2 cores, batch 1), ``torch.export(strict=False)`` takes ~2.3 s on a first call, ``torch.fx`` fails
on data-dependent Python, and recording the forward under a dispatch mode takes ~0.06 s (229 ATen
ops). The recording sees the same decomposed ATen ops as ``torch.export`` (``linear`` arrives as
``t`` + ``addmm``, ``conv2d`` as ``convolution``), runs whatever Python the model contains, and gives
every tensor its exact shape. Parameters keep their identity through dispatch, so each weight names
its module; the other ops are tagged with the innermost module running (kept by a ``forward`` set on
each module's instance, or by forward hooks where a module has hooks of its own: :func:`_module_stack`).

Every tensor seen gets a node id, looked up by the tensor's Python ``id``. The recording holds no
tensor: a weak reference drops the ``id`` when its tensor is freed, before the ``id`` can be reused, so
activations are freed as in a plain forward (holding them all made ResNet-18's recording 1.5× the
forward, from page faults on fresh memory). An in-place op gives its result a new node.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from .meta_run import MetaCalls, MetaRunner, NeedsValues, restore, snapshot
from .shortcuts import PLAIN_TENSORS, Call, Shortcut, hook_free, shortcut_of_type
from .walk import named_modules

ExampleInputs = Any  # a tensor, a tuple of positional inputs, or a mapping of keyword inputs


@dataclass(frozen=True)
class Ref:
    """A tensor in a :class:`Trace`, by node id."""

    node: int


@dataclass(slots=True)
class Op:
    """One ATen call: ``func(*args, **kwargs) -> outputs`` with tensors replaced by :class:`Ref`."""

    func: torch._ops.OpOverload
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: tuple[Any, ...]
    module: str

    @property
    def name(self) -> str:
        return str(self.func.overloadpacket.__name__)


@dataclass
class Trace:
    """The ops of one forward, the shape of every tensor node and where the leaves came from.

    ``sources`` maps node → ``("param" | "buffer" | "input" | "constant" | "foreign", name)``;
    ``scalars`` holds the value of every one-element constant (e.g. ``torch.tensor(q.size(-1))`` in an
    attention scale);
    ``layouts`` the ``(strides, storage offset)`` of every tensor an ``as_strided`` restrides;
    ``module_inputs`` / ``module_outputs`` the node of each module's first positional tensor input and
    of its tensor output (first call; absent when they are not tensors); ``itemsizes`` the element size
    in bytes of the operands of kernels that need 16-byte aligned strides (``_grouped_mm``).
    """

    ops: list[Op] = field(default_factory=list)
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    sources: dict[int, tuple[str, str]] = field(default_factory=dict)
    outputs: list[int] = field(default_factory=list)
    scalars: dict[int, float] = field(default_factory=dict)
    layouts: dict[int, tuple[tuple[int, ...], int]] = field(default_factory=dict)
    module_inputs: dict[str, int] = field(default_factory=dict)
    module_outputs: dict[str, int] = field(default_factory=dict)
    itemsizes: dict[int, int] = field(default_factory=dict)
    shapes_only: bool = False


class _Recorder(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # Otherwise torch wraps __torch_dispatch__ in torch._dynamo.disable, whose first call imports
        # torch._dynamo: ~1.5 s of a ~2.9 s ResNet-18 graph + prune. The recording never runs compiled.
        return False

    def __init__(self, trace: Trace, stack: list[str], runner: MetaRunner | None = None) -> None:
        super().__init__()
        self.trace = trace
        self.stack = stack
        self.nodes: dict[int, int] = {}
        self.refs: list[Ref] = []  # by node: one Ref per node, shared by every op that reads it
        self.watchers: list[weakref.ref] = []
        self.runner = runner

    def add(self, tensor: torch.Tensor, source: tuple[str, str] | None = None, held: bool = False) -> Ref:
        """A new node for ``tensor``; ``held``: the caller keeps ``tensor`` alive for the whole recording,
        so its ``id`` cannot be reused and needs no watcher."""
        node = len(self.refs)
        self.trace.shapes.append(tuple(tensor.shape))
        self.refs.append(ref := Ref(node))
        if held:
            self.nodes[id(tensor)] = node
        else:
            self.alias(tensor, node)
        if source is not None:
            self.trace.sources[node] = source
        return ref

    def alias(self, tensor: torch.Tensor, node: int) -> None:
        """Record ``tensor`` as node ``node`` (its own new node, or a stand-in of that node's tensor)."""
        key = id(tensor)
        self.nodes[key] = node
        self.watchers.append(weakref.ref(tensor, partial(_forget, self.nodes, key, node)))

    def ref(self, value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        node = self.nodes.get(id(value))
        if node is not None:
            return self.refs[node]
        ref = self.add(value, ("constant", ""))
        if value.numel() == 1 and value.device.type != "meta":
            self.trace.scalars[ref.node] = value.item()
        return ref

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is _EMPTY and args[0] == [0]:  # no input, no element: not recorded (batch norm's CPU reserve)
            return func(*args, **kwargs) if self.runner is None else self.runner(func, args, kwargs)
        if func.overloadpacket in _RESTRIDES:  # its rule needs the layout before (as_strided_ changes it)
            x = args[0]
            self.trace.layouts[self.ref(x).node] = (x.stride(), x.storage_offset())
        elif func.overloadpacket in _ALIGNED:
            for x in args[:2]:
                self.trace.itemsizes[self.ref(x).node] = x.element_size()
        if self.runner is not None and (same := self.runner.device_move(func, args, kwargs)) is not None:
            if same is not args[0]:  # a weight's stand-in: it is the weight
                self.alias(same, self.ref(args[0]).node)
            return same
        out = func(*args, **kwargs) if self.runner is None else self.runner(func, args, kwargs)
        ref = self.ref
        in_args = tuple([ref(a) if type(a) not in _LISTS else _refs(a, ref) for a in args])
        in_kwargs = {k: _refs(v, ref) for k, v in kwargs.items()} if kwargs else {}
        if isinstance(out, torch.Tensor):
            outs: tuple[Any, ...] = (self.add(out),)
        else:
            outs = tuple([self.add(t) if isinstance(t, torch.Tensor) else t for t in _flat(out)])
        module = self.stack[-1] if self.stack else ""
        self.trace.ops.append(Op(func, in_args, in_kwargs, outs, module))
        return out


def _forget(nodes: dict[int, int], key: int, node: int, _: weakref.ref) -> None:
    """A weak reference's callback: its tensor is freed, so its ``id`` (``key``) may be reused. The
    callback holds ``nodes``, not the recorder: no reference cycle keeps a recorder (and through its
    runner the model's full-size weights) alive after a recording."""
    if nodes.get(key) == node:  # not already taken over by an in-place op's new node
        del nodes[key]


_RESTRIDES = (torch.ops.aten.as_strided, torch.ops.aten.as_strided_)
_EMPTY = torch.ops.aten.empty.memory_format
_ALIGNED = (torch.ops.aten._grouped_mm,)


def _flat(value: Any) -> list[Any]:
    """The leaves of nested lists/tuples (an op's outputs), in order."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _flat(v)]
    return [value]


def _refs(value: Any, ref: Callable[[Any], Any]) -> Any:
    """``value`` with every tensor replaced by ``ref(tensor)``; ATen arguments nest only lists/tuples.
    A list of numbers (``int[]``, ``float[]``: ATen lists hold one type) is ``value`` itself: the
    dispatcher hands every op fresh lists.

    (``torch.utils._pytree.tree_map`` does the same at ~4× the cost: a third of the recording time.)
    """
    if type(value) not in _LISTS:
        return ref(value)
    if value and type(value[0]) in _NUMBERS:
        return value
    return type(value)([_refs(v, ref) for v in value])


_LISTS, _NUMBERS = (list, tuple), (int, float, bool)


def trace_model(
    model: nn.Module,
    example_inputs: ExampleInputs,
    foreign: Mapping[str, torch.Tensor] | None = None,
    shapes_only: bool = True,
    shortcuts: bool = True,
) -> Trace:
    """Run ``model`` once (eval mode, no grad) on ``example_inputs`` and record every ATen op.

    ``example_inputs`` is a tensor, a tuple of positional inputs or a mapping of keyword inputs.
    Outputs may be tensors or any nesting of tuples, lists, dicts and dataclasses of them.
    ``foreign``: tensors of another model by name, recorded as ``("foreign", name)`` sources where
    ``model`` does not hold them itself (a closure that reaches into the other model).
    ``shapes_only``: first try the forward with the weights as shape-only stand-ins (see
    :mod:`.meta_run`; the module state it changes is put back); where it needs values, or with
    ``shapes_only=False``, record the real forward. ``Trace.shapes_only`` says which one it is.
    ``shortcuts``: in the shape-only run, hand common layers' ops to the recording directly (see
    :mod:`.shortcuts`; the same trace, faster); False runs every layer's own forward.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    args, kwargs = _split_inputs(example_inputs)
    modules = named_modules(model)  # one walk for every use below (shared: see walk.py)
    if shapes_only:
        state = snapshot(m for _, m in modules)
        try:
            trace = _record(model, modules, args, kwargs, foreign, True, shortcuts)
        except Exception:  # values needed (or the forward fails: the real run says how)
            trace = None
        finally:
            changed = restore(state)
        # A forward that stores what it computed (a weight-norm hook's weight, a cache) is run for real,
        # as is one that reached attention's math path, which real tensors may not take (a fused kernel
        # called from inside another torch function, as nn.MultiheadAttention does).
        if trace is not None and not changed and not any(op.func is _MATH_ATTENTION for op in trace.ops):
            return trace
    return _record(model, modules, args, kwargs, foreign, shapes_only=False)


_MATH_ATTENTION = torch.ops.aten._safe_softmax.default


def _record(
    model: nn.Module,
    modules: list[tuple[str, nn.Module]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    foreign: Mapping[str, torch.Tensor] | None,
    shapes_only: bool,
    shortcuts: bool = False,
) -> Trace:
    trace = Trace(shapes_only=shapes_only)
    own = _own_tensors(modules)
    others, inputs = dict(foreign or {}), _leaves((args, kwargs))
    device = next((t.device for *_, t in own), inputs[0].device if inputs else torch.device("cpu"))
    runner = MetaRunner([*(t for *_, t in own), *others.values()], device) if shapes_only else None
    recorder = _Recorder(trace, [], runner)
    for kind, name, tensor in own:  # ``own``, ``inputs`` and ``others`` hold their tensors until the end
        recorder.add(tensor, (kind, name), held=True)
    for leaf in inputs:
        if id(leaf) not in recorder.nodes:
            recorder.add(leaf, ("input", ""), held=True)
    for name, tensor in others.items():
        if id(tensor) not in recorder.nodes:
            recorder.add(tensor, ("foreign", name), held=True)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        calls = MetaCalls(device) if shapes_only else nullcontext()
        stack = _module_stack(modules, recorder, shortcuts and shapes_only)
        with _eval(model, modules), stack, torch.no_grad(), calls, recorder:
            result = model(*args, **kwargs)
    except Exception as error:  # the user's forward: say so, and what it was given
        raise ForwardError(
            f"the model's forward fails on the example inputs ({_describe((args, kwargs))}): "
            f"{type(error).__name__}: {error}. Pass inputs its forward accepts (the command line: "
            "--input-shape and --input-dtype)",
            trace,
        ) from error
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    if runner is not None and runner.error is not None:  # the forward caught a failed meta op
        raise NeedsValues("the forward caught a failure of a shape-only op") from runner.error
    # Plain objects are searched only when nothing else holds a tensor: an HF cache object beside the
    # logits is state the pruned model rebuilds, not an output whose channels must stay.
    outputs = [t for t in _leaves(result) if id(t) in recorder.nodes]
    outputs = outputs or [t for t in _leaves(result, objects=True) if id(t) in recorder.nodes]
    trace.outputs = [recorder.nodes[id(t)] for t in outputs]
    if not trace.outputs:
        raise ValueError(
            f"the model's output (a {type(result).__name__}) holds no tensor computed in its forward, so "
            "prunekit cannot tell which channels the outputs need (they would be pruned). Return tensors, "
            "or tuples, lists, dicts, dataclasses or plain objects holding them"
        )
    return trace


class ForwardError(ValueError):
    """The model's forward raised on the example inputs; the original error is the ``__cause__``,
    ``trace`` holds the ops recorded before it."""

    def __init__(self, message: str, trace: Trace | None = None) -> None:
        super().__init__(message)
        self.trace = trace


def _describe(inputs: Any) -> str:
    """``shape dtype`` of each tensor in ``inputs``, e.g. ``(2, 5) float32``."""
    tensors = _leaves(inputs)
    return (
        ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors) or "no tensors"
    )


def _split_inputs(example_inputs: ExampleInputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, tuple):
        return example_inputs, {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, got "
        f"{type(example_inputs).__name__}; wrap several inputs in a tuple: (x, mask)"
    )


def _leaves(value: Any, objects: bool = False, seen: set[int] | None = None) -> list[torch.Tensor]:
    """Tensors in any nesting of tuples, lists, dicts, dataclasses (incl. HF ``ModelOutput``) and, with
    ``objects``, plain objects' attributes (``SimpleNamespace`` …; modules excluded); each container once.
    """
    if isinstance(value, torch.Tensor):
        return [value]
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, (nn.Module, type)):
        return []
    seen.add(id(value))
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, (tuple, list)):
        items = list(value)
    elif dataclasses.is_dataclass(value):
        items = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif objects and hasattr(value, "__dict__"):
        items = list(vars(value).values())
    else:
        return []
    return [t for v in items for t in _leaves(v, objects, seen)]


def _own_tensors(modules: list[tuple[str, nn.Module]]) -> list[tuple[str, str, torch.Tensor]]:
    """``(kind, name, tensor)`` of every parameter, then every buffer, of ``modules`` (a model's
    ``named_modules()``): as ``named_parameters()`` and ``named_buffers()`` list them (a tensor held
    twice under its first name only), read from the list already walked."""
    own = []
    for kind, attribute in (("param", "_parameters"), ("buffer", "_buffers")):
        seen: set[int] = set()
        for prefix, module in modules:
            for local, tensor in getattr(module, attribute).items():
                if tensor is not None and id(tensor) not in seen:
                    seen.add(id(tensor))
                    own.append((kind, f"{prefix}.{local}" if prefix else local, tensor))
    return own


@contextmanager
def _eval(model: nn.Module, modules: list[tuple[str, nn.Module]]) -> Iterator[None]:
    """``model`` (of ``modules``, its ``named_modules()``) in eval mode (``model.eval()``, so overrides
    of ``train`` run), then each module's mode as it was; nothing is called where every module is
    already in eval mode."""
    training = [m for _, m in modules if m.training]
    if training:
        model.eval()
    try:
        yield
    finally:
        for module in training:
            module.training = True


@contextmanager
def _module_stack(
    modules: list[tuple[str, nn.Module]], recorder: _Recorder, shortcuts: bool = False
) -> Iterator[None]:
    """Keep ``recorder.stack`` = names of the modules whose forward is running, innermost last, and
    record each module's first tensor input and tensor output (first call) in the trace.

    Without a global module hook, a module with no hooks of its own runs as a ``forward`` set on the
    instance that keeps the stack itself (PyTorch's call then takes its path without hooks, and a
    forward called directly, ``self.block.forward(x)``, is its module's too); with ``shortcuts``, a
    layer with a :func:`.shortcuts.shortcut_for` there hands its ops to the recorder directly (where no
    other mode is active at the call). The other modules get forward hooks, except TorchScript modules,
    which take none: their ops are their caller's."""
    stack, nodes = recorder.stack, recorder.nodes
    inputs, outputs = recorder.trace.module_inputs, recorder.trace.module_outputs

    def enter(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            stack.append(name)
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in nodes:
                inputs.setdefault(name, nodes[id(args[0])])

        return hook

    def leave(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, __: Any, output: Any) -> None:  # returning None keeps the output
            stack.pop()
            if isinstance(output, torch.Tensor) and id(output) in nodes:
                outputs.setdefault(name, nodes[id(output)])

        return hook

    call = _direct_call(recorder)

    def wrapped_forward(name: str, module: nn.Module, shortcut: Shortcut | None) -> Callable[..., Any]:
        forward = type(module).forward  # the stack kept as the two hooks keep it, without their calls

        def run(*args: Any, **kwargs: Any) -> Any:
            stack.append(name)
            if args and isinstance(args[0], torch.Tensor) and id(args[0]) in nodes:
                inputs.setdefault(name, nodes[id(args[0])])
            output = None
            try:
                x = args[0] if shortcut is not None and len(args) == 1 and not kwargs else None
                if type(x) in PLAIN_TENSORS and _only_recording_modes():
                    function_mode = torch._C._pop_torch_function_stack()  # its checks read sizes: no
                    try:  # torch-function call per read, and ops run as under the dispatcher
                        output = shortcut(call, module, x)
                    finally:
                        torch._C._push_on_torch_function_stack(function_mode)
                if output is None:
                    output = forward(module, *args, **kwargs)
            finally:
                stack.pop()
                if isinstance(output, torch.Tensor) and id(output) in nodes:
                    outputs.setdefault(name, nodes[id(output)])
            return output

        run.__wrapped__ = forward.__get__(module)  # type: ignore[attr-defined]  # its signature
        return run

    handles, wrapped = [], []
    wrap = _no_global_module_hooks()
    for name, module in modules:
        if wrap and hook_free(module):  # never a TorchScript module
            shortcut = shortcut_of_type(type(module)) if shortcuts else None
            module.__dict__["forward"] = forward = wrapped_forward(name, module, shortcut)
            wrapped.append((module, forward))
            continue
        if isinstance(module, torch.jit.ScriptModule):  # takes no hooks: its ops are its caller's
            continue
        handles.append(module.register_forward_pre_hook(enter(name)))
        handles.append(module.register_forward_hook(leave(name), always_call=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for module, forward in wrapped:
            if module.__dict__.get("forward") is forward:  # not one the model's code set meanwhile
                del module.__dict__["forward"]


def _no_global_module_hooks() -> bool:
    """No global module hook would see a module called without hooks, or the layer calls a shortcut
    skips (another torch-function or dispatch mode is checked at each call: :func:`_only_recording_modes`)."""
    hooks = nn.modules.module
    return not (
        hooks._global_forward_pre_hooks
        or hooks._global_forward_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    )


def _only_recording_modes() -> bool:
    """The recording's two modes are the only ones active (the forward pushed none of its own)."""
    return torch._C._len_torch_function_stack() == 1 and torch._C._len_torch_dispatch_stack() == 1


def _direct_call(recorder: _Recorder) -> Call:
    """Hand one ATen op to ``recorder`` as PyTorch's dispatcher would: with the recorder off the dispatch
    mode stack while it runs (the caller has taken the torch-function mode off its stack)."""

    def call(func: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        mode = torch._C._pop_torch_dispatch_stack(None)
        try:
            return recorder.__torch_dispatch__(func, (), args, kwargs)
        finally:
            torch._C._push_on_torch_dispatch_stack(mode)

    return call
