"""Channel rules for elementwise, reduction and shape ops (views, permutes, cat, stack, split, slicing,
indexing, roll, channel and pixel shuffles)."""

from __future__ import annotations

import itertools
import re

import numpy as np

from .propagate import Context, Labels, arg, out_refs, tensor_args
from .trace import Op, Ref, Trace


def _dims(dim: object, rank: int) -> list[int]:
    if dim is None or dim == []:
        return list(range(rank))
    items = dim if isinstance(dim, (list, tuple)) else [dim]
    return [int(d) % max(rank, 1) for d in items]


def elementwise(ctx: Context, op: Op) -> list[Labels]:
    """Broadcasting ops: join labels of aligned dims; pin a size-1 dim that is broadcast. An output
    dim stays marked as broadcast by an ``expand`` (see :func:`expand`) if every input's dim is."""
    outs = out_refs(op)
    shape = ctx.shape(outs[0])
    per_dim: list[list[np.ndarray]] = [[] for _ in shape]
    spread = [True] * len(shape)
    for ref in tensor_args(op):
        in_shape, offset = ctx.shape(ref), len(shape) - len(ctx.shape(ref))
        for k, vec in enumerate(ctx.of(ref)):
            if offset >= 0 and in_shape[k] == shape[k + offset]:
                per_dim[k + offset].append(vec)
                spread[k + offset] &= (ref.node, k) in ctx.broadcast
            else:
                ctx.uf.pin(vec)
    labels = [ctx.join(v) if v else np.zeros(n, dtype=np.int64) for v, n in zip(per_dim, shape, strict=True)]
    for o in outs:
        ctx.broadcast.update((o.node, d) for d, v in enumerate(per_dim) if v and spread[d])
    return [labels if ctx.shape(o) == shape else ctx.zeros(ctx.shape(o)) for o in outs]


def reduction(ctx: Context, op: Op) -> list[Labels]:
    """Reduced dims vanish (or become size 1); the others keep their labels.

    A statistic over a channel dim (mean, var, amax …) may change when channels go, as a LayerNorm's
    does: it is recorded in ``ctx.statistics`` (the group is not exact; a sum or a norm is). A reduction
    that returns *positions* (argmax, ``max(dim)``'s indices where read) pins the reduced dims, since the
    positions of the kept channels shift (CBAM's ``x.max(1)[0]`` does not).
    """
    x = tensor_args(op)[0]
    labels = ctx.of(x)
    reduced = set(_dims(arg(op, "dim"), len(labels)))
    outs = out_refs(op)
    positions = len(outs) == 2 and op.name in ("max", "min") and outs[1].node in ctx.read
    if op.name in ("argmax", "argmin") or positions:
        for d in reduced:
            ctx.uf.pin(labels[d])
    if op.name not in _ZERO_NEUTRAL:
        ctx.statistics += [labels[d] for d in reduced]
    keep = bool(arg(op, "keepdim", False))
    out: Labels = []
    for d, vec in enumerate(labels):
        if d not in reduced:
            out.append(vec)
        elif keep:
            out.append(np.zeros(1, dtype=np.int64))
    return [out for _ in out_refs(op)]


_ZERO_NEUTRAL = ("sum", "linalg_vector_norm", "norm", "any")  # a zeroed channel does not change them


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


def complex_view(ctx: Context, op: Op) -> list[Labels]:
    """``view_as_complex`` (…, N, 2) → (…, N) and ``view_as_real`` back (Meta Llama's rotary): every
    dim but the (real, imaginary) pair keeps its labels; the pair holds no channels."""
    labels = list(ctx.of(op.args[0]))
    if op.name == "view_as_complex":
        ctx.uf.pin(labels.pop())
        return [labels]
    return [[*labels, np.zeros(2, dtype=np.int64)]]


