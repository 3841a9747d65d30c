"""Attention: the channel rule of fused scaled-dot-product attention, the head-split hints, and the
coupling of attention written out as ``softmax(q·kᵀ)·v`` (eager attention).

``F.scaled_dot_product_attention(q, k, v)`` reaches ATen as one fused op with
``q (B, Hq, L, E)``, ``k (B, Hkv, S, E)``, ``v (B, Hkv, S, Ev)`` → ``out (B, Hq, L, Ev)``. Its rule:
``q`` and ``k`` share the contracted dim ``E``; ``k`` and ``v`` share their heads and sequence;
with grouped-query attention (``Hq = g · Hkv``) kv head ``j`` serves q heads ``j·g … j·g + g - 1``,
so those channels are joined: removing a kv head removes its q heads, and groups stay equal. With one
kv head (multi-query) every q head may go on its own; k/v expanded from one head follow the q heads.

Which dim carries the channels where a projection is reshaped into heads (``(B, L, H·D)`` →
``(B, L, H, D)``) is a choice, made by :func:`head_hints` before propagation: ``"heads"`` keeps the
labels on ``H`` (whole heads are removed, ``head_dim`` is kept), ``"head_dim"`` keeps them on ``D``
(the same dims are removed from every head). Rotary embeddings multiply ``D`` by constant cos/sin
tables and slice it in halves, which pins ``D``: with RoPE, ``head_dim`` is always kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
_FOLLOW += ("expand",)  # repeat_kv
_SPLITS = ("split", "split_with_sizes", "unsafe_split")


def sdpa(ctx: Context, op: Op) -> list[Labels]:
    """Fused attention. The positions ``L`` and ``S`` are pinned (a zeroed key still takes softmax
    weight, a zeroed query still averages ``v``). ``attn_mask`` is added to the scores
    ``(B, Hq, L, S)``: its dims join theirs where equal, broadcast ones are pinned (T5's learned
    position bias joins the heads). Without ``scale`` the dim ``E`` is pinned (the default scale
    ``1/√E`` would change when ``E`` shrinks). ``E`` of ``v`` joins ``E`` of ``q`` when equal, since
    models reshape q, k and v with one ``head_dim`` attribute."""
    q, k, v = arg(op, "query"), arg(op, "key"), arg(op, "value")
    ql, kl, vl = ctx.of(q), ctx.of(k), ctx.of(v)
    mask = arg(op, "attn_mask", arg(op, "attn_bias"))
    if isinstance(mask, Ref):
        scores = [*ql[:-1], kl[-2]]
        for vec, dim in zip(ctx.of(mask)[::-1], scores[::-1], strict=False):
            if len(vec) == len(dim):
                ctx.uf.union(vec, dim)
            else:
                ctx.uf.pin(vec)
    ctx.uf.union(ql[-1], kl[-1])
    if len(vl[-1]) == len(ql[-1]):  # models size q, k and v heads by one head_dim attribute
        ctx.uf.union(ql[-1], vl[-1])
    if arg(op, "scale") is None:
        ctx.uf.pin(ql[-1])
    ctx.uf.union(kl[-2], vl[-2])
    ctx.uf.pin(kl[-2])  # a key is softmax-normalised with the others: a zeroed one still takes weight,
    ctx.uf.pin(ql[-2])  # and a zeroed query still averages v: positions are not channels (learned latents)
    for a, b, c in zip(ql[:-3], kl[:-3], vl[:-3], strict=True):
        ctx.join([a, b, c] if len(a) == len(b) else [b, c])
    if len(ql) >= 3:
        kv_heads = ctx.join([kl[-3], vl[-3]])
        if len(ql[-3]) % len(kv_heads):
            raise ValueError(
                f"aten.{op.name}: {len(ql[-3])} query heads cannot share {len(kv_heads)} key/value heads"
            )
        if len(kv_heads) > 1:  # one kv head (multi-query): every q head may go on its own
            ctx.uf.union(ql[-3].reshape(len(kv_heads), -1), kv_heads[:, None])
    out = [*ql[:-1], vl[-1]]
    rest = [ctx.zeros(ctx.shape(o)) for o in out_refs(op)[1:]]  # logsumexp … (no channels)
    return [out, *rest]


@dataclass(frozen=True)
class AttentionSites:
    """Where a trace computes attention, found once per graph: the op producing every node, and each
    eager ``(scores bmm, weighted-sum bmm or None, softmax)``."""

    producer: dict[int, Op]
    eager: list[tuple[Op, Op | None, Op]]


def find_attention(trace: Trace) -> AttentionSites:
    producer = {o.node: op for op in trace.ops for o in op.outputs if isinstance(o, Ref)}
    return AttentionSites(producer, _eager_attention(trace, producer))


def head_hints(trace: Trace, mode: str, sites: AttentionSites) -> dict[int, int]:
    """``view output node → output dim`` that keeps the labels where a reshape splits heads.

    Starts from the ``q``, ``k``, ``v`` of every fused attention and of every eager one (the ``bmm``
    of ``q·kᵀ`` feeding a softmax, and the ``bmm`` of the softmax output with ``v``), and walks back
    through transposes, ``select``/``unbind`` of a fused qkv tensor, copies, rotary arithmetic (also
    written as ``unbind`` into halves and ``stack``),
    ``repeat_kv``'s expand and head-preserving views to the view that creates the head dim.
    """
    producer = sites.producer
    starts = []
    for op in trace.ops:
        if op.name in SDPA:
            starts += [ref for name in ("query", "key", "value") if isinstance(ref := arg(op, name), Ref)]
    for scores, weighted, _ in sites.eager:
        operands = (*_operands(scores), weighted.args[1] if weighted else None)
        starts += [a for a in operands if isinstance(a, Ref)]
    hints: dict[int, int] = {}
    for ref in starts:
        found = _heads_of(trace, producer, ref.node)
        if found is not None:
            _walk(trace, producer, *found, mode, hints)
    return hints


def _heads_of(trace: Trace, producer: dict[int, Op], node: int) -> tuple[int, int] | None:
    """``(node, head dim)``: dim ``-3`` of an attention operand ``(…, H, L, D)``; for a matmul's
    ``(B·H, L, D)`` operand, the last dim of the view it merged batch and heads from (einsum's views
    carry extra size-1 dims: ``(B, H, L, D, 1)`` → ``(B·H, L, D)``), else its dim 0 (fairseq folds
    heads into the batch with a transpose: the walk follows it)."""
    shape, start = trace.shapes[node], node
    if len(shape) != 3:
        return (node, len(shape) - 3) if len(shape) > 3 else None
    while (op := producer.get(node)) is not None and isinstance(op.args[0], Ref):
        if op.name not in (*_VIEWS, "expand", "clone", "contiguous"):
            break
        source = trace.shapes[op.args[0].node]
        node = op.args[0].node
        if len(source) > 3:
            merged = [d for d in range(len(source)) if math.prod(source[: d + 1]) <= shape[0]]
            inner = [d for d in merged if d > 0]  # the batch comes first; one head (or batch 1) is size 1
            head = max((d for d in inner if source[d] > 1), default=max(inner, default=0))
            if math.prod(source[: len(merged)]) == shape[0] and head > 0:
                return node, head
            break
    return start, 0


def _eager_attention(trace: Trace, producer: dict[int, Op]) -> list[tuple[Op, Op | None, Op]]:
    """``(scores bmm, weighted-sum bmm or None, softmax)`` of attention written as matmul → softmax →
    matmul (also SDPA's unfused math path)."""
    found: dict[int, tuple[Op, Op]] = {}  # softmax output node → (the bmm of its scores, the softmax)
    for op in trace.ops:
        if op.name in _SOFTMAX and isinstance(op.args[0], Ref):
            scores = _back_to(producer, op.args[0].node, _SCORE_OPS)
            if scores is not None:
                found[op.outputs[0].node] = (scores, op)
    weighted: dict[int, Op] = {}
    for op in trace.ops:
        if op.name in ("bmm", "mm") and isinstance(op.args[0], Ref):
            weights = _back_to(producer, op.args[0].node, _WEIGHT_OPS, targets=found)
            if weights is not None:
                weighted[weights] = op
    return [(scores, weighted.get(node), softmax) for node, (scores, softmax) in found.items()]


_SOFTMAX = ("_softmax", "_safe_softmax", "softmax")
_SCORE_OPS = (*_VIEWS, "expand", "clone", "contiguous", "_to_copy", "mul", "div", "add", "sub", "masked_fill")
_SCORE_OPS += ("where", "tanh", "permute", "transpose")  # einsum permutes its bmm's output
_MATMULS = ("bmm", "mm", "baddbmm")  # BLOOM adds its ALiBi bias in baddbmm(alibi, q, kᵀ)
_WEIGHT_OPS = (*_VIEWS, "expand", "clone", "contiguous", "_to_copy", "dropout", "native_dropout", "mul")
_WEIGHT_OPS += ("permute", "transpose")


def _back_to(producer: dict[int, Op], node: int, through: tuple[str, ...], targets: dict | None = None):  # type: ignore[no-untyped-def]
    """Walk back from ``node`` through ``through`` ops: the ``bmm`` reached (``targets is None``), or
    the node of ``targets`` reached; ``None`` otherwise. An op's first tensor argument is followed
    first, its others where that finds nothing (GPT-Neo's ``where(causal_mask, scores, min)``)."""
    stack, steps = [node], 0
    while stack and steps < 64:  # attention chains are short; this bounds a walk that finds none
        node, steps = stack.pop(), steps + 1
        if targets is not None and node in targets:
            return node
        op = producer.get(node)
        if op is None:
            continue
        if targets is None and op.name in _MATMULS:
            return op
        if op.name.rstrip("_") in through:
            stack += reversed([a.node for a in op.args if isinstance(a, Ref)])
    return None


def _operands(op: Op) -> tuple[object, object]:
    """``(a, b)`` of the product ``a @ b`` an op computes (``baddbmm`` takes them after its bias)."""
    return (op.args[1], op.args[2]) if op.name == "baddbmm" else (op.args[0], op.args[1])


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
        elif op.name in _SPLITS:  # GPT-NeoX: (B, L, H, 3·D).chunk(3, -1)
            dim = int(arg(op, "dim", 0)) % len(shape)
            if dim != head:
                stack.append((op.args[0].node, head))
        elif op.name in ("view_as_complex", "view_as_real"):  # Meta Llama's rotary: dims before the pair
            stack.append((op.args[0].node, head))
        elif op.name == "stack":  # llama2.c's rotary: stack([re, im], -1) over (…, H, D/2) halves
            dim = int(arg(op, "dim", 0)) % len(shape)
            if dim != head:
                stack.extend(
                    (a.node, head if head < dim else head - 1) for a in op.args[0] if isinstance(a, Ref)
                )
        elif op.name in ("select", "unbind"):  # a fused qkv split: qkv[0] or qkv.unbind(0)
            removed = int(op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)) % (len(shape) + 1)
            stack.append((op.args[0].node, head if head < removed else head + 1))
        elif op.name in _VIEWS:
            source = op.args[0].node
            same = _same_dim(trace.shapes[source], shape, head)
            if same is not None:
                stack.append((source, same))
                if same > 0 and trace.shapes[source][same - 1] == 1:  # repeat_kv of one kv head:
                    stack.append((source, same - 1))  # (B, 1, g, S, D) → (B, g, S, D), its head is the 1
            elif (merged := _merged_from(trace.shapes[source], shape, head)) is not None:
                stack.append((source, merged))  # repeat_kv: (B, Hkv, g, S, D) → (B, Hkv·g, S, D)
            elif head + 1 < len(shape):  # the view creates the head dim: (…, H·D) → (…, H, D), or
                hints[node] = head if mode == "heads" else len(shape) - 1  # BLOOM's (…, H, 3, D)
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


