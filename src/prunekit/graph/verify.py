"""Check a pruned model against its plan: run it once on the example inputs and compare every op's
output shape with the shape the plan predicts.

The channel labels say, for every traced tensor, which channel each index belongs to, so the plan
predicts every intermediate shape; the numbers an op computes with (``x / math.sqrt(self.head_dim)``,
a scale from ``q.size(-1)``) must not change. A forward that reshapes with a size it stores (a head
count, a head size, ``x.view(-1, 16 * 5 * 5)``), derives a scale from a pruned size, or takes another
path on the smaller model computes something else; this check turns that silent change (or a crash
at the user's first call) into one error at prune time that names the op and the module. Dims that hold
no channel may differ: there the values chose the size (tokens routed to an expert, found by ``nonzero``
or counted with ``.tolist()``), and pruning changes the values.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cache, partial
from itertools import zip_longest

import numpy as np
import torch
from torch import nn

from .propagate import tensor_args
from .trace import ExampleInputs, ForwardError, Op, Ref, Trace, trace_model
from .unionfind import UnionFind


@dataclass(frozen=True, eq=False)
class Replay:
    """What checking a pruned model needs from the build: the example inputs, the labels of every
    traced node with their union-find, each group's channel roots, module class names, and each
    group's producing modules (named in a fix)."""

    example_inputs: ExampleInputs
    labels: Mapping[int, list[np.ndarray]]
    uf: UnionFind
    channel_roots: tuple[np.ndarray, ...]
    modules: Mapping[str, str]
    producers: tuple[tuple[str, ...], ...]


class PrunedModelMismatchError(ValueError):
    """The pruned model does not compute what the plan predicts (see :func:`verify_pruned`)."""


def expected_shapes(
    trace: Trace,
    labels: Mapping[int, list[np.ndarray]],
    uf: UnionFind,
    channel_roots: tuple[np.ndarray, ...],
    removals: Mapping[int, tuple[int, ...]],
) -> list[tuple[int, ...]]:
    """Shape of every tensor node after ``removals`` (group → channels), indexed by node.

    Each label vector is counted once, however many nodes share it (an activation's channel dim is its
    producer's out-dim vector, passed on by every elementwise op): MobileNetV2 101 k labels, not 162 k.
    """
    dead = np.zeros(len(uf), dtype=bool)
    for index, channels in removals.items():
        dead[channel_roots[index][list(channels)]] = True
    nodes = [node for node in range(len(trace.shapes)) if node in labels]
    distinct = {id(vec): vec for node in nodes for vec in labels[node]}  # held by labels: ids stay theirs
    shapes = list(trace.shapes)
    if not distinct:
        return shapes
    vectors = list(distinct.values())
    lengths = np.fromiter(map(len, vectors), dtype=np.int64, count=len(vectors))
    removed = np.r_[0, np.cumsum(dead[uf.find(np.concatenate(vectors))])]
    ends = np.cumsum(lengths)
    kept = dict(zip(distinct, (lengths - (removed[ends] - removed[ends - lengths])).tolist(), strict=True))
    for node in nodes:
        shapes[node] = tuple([kept[id(vec)] for vec in labels[node]])
    return shapes


