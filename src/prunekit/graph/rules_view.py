"""The channel rule for view / reshape / flatten / squeeze: index mappings derived from shapes.

Input and output dims are matched in factor groups with equal products (``(C, H, W) -> C·H·W``,
``C -> (g, C/g)``). A merge gives each flat index the label of the one removable input dim (so
flattening ``(C, H, W)`` maps channel ``c`` to the block ``c·H·W … c·H·W + H·W - 1``). A split keeps
labels on the one output dim they vary along; when they vary along several (a channel shuffle, or a
split into heads), the largest dim keeps them and each of its indices is joined across the others,
so every tensor stays prunable by slicing one dim. Where a split creates attention heads, the
head-split hint (``ctx.hints``, see :mod:`.attention`) picks that dim instead.
"""

from __future__ import annotations

import numpy as np

from .attention import hinted_order
from .propagate import Context, Labels, out_refs, tensor_args
from .trace import Op


def view(ctx: Context, op: Op) -> list[Labels]:
    x = tensor_args(op)[0]
    labels, in_shape = ctx.of(x), ctx.shape(x)
    out_shape = ctx.shape(out_refs(op)[0])
    out: list[np.ndarray | None] = [None] * len(out_shape)
    if 0 in in_shape:
        return [ctx.zeros(out_shape)]
    for d, n in enumerate(in_shape):
        if n == 1:
            ctx.uf.pin(labels[d])
    hint = ctx.hints.get(out_refs(op)[0].node)
    for ins, outs in _factor_groups(in_shape, out_shape, hint):
        flat = _merge(ctx, [labels[d] for d in ins], [(x.node, d) in ctx.broadcast for d in ins])
        keep = outs.index(hint) if hint in outs else None
        for d, vec in zip(outs, _unmerge(ctx, flat, [out_shape[d] for d in outs], keep), strict=True):
            out[d] = vec
    return [[np.zeros(n, dtype=np.int64) if v is None else v for v, n in zip(out, out_shape, strict=True)]]


def _factor_groups(
    in_shape: tuple[int, ...], out_shape: tuple[int, ...], hint: int | None
) -> list[tuple[list, list]]:
    """Pairs (input dims, output dims) with equal size products, size-1 dims left out except the
    hinted one (one head left: ``(…, D) → (…, 1, D)``; one head dim: ``(…, H) → (…, H, 1)``), which
    joins the group of the dim it was split with."""
    ins = [d for d, n in enumerate(in_shape) if n != 1]
    outs = [d for d, n in enumerate(out_shape) if n != 1 or d == hint]
    groups, i, j = [], 0, 0
    while i < len(ins) and j < len(outs):
        gi, go = [ins[i]], [outs[j]]
        pi, po = in_shape[ins[i]], out_shape[outs[j]]
        i, j = i + 1, j + 1
        while pi != po:
            if pi < po:
                gi.append(ins[i])
                pi, i = pi * in_shape[ins[i]], i + 1
            else:
                go.append(outs[j])
                po, j = po * out_shape[outs[j]], j + 1
        if j == len(outs) - 1 and outs[j] == hint and out_shape[hint] == 1:  # a last (…, H, 1): its
            go.append(outs[j])  # group is H's; a size-1 H before D starts D's group above
            j += 1
        groups.append((gi, go))
    return groups


def _merge(ctx: Context, vectors: list[np.ndarray], broadcast: list[bool]) -> np.ndarray:
    """Flat labels of a group of dims: the largest removable dim keeps its labels, others are pinned;
    a dim an ``expand`` broadcast (``repeat_kv``'s copies of each kv head) counts only if no other is
    removable."""
    sizes = [len(v) for v in vectors]
    live = [k for k, v in enumerate(vectors) if ctx.uf.find(v).any()]
    if any(not broadcast[k] for k in live):
        live = [k for k in live if not broadcast[k]]
    if not live:
        return np.zeros(int(np.prod(sizes)), dtype=np.int64)
    keep = max(live, key=lambda k: (sizes[k], k))
    for k in live:
        if k != keep:
            ctx.uf.pin(vectors[k])
    axis_shape = [1] * len(sizes)
    axis_shape[keep] = sizes[keep]
    return np.broadcast_to(vectors[keep].reshape(axis_shape), sizes).ravel()


def _unmerge(ctx: Context, flat: np.ndarray, sizes: list[int], hint: int | None) -> list[np.ndarray]:
    """Per-dim labels of ``flat`` viewed as ``sizes``; joins labels when they vary along several dims
    (keeping them on dim ``hint`` when given, else on the largest)."""
    if len(sizes) == 1:
        return [flat]
    grid = flat.reshape(sizes)
    roots = ctx.uf.find(grid)
    out = [np.zeros(n, dtype=np.int64) for n in sizes]
    if not roots.any():
        return out
    if hint is not None and sizes[hint] == 1:  # one head (or one head dim) left: all of it is one channel
        ctx.uf.union(flat, flat[:1])
        out[hint] = flat[:1]
        return out
    order = hinted_order(sizes, hint)
    for k in order:
        along = np.moveaxis(roots, k, 0).reshape(sizes[k], -1)
        if (along == along[:, :1]).all():
            out[k] = np.moveaxis(grid, k, 0).reshape(sizes[k], -1)[:, 0]
            return out
    k = order[0]
    rows = np.moveaxis(grid, k, 0).reshape(sizes[k], -1)
    ctx.uf.union(rows, rows[:, :1])
    out[k] = rows[:, 0]
    return out
