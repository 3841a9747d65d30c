"""Channel rules for ops that own weights: convolution, matmuls (also bilinear), norms, PReLU, embedding."""

from __future__ import annotations

import numpy as np

from . import rules_shape as shape
from .propagate import Context, Labels, arg, out_refs, tensor_args
from .trace import Op, Ref


def _labels(ctx: Context, value: object) -> Labels | None:
    return ctx.of(value) if isinstance(value, Ref) else None


def convolution(ctx: Context, op: Op) -> list[Labels]:
    """Conv / transposed conv, grouped and depthwise.

    ``groups == 1``: input channels join the weight's in-dim. Depthwise family (one input channel per
    group): input channel ``c`` joins outputs ``c·m … c·m + m - 1`` (whole groups are removed).
    Other grouped convs: index ``i`` of every group is joined, so all groups keep equal widths. A
    transposed conv's weight is ``(in, out/groups, *k)``: its in-dim holds every input channel, and
    output ``g·(out/groups) + j`` of every group ``g`` is column ``j``.
    """
    x, w, b = op.args[0], op.args[1], op.args[2]
    transposed, groups = bool(arg(op, "transposed")), int(arg(op, "groups"))
    xl, wl = ctx.of(x), ctx.of(w)
    cin = xl[1]
    for vec in (*xl[2:], *wl[2:]):  # spatial dims; kernel dims (a bare nn.Parameter has labels there)
        ctx.uf.pin(vec)
    w_in, w_out = (wl[0], wl[1]) if transposed else (wl[1], wl[0])
    if groups == 1:
        ctx.uf.union(cin, w_in)
        out_c = w_out
    elif transposed:
        ctx.uf.union(cin, w_in)
        if len(cin) == groups:  # depthwise family: a column is one of m outputs of every input channel
            ctx.uf.pin(w_out)
            out_c = np.repeat(w_in, len(w_out))
        else:
            per_group = w_in.reshape(groups, -1)
            ctx.uf.union(per_group, per_group[:1])
            out_c = np.tile(w_out, groups)
    elif len(w_in) == 1:
        ctx.uf.union(w_out.reshape(groups, -1), cin[:, None])
        ctx.uf.pin(w_in)
        out_c = w_out
    else:
        ctx.uf.union(cin.reshape(groups, -1), w_in[None, :])
        per_group = w_out.reshape(groups, -1)
        ctx.uf.union(per_group, per_group[:1])
        out_c = w_out
    if (bl := _labels(ctx, b)) is not None:
        ctx.uf.union(bl[0], out_c)
    shape = ctx.shape(out_refs(op)[0])
    return [[xl[0], out_c, *[np.zeros(n, dtype=np.int64) for n in shape[2:]]]]


def weight_norm(ctx: Context, op: Op) -> list[Labels]:
    """``_weight_norm_interface(v, g, dim)`` → ``(w, norms)``, ``w = g · v / ‖v‖`` with the norm over
    every dim but ``dim``: w carries v's labels, ``dim`` joined with g's. The norm changes when another
    dim loses entries; ``apply_plan`` gives the pruned layer ``v = w[kept]`` and ``g = ‖v‖`` (exact)."""
    vl, gl = ctx.of(op.args[0]), ctx.of(op.args[1])
    dim = int(arg(op, "dim", 0)) % len(vl)
    if len(gl) == len(vl) and len(gl[dim]) == len(vl[dim]):
        ctx.uf.union(vl[dim], gl[dim])
    return [list(vl), list(gl)]


def mm(ctx: Context, op: Op) -> list[Labels]:
    """``mm`` / ``addmm`` / ``bmm`` / ``baddbmm``: the contracted dims join, the others pass."""
    a, b = (op.args[1], op.args[2]) if op.name in ("addmm", "baddbmm") else (op.args[0], op.args[1])
    al, bl = ctx.of(a), ctx.of(b)
    ctx.uf.union(al[-1], bl[-2])
    batch = [ctx.join([x, y]) for x, y in zip(al[:-2], bl[:-2], strict=True)]
    out = [*batch, al[-2], bl[-1]]
    if op.name in ("addmm", "baddbmm"):
        shape = ctx.shape(op.args[0])
        for vec, n, o in zip(ctx.of(op.args[0])[::-1], shape[::-1], out[::-1], strict=False):
            if n == len(o):
                ctx.uf.union(vec, o)
            else:
                ctx.uf.pin(vec)
    return [out]