def verify_pruned(
    pruned: nn.Module,
    trace: Trace,
    replay: Replay,
    expected: list[tuple[int, ...]],
    original: nn.Module | None = None,
) -> None:
    """Trace ``pruned`` on the example inputs; raise :class:`PrunedModelMismatchError` if it fails, if
    it computes with a parameter of ``original`` (the unpruned model, where ``pruned`` is a copy), at the
    first op whose output shape or constants differ from ``expected`` (see :func:`expected_shapes`), as
    :func:`_compare` lines the ops up, or where a module runs other ops (:func:`_check_same_path`). Where
    the forward fails, the ops it ran are compared first: the first that went wrong is named rather than
    the one that failed."""
    modules = replay.modules
    foreign = None if original is None else dict(original.named_parameters())
    try:
        got = trace_model(pruned, replay.example_inputs, foreign, trace.shapes_only)  # eval mode, no grad
    except ForwardError as error:  # the user's forward failed on the pruned model: say where it came from
        cause = error.__cause__ or error
        if error.trace is not None:  # an op before the failure that already computed another shape
            _check_own_weights(error.trace, modules)
            try:  # is where the forward went wrong (Res2Net's split by a stored width fails a conv later)
                _compare(trace, error.trace, expected, replay, _by_module(trace, error.trace))
            except PrunedModelMismatchError as mismatch:
                raise PrunedModelMismatchError(
                    f"{mismatch} (the pruned forward then fails: {type(cause).__name__}: {cause})"
                ) from cause
        name = _failing_module(pruned, cause)
        failed = _failed_op(trace, error.trace, name)
        reaching = [] if failed is None else _reaching(failed.args, trace, expected, replay)
        raise PrunedModelMismatchError(
            f"the pruned model fails on the example inputs in {_where(name, modules)} "
            f"({type(cause).__name__}: {cause}). Its forward likely uses a size it stores or hard-codes (a "
            f"head count or head size, a split or flatten width); "
            f"{_fix(name, modules, Counter(modules.values()), reaching)}"
        ) from cause
    _check_own_weights(got, modules)
    pairs = _by_module(trace, got)
    if _compare(trace, got, expected, replay, pairs):
        _check_outputs(trace, got, expected)
    else:
        _check_same_path(trace, got, expected, modules, original, replay.example_inputs, pairs)


def _check_same_path(
    trace: Trace,
    got: Trace,
    expected: list[tuple[int, ...]],
    modules: Mapping[str, str],
    original: nn.Module | None,
    example_inputs: ExampleInputs,
    by_module: Mapping[str, tuple[list[Op], list[Op]]],
) -> None:
    """Every module of the pruned model must run the ops it ran before, in order: a forward that
    branches on sizes pruning changed (``if y.shape[1] == x.shape[1]: y = y + x``) computes something
    else. Not checked where values choose the path (``nonzero``), nor where a dim went down to one
    channel (ATen decomposes other ways, contiguity changes). A module that differs is compared once
    more with a second run of ``original`` (a cache filled or weights rescaled on the first call, as
    LeViT and RWKV do, is a path of the first call only). Without ``original`` (``inplace``) that run is
    needed only where the first recording was real: a shape-only recording puts back the module
    attributes (and the dicts and lists they hold) the forward changed, and a forward that changes them
    is recorded for real, so each shape-only run is a first call. After a real recording the difference
    is a warning: it cannot be told from a first-call path. ``by_module``: :func:`_by_module` of
    ``trace`` and ``got``."""
    differ = {
        name: (before, after)
        for name, (before, after) in by_module.items()
        if [op.func for op in before] != [op.func for op in after]
    }
    if not differ or any(op.name in _DATA_DEPENDENT for op in trace.ops):
        return
    if any(_shrinks_to_one(expected[node], trace.shapes[node]) for node in range(len(trace.shapes))):
        return
    if original is not None:
        again = _by_module(trace_model(original, example_inputs, shapes_only=trace.shapes_only), got)
        pairs = {name: again.get(name, ([], [])) for name in differ}  # a module the second run skips too
        differ = {
            name: (b, a) for name, (b, a) in pairs.items() if [o.func for o in b] != [o.func for o in a]
        }
    elif not trace.shapes_only:
        names = ", ".join(_where(name, modules) for name in list(differ)[:4])
        warnings.warn(
            f"the pruned model runs other ops than the traced original in {names}: a forward that branches "
            "on a size pruning changed, or a path the original takes on its first call only (a cache it "
            "fills). Pruned in place, the original cannot be run again to tell which; prune a copy "
            "(inplace=False) to have it checked",
            stacklevel=4,
        )
        return
    for name, (before, after) in differ.items():
        index, (old, new) = next(
            (i, pair)
            for i, pair in enumerate(zip_longest(before, after))
            if None in pair or pair[0].func != pair[1].func
        )
        ran = "nothing" if new is None else f"aten.{new.func.__name__}"
        was = "nothing" if old is None else f"aten.{old.func.__name__}"
        raise PrunedModelMismatchError(
            f"the pruned model takes another path in {_where(name, modules)}: its op {index} is {ran} where "
            f"the original ran {was}. The forward likely branches on a size that pruning changed (such as "
            "`if y.shape[1] == x.shape[1]: y = y + x` once two widths became equal); the model passed to "
            "apply_plan is unchanged (unless inplace=True). Fix: keep the layers whose widths it compares "
            "whole with ignore=[...], or choose other channel counts (round_to, per-module ratios)"
        )