def _merged_from(in_shape: tuple[int, ...], out_shape: tuple[int, ...], dim: int) -> int | None:
    """The outer input dim of the dims a view merges into output ``dim`` (same elements before)."""
    before = math.prod(out_shape[:dim])
    for d in range(len(in_shape) - 1):
        if math.prod(in_shape[:d]) == before and out_shape[dim] % in_shape[d] == 0 and in_shape[d] > 1:
            size = in_shape[d]
            for n in in_shape[d + 1 :]:
                size *= n
                if size >= out_shape[dim]:
                    break
            return d if size == out_shape[dim] else None
    return None


def hinted_order(sizes: list[int], hint: int | None) -> list[int]:
    """Dims to try for keeping labels in a split: the hinted one first, then largest first."""
    order = sorted(range(len(sizes)), key=lambda k: (sizes[k], k), reverse=True)
    if hint is not None:
        order.remove(hint)
        order.insert(0, hint)
    return order


def couple_eager_attention(sites: AttentionSites, labels: dict[int, Labels], uf: UnionFind) -> None:
    """Channel coupling of attention written as ``softmax(q·kᵀ)·v`` that the per-op rules cannot see.

    Joins the head size of ``v`` to that of ``q`` where equal (models size q, k and v heads by one
    ``head_dim`` attribute, as in :func:`sdpa`), pins the query positions (as :func:`sdpa` does; the
    softmax pins the key positions), and pins the contracted dim of SDPA's unfused math
    path (``_safe_softmax``): its default scale ``1/√E`` arrives as constants invisible in the trace.
    """
    for scores, weighted, softmax in sites.eager:
        q, k = (labels.get(a.node) if isinstance(a, Ref) else None for a in _operands(scores))
        if q is not None and len(q) >= 2:
            uf.pin(q[-2])  # query positions (learned latents): a zeroed query still averages v
        if softmax.name == "_safe_softmax":
            for vectors, dim in ((q, -1), (k, -2)):
                if vectors is not None:
                    uf.pin(vectors[dim])
        v = labels.get(weighted.args[1].node) if weighted and isinstance(weighted.args[1], Ref) else None
        if q is not None and v is not None and len(q[-1]) == len(v[-1]):
            uf.union(q[-1], v[-1])