def mv(ctx: Context, op: Op) -> list[Labels]:
    """``mv(M (n, m), v (m,))`` → ``(n,)``: ``m`` joins ``v``, ``n`` passes (spectral norm's ``W·v``)."""
    ml, vl = ctx.of(op.args[0]), ctx.of(op.args[1])
    ctx.uf.union(ml[1], vl[0])
    return [[ml[0]]]


def dot(ctx: Context, op: Op) -> list[Labels]:
    """``dot`` / ``vdot`` of two vectors: their entries join (a removed entry is zero in one of them,
    so the sum over the kept ones is the same); the scalar result carries no channels."""
    ctx.uf.union(ctx.of(op.args[0])[0], ctx.of(op.args[1])[0])
    return [[]]


def trilinear(ctx: Context, op: Op) -> list[Labels]:
    """``_trilinear(i1, i2, i3, expand1, expand2, expand3, sumdim)`` (``nn.Bilinear``: ``y_o = x1ᵀ W_o x2``):
    each input gets size-1 dims at its ``expand`` positions, so all line up; a dim the inputs share
    joins, the ``sumdim`` dims are contracted, the others pass to the output."""
    inputs = [ctx.of(op.args[k]) for k in range(3)]
    aligned: list[list[np.ndarray]] = []
    for labels, expanded in zip(inputs, op.args[3:6], strict=True):
        rest = iter(labels)
        rank = len(labels) + len(expanded)
        aligned.append([np.zeros(1, dtype=np.int64) if d in expanded else next(rest) for d in range(rank)])
    out = []
    for d, vectors in enumerate(zip(*aligned, strict=True)):
        shared = [v for v in vectors if len(v) > 1] or [vectors[0]]
        if len({len(v) for v in shared}) == 1:
            vec = ctx.join(shared)
        else:  # sizes that broadcast against each other: keep them whole
            for v in shared:
                ctx.uf.pin(v)
            vec = np.zeros(max(len(v) for v in shared), dtype=np.int64)
        if d not in op.args[6]:
            out.append(vec)
    return [out]


