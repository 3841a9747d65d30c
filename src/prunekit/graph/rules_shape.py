"""Channel rules for elementwise, reduction and shape ops (views, permutes, cat, split, slicing)."""

from __future__ import annotations

import itertools
import re

import numpy as np

from .propagate import Context, Labels, arg, out_refs, tensor_args
from .trace import Op


def _dims(dim: object, rank: int) -> list[int]:
    if dim is None or dim == []:
        return list(range(rank))
    items = dim if isinstance(dim, (list, tuple)) else [dim]
    return [int(d) % max(rank, 1) for d in items]


def elementwise(ctx: Context, op: Op) -> list[Labels]:
    """Broadcasting ops: join labels of aligned dims; pin a size-1 dim that is broadcast."""
    outs = out_refs(op)
    shape = ctx.shape(outs[0])
    per_dim: list[list[np.ndarray]] = [[] for _ in shape]
    for ref in tensor_args(op):
        in_shape, offset = ctx.shape(ref), len(shape) - len(ctx.shape(ref))
        for k, vec in enumerate(ctx.of(ref)):
            if offset >= 0 and in_shape[k] == shape[k + offset]:
                per_dim[k + offset].append(vec)
            else:
                ctx.uf.pin(vec)
    labels = [ctx.join(v) if v else np.zeros(n, dtype=np.int64) for v, n in zip(per_dim, shape, strict=True)]
    return [labels if ctx.shape(o) == shape else ctx.zeros(ctx.shape(o)) for o in outs]


def reduction(ctx: Context, op: Op) -> list[Labels]:
    """Reduced dims vanish (or become size 1); the others keep their labels.

    A statistic over a channel dim (mean, var, amax …) may change when channels go, as a LayerNorm's
    does; a reduction that returns *positions* (argmax, ``max(dim)``'s indices) pins the reduced dims,
    since the positions of the kept channels shift.
    """
    x = tensor_args(op)[0]
    labels = ctx.of(x)
    reduced = set(_dims(arg(op, "dim"), len(labels)))
    if op.name in ("argmax", "argmin") or (len(out_refs(op)) == 2 and op.name in ("max", "min")):
        for d in reduced:
            ctx.uf.pin(labels[d])
    keep = bool(arg(op, "keepdim", False))
    out: Labels = []
    for d, vec in enumerate(labels):
        if d not in reduced:
            out.append(vec)
        elif keep:
            out.append(np.zeros(1, dtype=np.int64))
    return [out for _ in out_refs(op)]


def same_rank(ctx: Context, op: Op) -> list[Labels]:
    """Padding: dims that keep their size keep their labels (a padded dim is pinned)."""
    x = tensor_args(op)[0]
    labels, in_shape = ctx.of(x), ctx.shape(x)
    result = []
    for o in out_refs(op):
        out = []
        for d, n in enumerate(ctx.shape(o)):
            if d < len(in_shape) and in_shape[d] == n:
                out.append(labels[d])
            else:
                if d < len(labels):
                    ctx.uf.pin(labels[d])
                out.append(np.zeros(n, dtype=np.int64))
        result.append(out)
    return result


def windowed(ctx: Context, op: Op) -> list[Labels]:
    """Pooling and upsampling over the last 1, 2 or 3 dims (``…1d`` / ``…2d`` / ``…3d``): each output
    mixes a window of its neighbours, so those dims are pinned (spatial dims hold no channels, unless a
    model pools over its channel axis); the leading dims keep their labels."""
    x = tensor_args(op)[0]
    labels = ctx.of(x)
    k = int(re.search(r"([123])d", op.name).group(1))  # type: ignore[union-attr]
    for vec in labels[-k:]:
        ctx.uf.pin(vec)
    return [[*labels[:-k], *ctx.zeros(ctx.shape(o)[-k:])] for o in out_refs(op)]


def along_dim(ctx: Context, op: Op) -> list[Labels]:
    """Softmax and cumulative ops along ``dim``: every output position depends on the others (a removed
    channel's softmax weight or running sum is not zero), so ``dim`` is pinned; other dims pass."""
    labels = list(ctx.of(tensor_args(op)[0]))
    dim = int(arg(op, "dim")) % len(labels)
    ctx.uf.pin(labels[dim])
    labels[dim] = np.zeros(len(labels[dim]), dtype=np.int64)
    return [labels for _ in out_refs(op)]


