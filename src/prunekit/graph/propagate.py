"""Propagate channel labels through a :class:`~.trace.Trace` with one table of ATen op rules.

Every tensor dim carries a label vector (one int per index). Labels are union-find elements: a
channel class is removed as a whole, and a class joined with label 0 is pinned (never removed).
Parameters start with fresh labels on their channel dims; inputs, constants and the other dims start
pinned. A rule maps the labels of an op's inputs to labels of its outputs and joins the labels that
must be removed together (a conv's input channels with its weight's in-dim, the two operands of an
add …). Shapes decide everything: a rule reads the recorded shapes, never a model-specific case.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .._registry import Registry
from .trace import Op, Ref, Trace
from .unionfind import UnionFind

Labels = list[np.ndarray]


class UnsupportedOpError(ValueError):
    """An op without a channel rule touched prunable channels; nothing was changed."""


class Context:
    """Labels of every traced tensor node, the union-find behind them, and their shapes."""

    def __init__(
        self,
        trace: Trace,
        uf: UnionFind,
        labels: dict[int, Labels],
        hints: dict[int, int] | None = None,
        tiled: set[tuple[int, int]] | None = None,
    ) -> None:
        self.trace, self.uf, self.labels = trace, uf, labels
        self.hints = hints or {}  # view output node → dim that keeps labels in a split (head splits)
        self.tiled = tiled or set()  # (node, dim) whose slices tile it with computed bounds (Phi-3 qkv)
        self.multiples: list[tuple[np.ndarray, int]] = []  # labels whose kept count a kernel needs a
        # multiple of (16-byte strides of _grouped_mm)
        self.statistics: list[np.ndarray] = []  # labels a statistic runs over (a mean over channels)
        self.broadcast: set[tuple[int, int]] = set()  # (node, dim) an expand broadcast: holds no channels

    @functools.cached_property
    def read(self) -> frozenset[int]:
        """Nodes some op reads or the model returns (built on first use)."""
        nodes = {ref.node for op in self.trace.ops for ref in tensor_args(op)}
        return frozenset(nodes.union(self.trace.outputs))

    def shape(self, ref: Ref) -> tuple[int, ...]:
        return self.trace.shapes[ref.node]

    def of(self, ref: Ref) -> Labels:
        """Labels of ``ref`` (pinned zeros for a tensor no rule labelled)."""
        if ref.node not in self.labels:
            self.labels[ref.node] = self.zeros(self.shape(ref))
        return self.labels[ref.node]

    @staticmethod
    def zeros(shape: tuple[int, ...]) -> Labels:
        return [np.zeros(n, dtype=np.int64) for n in shape]

    def join(self, vectors: list[np.ndarray]) -> np.ndarray:
        """Union equally long vectors index by index; return the first."""
        for vec in vectors[1:]:
            self.uf.union(vectors[0], vec)
        return vectors[0]

    def live(self, labels: Labels) -> bool:
        """Whether any index of ``labels`` could still be removed."""
        return any(vec.size and np.count_nonzero(self.uf.find(vec)) for vec in labels)


Rule = Callable[[Context, Op], list[Labels]]
OP_RULES: Registry[Rule] = Registry("op rule")


def register_op_rule(names: str | tuple[str, ...], rule: Rule) -> Rule:
    """Register ``rule(ctx, op) -> labels per tensor output`` for ATen op packets such as ``"add"``."""
    for name in (names,) if isinstance(names, str) else names:
        OP_RULES.register(name, rule)
    return rule


def tensor_args(op: Op) -> list[Ref]:
    """Every :class:`Ref` among ``op``'s arguments, in order (lists such as ``cat``'s included)."""
    refs: list[Ref] = []
    for values in (op.args, op.kwargs.values()) if op.kwargs else (op.args,):
        for value in values:
            if type(value) is Ref:
                refs.append(value)
            elif type(value) in (list, tuple):
                refs += [v for v in value if type(v) is Ref]
    return refs


def out_refs(op: Op) -> list[Ref]:
    return [o for o in op.outputs if isinstance(o, Ref)]


def arg(op: Op, name: str, default: Any = None) -> Any:
    """The argument ``name`` of ``op`` by its ATen schema, positional or keyword."""
    i = _position(op.func, name)
    if i is None:
        return default
    return op.args[i] if i < len(op.args) else op.kwargs.get(name, default)


@functools.cache
def _position(func: Any, name: str) -> int | None:
    """Index of argument ``name`` in ``func``'s schema (read once per op overload: the schema's
    argument list is rebuilt as Python objects on every access)."""
    return next((i for i, a in enumerate(func._schema.arguments) if a.name == name), None)


def _rule_for(name: str) -> Rule | None:
    if name in OP_RULES:
        return OP_RULES.get(name)
    if name.endswith("_") and name[:-1] in OP_RULES:  # in-place variant, e.g. relu_ / add_
        return OP_RULES.get(name[:-1])
    return None


def propagate(
    trace: Trace,
    uf: UnionFind,
    labels: dict[int, Labels],
    modules: dict[str, str],
    hints: dict[int, int] | None = None,
    tiled: set[tuple[int, int]] | None = None,
) -> Context:
    """Run every op's rule in order; pin the model outputs and the tensors no op read. ``modules``
    maps name → class name, ``hints`` maps a view's output node to the dim that keeps labels where it
    splits heads, ``tiled`` holds the ``(node, dim)`` whose slices pass channels through.

    Raises :class:`UnsupportedOpError` naming the op and its module when an op without a rule
    touches a channel that could be removed.
    """
    ctx = Context(trace, uf, labels, hints, tiled)
    read: set[int] = set()
    for op in trace.ops:
        read.update([ref.node for ref in tensor_args(op)])
        outs = out_refs(op)
        if not outs:
            continue
        rule = _rule_for(op.name)
        if rule is None:
            dims = [(t.node, d, vec) for t in tensor_args(op) for d, vec in enumerate(ctx.of(t))]
            if ctx.live([vec for node, d, vec in dims if (node, d) not in ctx.broadcast]):
                raise _unsupported(op, modules)
            for *_, vec in dims:  # an expand's broadcast copies (RoBERTa's token types → gather)
                ctx.uf.pin(vec)  # hold no channels of their own: kept, as a size-1 dim would be
            result = [ctx.zeros(ctx.shape(o)) for o in outs]
        else:
            result = rule(ctx, op)
        for ref, out in zip(outs, result, strict=True):
            if tuple(map(len, out)) != ctx.shape(ref):
                raise RuntimeError(f"rule for aten.{op.name} produced labels of the wrong shape")
            labels[ref.node] = out
    for node in trace.outputs:
        for vec in ctx.of(Ref(node)):
            uf.pin(vec)
    _pin_unread(ctx, read)
    return ctx


def _pin_unread(ctx: Context, read: set[int]) -> None:
    """Keep whole the parameters and buffers the traced forward never read (an auxiliary head that
    runs only in training, an unused layer): nothing couples them to the channels they would meet."""
    unused = []
    for node, (kind, name) in ctx.trace.sources.items():
        if kind in ("param", "buffer") and node not in read and node in ctx.labels:
            vectors = ctx.labels[node]
            if ctx.live(vectors):
                unused.append(name)
            for vec in vectors:
                ctx.uf.pin(vec)
    if unused:
        warnings.warn(
            f"{len(unused)} parameter(s) or buffer(s) were not used by the traced forward "
            f"({', '.join(unused[:4])}{' …' if len(unused) > 4 else ''}): they keep all their channels. "
            "If they run in another mode (e.g. an auxiliary head in training), their inputs may be pruned "
            "under them: keep the layers feeding them with ignore=[...], or trace a forward that uses them.",
            stacklevel=4,
        )


def _unsupported(op: Op, modules: dict[str, str]) -> UnsupportedOpError:
    where = (
        f"module {op.module!r} ({modules.get(op.module, '?')})" if op.module else "the model's own forward"
    )
    why = _WHY.get(op.name, "")
    owner, inside, _ = f".{op.module}".partition(".parametrizations.")
    keep = f"ignore={[owner[1:]]!r} (the module it parametrizes)" if inside else "ignore=[...]"
    return UnsupportedOpError(
        f"cannot prune through aten.{op.func.__name__} called in {where}: it touches prunable channels "
        f"and there is no channel rule for it{why}. The model is unchanged. Fix: keep the layers feeding "
        f"it out of pruning with {keep}, or add a rule with "
        f"prunekit.graph.register_op_rule({op.name!r}, rule)"
    )


_WHY = {
    "_safe_softmax": (
        " (it is F.scaled_dot_product_attention's unfused math path, taken on CPU e.g. for 3-D q/k/v "
        "without a heads dim: there the heads and the default scale are not visible; q/k/v shaped "
        "(batch, heads, seq, head_dim) run a fused kernel that prunekit handles)"
    ),
}