def grouped_mm(ctx: Context, op: Op) -> list[Labels]:
    """``_grouped_mm`` (mixture-of-experts FFNs): tokens ``(T, K)`` grouped by ``offs`` times experts'
    ``(E, K, N)`` gives ``(T, N)``; or ``(E, M, K)`` times ``(E, K, N)``. ``K`` joins, ``N`` passes,
    the expert dim is pinned (experts are not removed here); other layouts are kept whole. ``K`` and
    ``N`` keep a multiple of 16 bytes (4 float32, 8 bfloat16 channels): the kernel needs aligned strides."""
    a, b = op.args[0], op.args[1]
    al, bl, out_shape = ctx.of(a), ctx.of(b), ctx.shape(out_refs(op)[0])
    if len(bl) != 3 or len(al) not in (2, 3) or len(al[-1]) != len(bl[-2]):
        for ref in (a, b):
            for vec in ctx.of(ref):
                ctx.uf.pin(vec)
        return [ctx.zeros(out_shape)]
    ctx.uf.union(al[-1], bl[-2])
    ctx.uf.pin(bl[0])
    if len(al) == 3:
        ctx.uf.pin(al[0])
    itemsize = min(ctx.trace.itemsizes.get(ref.node, 4) for ref in (a, b))
    ctx.multiples += [(al[-1], 16 // itemsize), (bl[-1], 16 // itemsize)]  # the kernel's stride alignment
    out = [*al[:-1], bl[-1]]
    bias = arg(op, "bias", None)
    if isinstance(bias, Ref):
        ctx.uf.union(ctx.of(bias)[-1], bl[-1])
    return [out]


def batch_norm(ctx: Context, op: Op) -> list[Labels]:
    """Every ``*batch_norm*`` variant: weight, bias and running stats join the input's channel dim."""
    xl = ctx.of(op.args[0])
    stats = [vl[0] for value in op.args[1:5] if (vl := _labels(ctx, value)) is not None]
    if stats:  # one union of equal-length vectors (a broadcast one costs more than the work)
        ctx.uf.union(np.concatenate(stats), np.concatenate([xl[1]] * len(stats)))
    outs = out_refs(op)
    rest = [[xl[1]] if ctx.shape(o) == (len(xl[1]),) else ctx.zeros(ctx.shape(o)) for o in outs[1:]]
    return [xl, *rest]


def layer_norm(ctx: Context, op: Op) -> list[Labels]:
    """``native_layer_norm``: the normalised trailing dims join weight and bias (pinned without them)."""
    xl = ctx.of(op.args[0])
    k = len(arg(op, "normalized_shape"))
    ctx.statistics += xl[len(xl) - k :]  # mean and variance over the normalised dims
    affine = [vl for v in (arg(op, "weight"), arg(op, "bias")) if (vl := _labels(ctx, v)) is not None]
    for d in range(k):
        vec = xl[len(xl) - k + d]
        if affine:
            ctx.join([vec, *[vl[d] for vl in affine]])
        else:
            ctx.uf.pin(vec)
    outs = out_refs(op)
    return [xl, *[[*xl[:-k], *ctx.zeros((1,) * k)] for _ in outs[1:]]]


def group_norm(ctx: Context, op: Op) -> list[Labels]:
    """``native_group_norm``: index ``i`` of every group is joined so all groups keep equal sizes; with
    one channel per group (``GroupNorm(C, C)``, an instance norm) channels stay apart and whole groups go."""
    xl = ctx.of(op.args[0])
    groups = int(arg(op, "group"))
    if groups < len(xl[1]):
        ctx.statistics.append(xl[1])  # statistics over each group's channels
        per_group = xl[1].reshape(groups, -1)
        ctx.uf.union(per_group, per_group[:1])
    for value in op.args[1:3]:
        if (vl := _labels(ctx, value)) is not None:
            ctx.uf.union(vl[0], xl[1])
    return [xl, *[ctx.zeros(ctx.shape(o)) for o in out_refs(op)[1:]]]


def prelu(ctx: Context, op: Op) -> list[Labels]:
    """``_prelu_kernel(x, weight)``: the slopes broadcast against ``x`` (torch passes them viewed as
    ``(1, C, 1, …)``), so aligned dims join as in any broadcasting op; a 1-D weight is channel dim 1."""
    xl, wl = ctx.of(op.args[0]), ctx.of(op.args[1])
    if len(wl) == len(xl):
        return shape.elementwise(ctx, op)
    if len(wl) == 1 and len(xl) > 1 and len(wl[0]) == len(xl[1]):
        ctx.uf.union(wl[0], xl[1])
    else:
        for vec in wl:
            ctx.uf.pin(vec)
    return [xl]


def embedding(ctx: Context, op: Op) -> list[Labels]:
    """Rows are looked up by index: the output is the indices' dims plus the weight's feature dim."""
    wl, il = ctx.of(op.args[0]), ctx.of(tensor_args(op)[1])
    ctx.uf.pin(wl[0])
    return [[*il, wl[1]]]


def embedding_bag(ctx: Context, op: Op) -> list[Labels]:
    """``_embedding_bag(weight, indices, offsets, …)``: each bag sums, averages or takes the maximum of
    its rows feature by feature, so the output ``(bags, features)`` (and, in max mode, the argmax per
    feature) carries the weight's feature dim; the row counts and offsets carry none."""
    wl = ctx.of(op.args[0])
    ctx.uf.pin(wl[0])
    outputs = []
    for ref in out_refs(op):
        rows, *features = ctx.shape(ref)
        carries = features == [len(wl[1])]
        outputs.append([np.zeros(rows, dtype=np.int64), wl[1]] if carries else ctx.zeros(ctx.shape(ref)))
    return outputs


def cdist(ctx: Context, op: Op) -> list[Labels]:
    """``_cdist_forward(x1, x2)``: (…, P, M) and (…, R, M) → (…, P, R), distances over the ``M`` features
    (joined: a channel zero in both adds nothing); batch dims line up, P and R pass."""
    al, bl = ctx.of(op.args[0]), ctx.of(op.args[1])
    ctx.uf.union(al[-1], bl[-1])
    batch = ctx.shape(out_refs(op)[0])[:-2]
    if len(al) - 2 == len(batch) and all(len(a) == n for a, n in zip(al, batch, strict=False)):
        return [[*al[:-2], al[-2], bl[-2]]]
    return [[*ctx.zeros(batch), al[-2], bl[-2]]]


def embedding_renorm(ctx: Context, op: Op) -> list[Labels]:
    """``embedding_renorm_`` (``nn.Embedding(max_norm=…)``): rows are rescaled by their norm, to which
    zero features add nothing; the weight keeps its labels."""
    return [list(ctx.of(op.args[0]))]