def pinned(ctx: Context, op: Op) -> list[Labels]:
    """Ops whose channel structure has no rule but which are safe to keep whole (recurrent layers):
    every input dim is pinned, outputs carry no channels."""
    for ref in tensor_args(op):
        for vec in ctx.of(ref):
            ctx.uf.pin(vec)
    return [ctx.zeros(ctx.shape(o)) for o in out_refs(op)]


def cat(ctx: Context, op: Op) -> list[Labels]:
    """Concatenation: labels of the cat dim are concatenated, the other dims are joined."""
    shape = ctx.shape(out_refs(op)[0])
    dim = int(arg(op, "dim", 0)) % len(shape)
    parts = [t for t in tensor_args(op) if len(ctx.shape(t)) == len(shape)]
    labels = [ctx.of(t) for t in parts]
    out = [
        np.concatenate([lab[d] for lab in labels]) if d == dim else ctx.join([lab[d] for lab in labels])
        for d in range(len(shape))
    ]
    return [out]


def split(ctx: Context, op: Op) -> list[Labels]:
    """split / chunk: equal parts are joined index by index (each keeps the same count); else pinned."""
    x, outs = tensor_args(op)[0], out_refs(op)
    labels = ctx.of(x)
    dim = int(arg(op, "dim", 0)) % len(labels)
    sizes = [ctx.shape(o)[dim] for o in outs]
    if len(set(sizes)) == 1:
        parts = labels[dim].reshape(len(sizes), sizes[0])
        ctx.uf.union(parts, parts[:1])
    else:
        ctx.uf.pin(labels[dim])
    bounds = np.cumsum([0, *sizes])
    return [[*labels[:dim], labels[dim][a:b], *labels[dim + 1 :]] for a, b in itertools.pairwise(bounds)]


def slice_(ctx: Context, op: Op) -> list[Labels]:
    """A partial slice has hard-coded bounds: the sliced dim is pinned."""
    x = tensor_args(op)[0]
    labels = list(ctx.of(x))
    dim = int(arg(op, "dim", 0)) % len(labels)
    n = ctx.shape(out_refs(op)[0])[dim]
    if n != len(labels[dim]):
        ctx.uf.pin(labels[dim])
        labels[dim] = np.zeros(n, dtype=np.int64)
    return [labels]


def select(ctx: Context, op: Op) -> list[Labels]:
    """Indexing one position of a dim (hard-coded): the dim is pinned and dropped."""
    labels = list(ctx.of(tensor_args(op)[0]))
    dim = int(arg(op, "dim", 0)) % len(labels)
    ctx.uf.pin(labels.pop(dim))
    return [labels]


def unbind(ctx: Context, op: Op) -> list[Labels]:
    """``x.unbind(dim)`` (``q, k, v = qkv.unbind(0)``): like one ``select`` per position of ``dim``."""
    labels = list(ctx.of(tensor_args(op)[0]))
    dim = int(arg(op, "dim", 0)) % len(labels)
    ctx.uf.pin(labels.pop(dim))
    return [list(labels) for _ in out_refs(op)]


def permute(ctx: Context, op: Op) -> list[Labels]:
    labels = ctx.of(tensor_args(op)[0])
    if op.name == "permute":
        order = [int(d) % len(labels) for d in arg(op, "dims")]
    else:  # transpose / t
        order = list(range(len(labels)))
        if len(labels) >= 2:
            a, b = (-1, -2) if op.name == "t" else (int(arg(op, "dim0")), int(arg(op, "dim1")))
            order[a], order[b] = order[b], order[a]
    return [[labels[d] for d in order]]


def expand(ctx: Context, op: Op) -> list[Labels]:
    x = tensor_args(op)[0]
    labels, shape = ctx.of(x), ctx.shape(out_refs(op)[0])
    offset = len(shape) - len(labels)
    out = [np.zeros(n, dtype=np.int64) for n in shape[:offset]]
    for k, vec in enumerate(labels):
        if len(vec) == shape[k + offset]:
            out.append(vec)
        else:
            ctx.uf.pin(vec)
            out.append(np.zeros(shape[k + offset], dtype=np.int64))
    return [out]


def repeat(ctx: Context, op: Op) -> list[Labels]:
    labels, repeats = ctx.of(tensor_args(op)[0]), [int(r) for r in arg(op, "repeats")]
    offset = len(repeats) - len(labels)
    out = [np.zeros(r, dtype=np.int64) for r in repeats[:offset]]
    out += [np.tile(vec, r) for vec, r in zip(labels, repeats[offset:], strict=True)]
    return [out]