def _check_own_weights(got: Trace, modules: Mapping[str, str]) -> None:
    """Refuse a pruned copy whose forward computes with the original model's tensors (a lambda or closure
    made in ``__init__`` over a submodule: ``copy.deepcopy`` keeps it pointing at the original)."""
    foreign = {node: name for node, (kind, name) in got.sources.items() if kind == "foreign"}
    if not foreign:  # pruned in place, or the forward reached no tensor of the original
        return
    for op in got.ops:
        used = next((a.node for a in tensor_args(op) if a.node in foreign), None)
        if used is not None:
            raise PrunedModelMismatchError(
                f"the pruned model computes with the original model's {foreign[used]!r} (aten."
                f"{op.func.__name__} in {_where(op.module, modules)}): its forward reaches that layer "
                "through a reference the copy does not follow, such as a lambda or closure over a submodule "
                "made in __init__, so it would compute with the unpruned weights. The model passed to "
                "apply_plan is unchanged. Fix: pass inplace=True (the closure then reaches the pruned "
                "layer), or call the submodule through self in the forward"
            )


def _check_outputs(trace: Trace, got: Trace, expected: list[tuple[int, ...]]) -> None:
    """Where sizes that hold no channel changed inside the forward (tokens per expert), the model's
    outputs must still have the shapes the plan predicts: a size computed from a stored number (a
    sequence length) would change them."""
    want = [expected[node] for node in trace.outputs]
    have = [got.shapes[node] for node in got.outputs]
    if want != have:
        raise PrunedModelMismatchError(
            f"the pruned model's outputs have shapes {have}, the plan predicts {want}: sizes that hold no "
            "channel (token or position counts) changed inside the forward, and not only where values choose "
            "them (tokens routed to an expert). The forward likely computes a length from a size it stores; "
            "the model passed to apply_plan is unchanged (unless inplace=True). Fix: keep the module that "
            "stores it out of pruning with ignore=[...], or check the pruned model yourself and pass "
            "verify=False"
        )


def _compare(
    trace: Trace,
    got: Trace,
    expected: list[tuple[int, ...]],
    replay: Replay,
    by_module: Mapping[str, tuple[list[Op], list[Op]]],
) -> bool:
    """Raise :class:`PrunedModelMismatchError` at the first op of ``got`` (the pruned model's trace,
    possibly cut short by a failure) whose shape or constants differ from ``trace``'s as the plan
    predicts; return whether some op differed only in dims that hold no channel (see
    :func:`_only_positions_differ`). After a module's ops stop lining up (a decomposition that depends on
    sizes, or a dim cut to one), the ops matched by function are still compared: constants always, shapes
    where rank and the lack of size-1 dims leave no other decomposition (a head count stored stale after
    another dim of the module went down to one channel). ``by_module``: :func:`_by_module` of ``trace``
    and ``got``."""
    modules, classes = replay.modules, Counter(replay.modules.values())
    tolerated = False
    for name, (before, after) in by_module.items():
        where, fix = partial(_where, name, modules), partial(_fix, name, modules, classes)  # on error only
        aligned = len(before)
        for index, (old, new) in enumerate(zip(before, after, strict=False)):
            if old.func != new.func:  # ATen decompositions depend on sizes (a Linear to one feature,
                aligned = index  # a matmul over one head): the rest is compared as below
                break
            want, have = _first_shape(old, expected), _first_shape(new, got.shapes)
            if want != have:
                if not _only_positions_differ(old, want, have, replay):
                    raise _shape_error(old, new, f"op {index} of {where()}", trace, got, expected, replay)
                tolerated = True
            _check_constants(old, new, trace, got, index, where, fix)
            if _shrinks_to_one(want, _first_shape(old, trace.shapes)):
                aligned = index + 1  # ops reading size-1 dims take other decompositions (einsum
                break  # squeezes them): the rest is compared as below
        if aligned >= min(len(before), len(after)):  # one side has no ops left: nothing to line up
            continue
        rest = SequenceMatcher(
            None, [o.func for o in before[aligned:]], [o.func for o in after[aligned:]], False
        )
        for i, j, size in rest.get_matching_blocks():
            for k in range(size):
                old, new = before[aligned + i + k], after[aligned + j + k]
                _check_constants(old, new, trace, got, aligned + i + k, where, fix)
                want, have = _first_shape(old, expected), _first_shape(new, got.shapes)
                differ = want and have and want != have and len(want) == len(have) and 1 not in want
                if differ:
                    if not _only_positions_differ(old, want, have, replay):
                        op = f"op {aligned + i + k} of {where()}"
                        raise _shape_error(old, new, op, trace, got, expected, replay)
                    tolerated = True
    return tolerated