def fresh(ctx: Context, op: Op) -> list[Labels]:
    """A new tensor of given sizes (``x.new_ones(size)``, ``x.new_zeros`` …): ``x`` lends only its dtype
    and device, so nothing is coupled; the new tensor holds no channels (sizes the forward derives from a
    pruned dim then differ from the plan's, which the pruned-model check catches)."""
    return [ctx.zeros(ctx.shape(o)) for o in out_refs(op)]


def glu(ctx: Context, op: Op) -> list[Labels]:
    """``F.glu(x, dim)`` = first half · sigmoid(second half): channel ``i`` of each half is one
    channel, joined; the output carries the first half's labels."""
    labels = list(ctx.of(op.args[0]))
    dim = int(arg(op, "dim", -1)) % len(labels)
    halves = labels[dim].reshape(2, -1)
    ctx.uf.union(halves[1], halves[0])
    labels[dim] = halves[0]
    return [labels]


def as_strided(ctx: Context, op: Op) -> list[Labels]:
    """``as_strided`` that only restrides (same sizes; same strides and offset wherever a dim has more
    than one element, as ``AdaptiveAvgPool1d`` leaves it) passes its labels; any other view of the
    storage may reorder elements, so its dims are pinned."""
    x = op.args[0]
    size, stride = tuple(op.args[1]), tuple(op.args[2])
    offset = arg(op, "storage_offset", None)
    strides, start = ctx.trace.layouts.get(x.node, ((), -1))
    same = size == ctx.shape(x) and all(
        n == 1 or a == b for n, a, b in zip(size, stride, strides, strict=False)
    )
    if same and len(strides) == len(size) and offset in (None, start):
        return [list(ctx.of(x))]
    return pinned(ctx, op)


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


def stack(ctx: Context, op: Op) -> list[Labels]:
    """``torch.stack``: the inputs (all of one shape) join dim by dim and pass on; the new dim holds
    no channels."""
    parts = tensor_args(op)
    shape = ctx.shape(out_refs(op)[0])
    out = [ctx.join(list(vectors)) for vectors in zip(*(ctx.of(t) for t in parts), strict=True)]
    out.insert(int(arg(op, "dim", 0)) % len(shape), np.zeros(len(parts), dtype=np.int64))
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
    """A partial slice has hard-coded bounds: the sliced dim is pinned, unless its slices tile a tensor
    whose bounds the model computes from updated head counts (``ctx.tiled``): then each slice passes
    its channels through, as a split does."""
    x = tensor_args(op)[0]
    labels = list(ctx.of(x))
    dim = int(arg(op, "dim", 0)) % len(labels)
    n = ctx.shape(out_refs(op)[0])[dim]
    if (x.node, dim) in ctx.tiled:
        start, end = _bounds(op, len(labels[dim]))
        labels[dim] = labels[dim][start:end]
    elif n != len(labels[dim]):
        ctx.uf.pin(labels[dim])
        labels[dim] = np.zeros(n, dtype=np.int64)
    return [labels]


def tiled_slices(trace: Trace, nodes: set[int]) -> set[tuple[int, int]]:
    """``(node, dim)`` of each of ``nodes`` whose slices along ``dim`` (step 1) cover it exactly once,
    in order: Phi-3's ``qkv[..., :q]``, ``qkv[..., q : q + kv]``, ``qkv[..., q + kv :]``."""
    spans: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for op in trace.ops:
        if op.name != "slice" or not isinstance(op.args[0], Ref) or op.args[0].node not in nodes:
            continue
        shape = trace.shapes[op.args[0].node]
        dim = int(arg(op, "dim", 0)) % len(shape)
        key = (op.args[0].node, dim)
        spans.setdefault(key, []).append(_bounds(op, shape[dim]) if arg(op, "step", 1) == 1 else (-1, -1))
    tiled = set()
    for (node, dim), found in spans.items():
        starts, ends = zip(*sorted(set(found)), strict=True)
        if starts[0] == 0 and ends[-1] == trace.shapes[node][dim] and starts[1:] == ends[:-1]:
            tiled.add((node, dim))
    return tiled


