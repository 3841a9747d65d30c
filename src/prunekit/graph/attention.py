"""Attention: the channel rule of fused scaled-dot-product attention and the head-split hints.

``F.scaled_dot_product_attention(q, k, v)`` reaches ATen as one fused op with
``q (B, Hq, L, E)``, ``k (B, Hkv, S, E)``, ``v (B, Hkv, S, Ev)`` → ``out (B, Hq, L, Ev)``. Its rule:
``q`` and ``k`` share the contracted dim ``E``; ``k`` and ``v`` share their heads and sequence;
with grouped-query attention (``Hq = g · Hkv``) kv head ``j`` serves q heads ``j·g … j·g + g - 1``,
so those channels are joined: removing a kv head removes its q heads, and groups stay equal.

Which dim carries the channels where a projection is reshaped into heads (``(B, L, H·D)`` →
``(B, L, H, D)``) is a choice, made by :func:`head_hints` before propagation: ``"heads"`` keeps the
labels on ``H`` (whole heads are removed, ``head_dim`` is kept), ``"head_dim"`` keeps them on ``D``
(the same dims are removed from every head). Rotary embeddings multiply ``D`` by constant cos/sin
tables and slice it in halves, which pins ``D``: with RoPE, ``head_dim`` is always kept.
"""

from __future__ import annotations

import math

from .propagate import Context, Labels, arg, out_refs
from .trace import Op, Ref, Trace
from .unionfind import UnionFind

SDPA = (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_cudnn_attention", "scaled_dot_product_attention",
)  # fmt: skip
HEAD_MODES = ("heads", "head_dim")
_VIEWS = ("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten")
_FOLLOW = ("clone", "contiguous", "_to_copy", "alias", "detach", "mul", "add", "sub", "neg", "cat", "slice")


def sdpa(ctx: Context, op: Op) -> list[Labels]:
    """Fused attention; ``attn_mask`` dims are pinned; without ``scale`` the dim ``E`` is pinned
    (the default scale ``1/√E`` would change when ``E`` shrinks); ``E`` of ``v`` joins ``E`` of ``q``
    when equal, since models reshape q, k and v with one ``head_dim`` attribute."""
    q, k, v = arg(op, "query"), arg(op, "key"), arg(op, "value")
    ql, kl, vl = ctx.of(q), ctx.of(k), ctx.of(v)
    mask = arg(op, "attn_mask", arg(op, "attn_bias"))
    if isinstance(mask, Ref):
        for vec in ctx.of(mask):
            ctx.uf.pin(vec)
    ctx.uf.union(ql[-1], kl[-1])
    if len(vl[-1]) == len(ql[-1]):  # models size q, k and v heads by one head_dim attribute
        ctx.uf.union(ql[-1], vl[-1])
    if arg(op, "scale") is None:
        ctx.uf.pin(ql[-1])
    ctx.uf.union(kl[-2], vl[-2])
    for a, b, c in zip(ql[:-3], kl[:-3], vl[:-3], strict=True):
        ctx.join([a, b, c] if len(a) == len(b) else [b, c])
    if len(ql) >= 3:
        kv_heads = ctx.join([kl[-3], vl[-3]])
        if len(ql[-3]) % len(kv_heads):
            raise ValueError(
                f"aten.{op.name}: {len(ql[-3])} query heads cannot share {len(kv_heads)} key/value heads"
            )
        ctx.uf.union(ql[-3].reshape(len(kv_heads), -1), kv_heads[:, None])
    out = [*ql[:-1], vl[-1]]
    rest = [ctx.zeros(ctx.shape(o)) for o in out_refs(op)[1:]]  # logsumexp … (no channels)
    return [out, *rest]


def head_hints(trace: Trace, mode: str) -> dict[int, int]:
    """``view output node → output dim`` that keeps the labels where a reshape splits heads.

    Walks back from every fused attention's ``q``, ``k``, ``v`` through transposes, ``select``/``unbind``
    of a fused qkv tensor, copies, rotary arithmetic and head-preserving views to the view that
    creates the head dim.
    """
    producer = {o.node: op for op in trace.ops for o in op.outputs if isinstance(o, Ref)}
    hints: dict[int, int] = {}
    for op in trace.ops:
        if op.name in SDPA:
            for name in ("query", "key", "value"):
                ref = arg(op, name)
                if isinstance(ref, Ref) and len(trace.shapes[ref.node]) >= 3:
                    _walk(trace, producer, ref.node, len(trace.shapes[ref.node]) - 3, mode, hints)
    return hints