def _shape_error(
    old: Op, new: Op, op: str, trace: Trace, got: Trace, expected: list[tuple[int, ...]], replay: Replay
) -> PrunedModelMismatchError:
    """The error for ``new`` (the pruned model's ``old``) giving another shape than the plan predicts."""
    want, have = _first_shape(old, expected), _first_shape(new, got.shapes)
    modules = replay.modules
    fix = _fix(old.module, modules, Counter(modules.values()), _reaching(old.args, trace, expected, replay))
    return PrunedModelMismatchError(
        f"the pruned model does not compute what the plan predicts: {op}, aten.{new.func.__name__}, gives "
        f"shape {have}, the plan predicts {want}. The forward likely reshapes or splits with a size it "
        f"stores (a head count or head size, a split width) that was not updated; {fix}"
    )


_DATA_DEPENDENT = frozenset(("nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive"))


def _only_positions_differ(
    old: Op, want: tuple[int, ...] | None, have: tuple[int, ...] | None, replay: Replay
) -> bool:
    """True where every dim whose size differs holds no channel (tokens, positions): a size the plan
    does not change, so the values chose it (tokens per expert found by ``nonzero`` or read with
    ``.tolist()``, which the trace does not see), and a pruned model may choose another."""
    ref = next((o for o in old.outputs if isinstance(o, Ref)), None)
    if ref is None or want is None or have is None or len(want) != len(have) or ref.node not in replay.labels:
        return False
    vectors = replay.labels[ref.node]
    differ = [d for d, (a, b) in enumerate(zip(want, have, strict=True)) if a != b]
    return bool(differ) and not any(replay.uf.find(vectors[d]).any() for d in differ)


def _failed_op(trace: Trace, partial_trace: Trace | None, name: str) -> Op | None:
    """The op of ``trace`` that the pruned forward failed in: the next op of module ``name`` after those
    the pruned model's cut-short trace recorded for it."""
    if partial_trace is None:
        return None
    done = sum(op.module == name for op in partial_trace.ops)
    ops = [op for op in trace.ops if op.module == name]
    return ops[done] if done < len(ops) else None


def _reaching(args: tuple, trace: Trace, expected: list[tuple[int, ...]], replay: Replay) -> list[str]:
    """Modules producing the pruned channels of the tensors among ``args`` (a pruned dim of each)."""
    groups = {}
    for index, roots in enumerate(replay.channel_roots):
        groups.update(dict.fromkeys(roots.tolist(), index))
    found: set[str] = set()
    for ref in (a for value in args for a in (value if isinstance(value, (list, tuple)) else (value,))):
        if not isinstance(ref, Ref) or ref.node not in replay.labels:
            continue
        for vec, was, now in zip(
            replay.labels[ref.node], trace.shapes[ref.node], expected[ref.node], strict=False
        ):
            if was != now:
                for root in np.unique(replay.uf.find(vec)).tolist():
                    if root in groups and groups[root] < len(replay.producers):
                        found.update(replay.producers[groups[root]])
    return sorted(found)