def _bounds(op: Op, size: int) -> tuple[int, int]:
    """``(start, end)`` of a slice of a dim of ``size``, as Python clips them."""
    start, end = arg(op, "start"), arg(op, "end")
    start, end = 0 if start is None else int(start), size if end is None else int(end)
    return slice(start, end).indices(size)[:2]


def select(ctx: Context, op: Op) -> list[Labels]:
    """Indexing one position of a dim (hard-coded): the dim is pinned and dropped."""
    labels = list(ctx.of(tensor_args(op)[0]))
    dim = int(arg(op, "dim", 0)) % len(labels)
    ctx.uf.pin(labels.pop(dim))
    return [labels]


def index(ctx: Context, op: Op) -> list[Labels]:
    """Advanced indexing ``x[i, :, j]`` / ``x[mask]`` (``aten.index.Tensor``, ``None`` for a dim not
    indexed): the positions are hard-coded, so the indexed dims and the index tensors are pinned. The
    dims not indexed keep their labels in order; the index result dims (zeros) replace the indexed dims
    where those are adjacent, else come first, as in PyTorch. A layout that does not match the output's
    shape (masks the shapes cannot tell apart) pins everything."""
    x, indices = op.args[0], list(arg(op, "indices"))
    labels, out_shape = ctx.of(x), ctx.shape(out_refs(op)[0])
    before: Labels = []  # dims not indexed, before the first index tensor
    after: Labels = []  # … and after it
    d = 0
    for entry, span in zip(indices, _index_spans(ctx, x, indices, len(out_shape)), strict=True):
        if entry is None:
            (before if d == len(before) else after).append(labels[d])  # before: no index tensor yet
        else:
            for vec in (*labels[d : d + span], *ctx.of(entry)):
                ctx.uf.pin(vec)
        d += span
    after += labels[d:]
    positions = [k for k, entry in enumerate(indices) if entry is not None]
    adjacent = bool(positions) and positions[-1] - positions[0] == len(positions) - 1
    start, count = len(before) if adjacent else 0, len(out_shape) - len(before) - len(after)
    result = ctx.zeros(out_shape[start : start + count])
    out = [*before, *result, *after] if adjacent else [*result, *before, *after]
    if count < 0 or tuple(len(v) for v in out) != out_shape:
        return pinned(ctx, op)
    return [out]


def _index_spans(ctx: Context, x: Ref, indices: list[Ref | None], out_rank: int) -> list[int]:
    """Input dims each entry of an ``aten.index`` consumes: one for ``None`` and an integer index, the
    rank for a bool mask. The trace holds no dtypes; every mask of rank 2 or more changes the output's
    rank (a 1-D mask consumes like a 1-D index), so masks are looked for only when that rank says so:
    index tensors of rank ≥ 2 shaped like the dims they land on."""
    shape, ranks = ctx.shape(x), [0 if i is None else len(ctx.shape(i)) for i in indices]
    tensors = [r for i, r in zip(indices, ranks, strict=True) if i is not None]
    spans = [1] * len(indices)
    if not tensors or len(shape) - len(tensors) + max(tensors) == out_rank:
        return spans
    d = 0
    for k, (entry, rank) in enumerate(zip(indices, ranks, strict=True)):
        if entry is not None and rank >= 2 and ctx.shape(entry) == shape[d : d + rank]:
            spans[k] = rank
        d += spans[k]
    return spans