def _walk(trace: Trace, producer: dict[int, Op], node: int, head: int, mode: str, hints: dict) -> None:
    """Follow ``node``'s head dim ``head`` back to the view that splits it off (iterative DFS)."""
    stack, seen = [(node, head)], set()
    while stack:
        node, head = stack.pop()
        op = producer.get(node)
        if op is None or (node, head) in seen:
            continue
        seen.add((node, head))
        shape = trace.shapes[node]
        if op.name in ("transpose", "permute", "t"):
            stack.append((op.args[0].node, _permuted_from(op, head, len(shape))))
        elif op.name in ("select", "unbind"):  # a fused qkv split: qkv[0] or qkv.unbind(0)
            removed = int(op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)) % (len(shape) + 1)
            stack.append((op.args[0].node, head if head < removed else head + 1))
        elif op.name in _VIEWS:
            source = op.args[0].node
            same = _same_dim(trace.shapes[source], shape, head)
            if same is not None:
                stack.append((source, same))
            elif head + 1 < len(shape):  # the view creates the head dim: (…, H·D) → (…, H, D)
                hints[node] = head if mode == "heads" else head + 1
        elif op.name in _FOLLOW or op.name.rstrip("_") in _FOLLOW:
            for a in op.args[0] if op.name == "cat" else op.args:
                same_rank = isinstance(a, Ref) and len(trace.shapes[a.node]) == len(shape)
                if same_rank and trace.shapes[a.node][head] == shape[head]:
                    stack.append((a.node, head))


def _permuted_from(op: Op, dim: int, rank: int) -> int:
    order = list(range(rank))
    if op.name == "permute":
        order = [int(d) % rank for d in op.args[1]]
    elif rank >= 2:
        a, b = (-1, -2) if op.name == "t" else (int(op.args[1]) % rank, int(op.args[2]) % rank)
        order[a], order[b] = order[b], order[a]
    return order[dim]


def _same_dim(in_shape: tuple[int, ...], out_shape: tuple[int, ...], dim: int) -> int | None:
    """The input dim a view leaves unchanged as output ``dim`` (same size, same elements before)."""
    before = math.prod(out_shape[:dim])
    for d, n in enumerate(in_shape):
        if n == out_shape[dim] and math.prod(in_shape[:d]) == before:
            return d
    return None


def hinted_order(sizes: list[int], hint: int | None) -> list[int]:
    """Dims to try for keeping labels in a split: the hinted one first, then largest first."""
    order = sorted(range(len(sizes)), key=lambda k: (sizes[k], k), reverse=True)
    if hint is not None:
        order.remove(hint)
        order.insert(0, hint)
    return order


def pin_math_path_scale(trace: Trace, labels: dict[int, Labels], uf: UnionFind) -> None:
    """Pin the contracted dim ``E`` of SDPA's unfused math path (``_safe_softmax`` of ``q·kᵀ``).

    There the default scale ``1/√E`` arrives as constant multipliers of ``q`` and ``k``, invisible in
    the trace: removing dims of ``E`` would keep the old scale. Walks back from the softmax through
    views to the ``bmm`` of the scores and pins its operands' contracted dims.
    """
    softmaxes = [op for op in trace.ops if op.name == "_safe_softmax" and isinstance(op.args[0], Ref)]
    producer = {o.node: op for op in trace.ops for o in op.outputs if isinstance(o, Ref)} if softmaxes else {}
    for op in softmaxes:
        source = producer.get(op.args[0].node)
        while source is not None and source.name in _VIEWS and isinstance(source.args[0], Ref):
            source = producer.get(source.args[0].node)
        if source is not None and source.name in ("bmm", "mm", "matmul"):
            a, b = source.args[0], source.args[1]
            for ref, dim in ((a, -1), (b, -2)):
                if isinstance(ref, Ref) and ref.node in labels:
                    uf.pin(labels[ref.node][dim])