def _check_constants(
    old: Op, new: Op, trace: Trace, got: Trace, index: int, where: Callable[[], str], fix: Callable[[], str]
) -> None:
    """``new`` (op ``index`` of the module ``where()`` names) must compute with ``old``'s constants."""
    if (was := _constants(old, trace)) != (now := _constants(new, got)):
        raise PrunedModelMismatchError(
            f"the pruned model does not compute what the original did on the kept channels: op {index} of "
            f"{where()}, aten.{new.func.__name__}, computes with {now} where the original used {was}. The "
            "forward likely derives a scale from a size that pruning changed (1/sqrt(head_dim) when "
            f"head_dim shrinks); {fix()}"
        )


def _failing_module(model: nn.Module, error: BaseException) -> str:
    """Name of the innermost module of ``model`` whose code is on ``error``'s traceback."""
    names = {id(module): name for name, module in model.named_modules()}
    found, frame = "", error.__traceback__
    while frame is not None:
        found = names.get(id(frame.tb_frame.f_locals.get("self")), found)
        frame = frame.tb_next
    return found


def _where(name: str, modules: Mapping[str, str]) -> str:
    return f"module {name!r} ({modules.get(name, '?')})" if name else "the model's own forward"


def _fix(name: str, modules: Mapping[str, str], classes: Counter[str], reaching: Sequence[str] = ()) -> str:
    """How to get past the error: where known, an ``ignore`` list of the layers whose pruned channels
    reach the op (``reaching``); where other modules share the failing module's class (``classes``:
    module class name → count) and so its forward, a list that keeps them all whole."""
    kind = modules.get(name)
    count = classes[kind] if name and kind is not None else 0
    every = (
        f" (the model has {count} {kind} modules; ignore=[n for n, m in model.named_modules() if "
        f"type(m).__name__ == {kind!r}] keeps all of them whole)"
        if count > 1
        else ""
    )
    keep = (
        f"keep the layers whose channels reach it whole with ignore={list(reaching)[:6]!r}, or "
        if reaching
        else ""
    )
    return (
        f"the model passed to apply_plan is unchanged (unless inplace=True). Fix: {keep}keep that module out "
        f"of pruning with ignore=[...]{every}, try heads='heads' or heads='head_dim', or set the attribute "
        "after pruning and pass verify=False"
    )


def _by_module(trace: Trace, got: Trace) -> dict[str, tuple[list[Op], list[Op]]]:
    """Ops of both traces grouped by the module running them, in order."""
    pairs: dict[str, tuple[list[Op], list[Op]]] = {}
    for side, ops in enumerate((trace.ops, got.ops)):
        for op in ops:
            pairs.setdefault(op.module, ([], []))[side].append(op)
    return pairs


def _shrinks_to_one(want: tuple[int, ...] | None, was: tuple[int, ...] | None) -> bool:
    return want is not None and was is not None and any(w == 1 < v for w, v in zip(want, was, strict=False))


def _first_shape(op: Op, shapes: list[tuple[int, ...]]) -> tuple[int, ...] | None:
    """Shape of the first tensor output (rules label later ones, e.g. saved statistics, only roughly)."""
    for output in op.outputs:
        if type(output) is Ref:
            return shapes[output.node]
    return None


_ARITHMETIC = frozenset(("mul", "div", "add", "sub", "rsub", "pow", "true_divide", "full", "fill", "clamp"))


def _constants(op: Op, trace: Trace) -> list[float]:
    """The numbers ``op`` computes with: float arguments (not NaN), integer ones of arithmetic ops
    (integer sizes of views and splits change with pruning by design) and one-element constant tensors."""
    arithmetic = _is_arithmetic(op.func)
    scalars, found = trace.scalars, []
    for values in (op.args, op.kwargs.values()) if op.kwargs else (op.args,):
        for value in values:
            if type(value) is Ref:
                if value.node in scalars:
                    found.append(scalars[value.node])
            elif (isinstance(value, float) and value == value) or (isinstance(value, int) and arithmetic):
                found.append(value)
    return found


@cache
def _is_arithmetic(func: torch._ops.OpOverload) -> bool:
    return func.overloadpacket.__name__.rstrip("_") in _ARITHMETIC