def index_put(ctx: Context, op: Op) -> list[Labels]:
    """``x[i] = values`` / ``x[mask] = values`` (``aten.index_put``; a Switch-style mixture of experts
    writing each expert's tokens back): the indexed dims and the index tensors are pinned (positions);
    the dims not indexed keep ``x``'s labels, and ``values``, broadcast from the right onto ``x[i]``'s
    layout (the index result in place of adjacent indexed dims, else first, as for :func:`index`), joins
    them where sizes agree. Index tensors of rank ≥ 2 (whose layout a mask would change) pin
    everything."""
    x, indices, values = op.args[0], list(arg(op, "indices")), arg(op, "values")
    labels = ctx.of(x)
    if any(i is not None and len(ctx.shape(i)) != 1 for i in indices):
        return pinned(ctx, op)
    layout: list[np.ndarray | None] = []  # x[indices]'s dims: x's labels, None for the index result
    positions = [k for k, entry in enumerate(indices) if entry is not None]
    for k, entry in enumerate(indices):
        if entry is None:
            layout.append(labels[k])
        else:
            ctx.uf.pin(labels[k])
            for vec in ctx.of(entry):
                ctx.uf.pin(vec)
    adjacent = bool(positions) and positions[-1] - positions[0] == len(positions) - 1
    result_at = positions[0] if adjacent else 0
    layout.insert(result_at, None)
    layout += labels[len(indices) :]
    source = ctx.of(values) if isinstance(values, Ref) else []
    for vec, target in zip(reversed(source), reversed(layout), strict=False):
        if target is not None and len(vec) == len(target):
            ctx.uf.union(vec, target)
        else:
            ctx.uf.pin(vec)
    for vec in source[: max(len(source) - len(layout), 0)]:
        ctx.uf.pin(vec)
    return [list(labels)]


def index_select(ctx: Context, op: Op) -> list[Labels]:
    """``x.index_select(dim, index)``: hard-coded positions, so ``dim`` and the index are pinned; the
    other dims pass."""
    labels = list(ctx.of(op.args[0]))
    dim = int(arg(op, "dim")) % len(labels)
    for vec in (labels[dim], *ctx.of(arg(op, "index"))):
        ctx.uf.pin(vec)
    labels[dim] = np.zeros(ctx.shape(out_refs(op)[0])[dim], dtype=np.int64)
    return [labels]


def index_add(ctx: Context, op: Op) -> list[Labels]:
    """``x.index_add(dim, index, source)`` (a mixture of experts gathering its tokens back): rows of
    ``source`` add into hard-coded positions along ``dim`` (pinned, with the index); every other dim of
    ``source`` joins ``x``'s."""
    labels, source = list(ctx.of(op.args[0])), ctx.of(arg(op, "source"))
    dim = int(arg(op, "dim")) % len(labels)
    for vec in (labels[dim], source[dim], *ctx.of(arg(op, "index"))):
        ctx.uf.pin(vec)
    for d, (a, b) in enumerate(zip(labels, source, strict=True)):
        if d != dim:
            ctx.uf.union(a, b)
    return [labels]


def roll(ctx: Context, op: Op) -> list[Labels]:
    """``torch.roll``: a rolled dim is pinned (removing a channel would shift which ones wrap around);
    without ``dims`` the flattened tensor rolls, so every dim is pinned. Other dims pass."""
    labels = list(ctx.of(op.args[0]))
    for d in _dims(arg(op, "dims"), len(labels)):
        ctx.uf.pin(labels[d])
        labels[d] = np.zeros(len(labels[d]), dtype=np.int64)
    return [labels]


_POSITION_DIM = {
    "flip": "dims", "sort": "dim", "topk": "dim", "unfold": "dimension",
    "_fft_c2c": "dim", "_fft_r2c": "dim", "_fft_c2r": "dim",
}  # fmt: skip


def along_positions(ctx: Context, op: Op) -> list[Labels]:
    """flip / sort / topk / ``Tensor.unfold`` / FFTs: values move between positions of their dims (a
    bidirectional flip in time, MoE routing's top-k, FNet's Fourier mixing), which are pinned; the other
    dims pass to every output (sort's and topk's indices too); a dim unfold adds holds no channels."""
    labels = ctx.of(op.args[0])
    moved = _dims(arg(op, _POSITION_DIM[op.name], -1), len(labels))
    for d in moved:
        ctx.uf.pin(labels[d])
    result = []
    for o in out_refs(op):
        shape = ctx.shape(o)
        kept = [d < len(labels) and d not in moved and len(labels[d]) == n for d, n in enumerate(shape)]
        result.append(
            [
                labels[d] if k else np.zeros(n, dtype=np.int64)
                for d, (n, k) in enumerate(zip(shape, kept, strict=True))
            ]
        )
    return result


def gather(ctx: Context, op: Op) -> list[Labels]:
    """``x.gather(dim, index)``: positions along ``dim`` come from ``index`` (pinned); the output has
    ``index``'s shape, and a dim of the same size as ``x``'s carries ``x``'s labels, joined with
    ``index``'s."""
    labels, index = ctx.of(op.args[0]), ctx.of(arg(op, "index"))
    dim = int(arg(op, "dim")) % len(labels)
    ctx.uf.pin(labels[dim])
    out = []
    for d, (vec, idx) in enumerate(zip(labels, index, strict=True)):
        if d != dim and len(vec) == len(idx):
            out.append(ctx.join([vec, idx]))
        else:
            ctx.uf.pin(vec)
            ctx.uf.pin(idx)
            out.append(np.zeros(len(idx), dtype=np.int64))
    return [out]


def channel_shuffle(ctx: Context, op: Op) -> list[Labels]:
    """``channel_shuffle(x, g)``: channel ``i`` of every group is joined (the groups keep equal sizes)
    and the output takes the channels of dim 1 in the shuffled order ``(g, C/g) → (C/g, g)``."""
    labels = list(ctx.of(op.args[0]))
    per_group = labels[1].reshape(int(arg(op, "groups")), -1)
    ctx.uf.union(per_group, per_group[:1])
    labels[1] = per_group.T.ravel()
    return [labels]


def pixel_shuffle(ctx: Context, op: Op) -> list[Labels]:
    """``pixel_shuffle(x, r)``: the ``r²`` input channels that become one output channel's pixels are
    joined (removed as one); the spatial dims are pinned."""
    labels = ctx.of(op.args[0])
    r = int(arg(op, "upscale_factor"))
    blocks = labels[-3].reshape(-1, r * r)
    ctx.uf.union(blocks, blocks[:, :1])
    for vec in labels[-2:]:
        ctx.uf.pin(vec)
    return [[*labels[:-3], blocks[:, 0], *ctx.zeros(ctx.shape(out_refs(op)[0])[-2:])]]


def pixel_unshuffle(ctx: Context, op: Op) -> list[Labels]:
    """``pixel_unshuffle(x, r)``: each input channel becomes ``r²`` consecutive output channels with
    its label; the spatial dims are pinned."""
    labels = ctx.of(op.args[0])
    r = int(arg(op, "downscale_factor"))
    for vec in labels[-2:]:
        ctx.uf.pin(vec)
    return [[*labels[:-3], np.repeat(labels[-3], r * r), *ctx.zeros(ctx.shape(out_refs(op)[0])[-2:])]]


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
    """Dims that keep their size keep their labels. A broadcast dim (from size 1, or new) gets fresh
    labels, marked broadcast: joined with the channels it meets (``g.expand_as(x)`` follows ``x``, so
    the plan predicts its size) without pinning them, and never kept over a real dim in a merge."""
    x, node = tensor_args(op)[0], out_refs(op)[0].node
    labels, shape = ctx.of(x), ctx.shape(out_refs(op)[0])
    offset = len(shape) - len(labels)
    out = [ctx.uf.fresh(n) for n in shape[:offset]]
    ctx.broadcast.update((node, d) for d in range(offset))
    for k, vec in enumerate(labels):
        if len(vec) == shape[k + offset]:
            out.append(vec)
        else:
            ctx.uf.pin(vec)
            out.append(ctx.uf.fresh(shape[k + offset]))
            ctx.broadcast.add((node, k + offset))
    return [out]


def repeat(ctx: Context, op: Op) -> list[Labels]:
    labels, repeats = ctx.of(tensor_args(op)[0]), [int(r) for r in arg(op, "repeats")]
    offset = len(repeats) - len(labels)
    out = [np.zeros(r, dtype=np.int64) for r in repeats[:offset]]
    out += [np.tile(vec, r) for vec, r in zip(labels, repeats[offset:], strict=True)]
    return [out]


def triangle(ctx: Context, op: Op) -> list[Labels]:
    """``tril`` / ``triu``: which entries are kept depends on their positions in the last two dims
    (pinned); other dims pass."""
    labels = list(ctx.of(op.args[0]))
    for d in range(max(len(labels) - 2, 0), len(labels)):
        ctx.uf.pin(labels[d])
        labels[d] = np.zeros(len(labels[d]), dtype=np.int64)
    return [labels]


def scatter(ctx: Context, op: Op) -> list[Labels]:
    """``x.scatter(dim, index, src)`` / ``scatter_add`` / ``scatter_reduce``: ``src[i][j]`` lands at
    position ``index[i][j]`` along ``dim`` (pinned, in all three); every other dim of ``src`` and of
    the index lines up with ``x``'s where their sizes are equal (else they are pinned)."""
    labels = list(ctx.of(op.args[0]))
    dim = int(arg(op, "dim")) % len(labels)
    src = arg(op, "src")
    moved = [ctx.of(arg(op, "index"))] + ([ctx.of(src)] if isinstance(src, Ref) else [])
    for vec in (labels[dim], *[m[dim] for m in moved]):
        ctx.uf.pin(vec)
    for source in moved:
        for d, (a, b) in enumerate(zip(labels, source, strict=True)):
            if d != dim and len(a) == len(b):
                ctx.uf.union(a, b)
            elif d != dim:
                ctx.uf.pin(a)
                ctx.uf.pin(b)
    return [labels]


def im2col(ctx: Context, op: Op) -> list[Labels]:
    """``F.unfold`` ((N,) C, H, W) → ((N,) C·K, L): channel ``c`` becomes the ``K`` kernel taps
    ``c·K … c·K + K - 1`` (they go together); the spatial dims are pinned, the ``L`` patches hold none."""
    labels = ctx.of(op.args[0])
    for vec in labels[-2:]:
        ctx.uf.pin(vec)
    out_shape = ctx.shape(out_refs(op)[0])
    taps = out_shape[-2] // len(labels[-3])
    return [[*labels[:-3], np.repeat(labels[-3], taps), np.zeros(out_shape[-1], dtype=np.int64)]]


def col2im(ctx: Context, op: Op) -> list[Labels]:
    """``F.fold`` ((N,) C·K, L) → ((N,) C, H, W): output channel ``c`` sums the block of ``K`` taps
    ``c·K …`` (joined: they go together); the ``L`` patches are pinned."""
    labels = ctx.of(op.args[0])
    out_shape = ctx.shape(out_refs(op)[0])
    blocks = labels[-2].reshape(out_shape[-3], -1)
    ctx.uf.union(blocks, blocks[:, :1])
    ctx.uf.pin(labels[-1])
    return [[*labels[:-2], blocks[:, 0], *ctx.zeros(out_shape[-2:])]]


def grid_sample(ctx: Context, op: Op) -> list[Labels]:
    """``grid_sampler_2d/3d(x, grid)`` (a spatial transformer): each channel is sampled on its own at
    the grid's points; ``x``'s spatial dims and the grid are pinned, batch and channels pass."""
    labels, grid = ctx.of(op.args[0]), ctx.of(op.args[1])
    for vec in (*labels[2:], *grid[1:]):
        ctx.uf.pin(vec)
    ctx.uf.union(labels[0], grid[0])
    return [[labels[0], labels[1], *ctx.zeros(ctx.shape(out_refs(op)[0])[2:])]]
