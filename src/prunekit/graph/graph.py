"""The dependency graph: groups of coupled channels found by tracing one real forward pass."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import nn

from .._checks import check_choice
from . import hf, rules  # noqa: F401  (register the Conv1D handler and the op rules)
from .attention import HEAD_MODES, couple_eager_attention, find_attention, head_hints
from .gc_pause import gc_paused
from .modules import Dims, handler_for, inherits_handler, parametrized_module, weight_norm_hooks
from .propagate import propagate
from .rules_shape import tiled_slices
from .trace import ExampleInputs, Trace, trace_model
from .unionfind import UnionFind
from .verify import Replay
from .walk import named_modules, walks_shared


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, then restore the caller's setting.

    Scoring and slicing are hundreds of small ops: a second thread gains little, and where the cores
    are shared every op can wait a scheduler time slice at an OpenMP barrier. Measured on 2 shared
    cores (load 3–5), ResNet-50 graph + plan + apply took 5.3–8.3 s on 2 threads and 0.4–1.3 s on 1.
    The traced forward is not run this way: it is the user's model at the user's thread setting
    (ResNet-18, 2 threads: 0.026 s quiet, 0.05–0.4 s beside two busy processes; 1 thread: 0.053 s and
    0.04–0.19 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Member:
    """One channel dim of a parameter or buffer: ``tensor`` (state_dict name), ``dim``, ``role``.

    ``role`` is ``"out"`` when ``module`` produces the channel (conv out-channels, norm scale) and
    ``"in"`` when it consumes it (next conv's in-channels, running statistics).
    """

    tensor: str
    dim: int
    role: str
    module: str


@dataclass(frozen=True, eq=False)
class Group:
    """Channels that must be removed together. ``channel_of[m]`` maps each index along
    ``members[m].dim`` to its channel in ``range(size)``, or ``-1`` when it belongs to no channel here.
    A pruned group keeps a multiple of ``multiple`` channels (a kernel's alignment, e.g. ``_grouped_mm``).
    ``exact``: removing channels whose weights are zero leaves the outputs unchanged; ``False`` where they
    enter a statistic over channels (LayerNorm, GroupNorm, RMSNorm's mean of squares, a mean or maximum
    over channels), which shifts when they go.
    """

    index: int
    members: tuple[Member, ...]
    channel_of: tuple[np.ndarray, ...]
    size: int
    multiple: int = 1
    exact: bool = True

    @functools.cached_property
    def in_order(self) -> tuple[bool, ...]:
        """Per member: whether index ``i`` along its dim is channel ``i`` (``channel_of`` is ``arange``)."""
        order, seen = np.arange(self.size), {}  # members holding one vector share its map: ask once
        for c in self.channel_of:
            if id(c) not in seen:
                seen[id(c)] = len(c) == self.size and bool((c == order).all())
        return tuple(seen[id(c)] for c in self.channel_of)

    def indices(self, member: int, channels: Iterable[int]) -> np.ndarray:
        """Indices along ``members[member].dim`` that belong to ``channels`` (sorted)."""
        return np.flatnonzero(self.chosen(channels)[self.channel_of[member]])

    def chosen(self, channels: Iterable[int]) -> np.ndarray:
        """``(size + 1,)`` bool, True at ``channels``; the extra last entry (False) is where −1 lands."""
        mask = np.zeros(self.size + 1, dtype=bool)
        mask[np.fromiter(channels, dtype=np.int64)] = True
        return mask

    def modules(self) -> list[str]:
        return sorted({m.module for m in self.members})

    def __repr__(self) -> str:
        names = ", ".join(f"{m.tensor}[{m.dim}]" for m in self.members[:4])
        more = f", … +{len(self.members) - 4}" if len(self.members) > 4 else ""
        return f"Group({self.index}: {self.size} channels; {names}{more})"


class DependencyGraph:
    """Groups of coupled channels of a model, built by :meth:`build` from one traced forward."""

    def __init__(
        self,
        groups: tuple[Group, ...],
        shapes: dict[str, tuple[int, ...]],
        trace: Trace,
        seconds: float,
        heads: str = "heads",
        replay: Replay | None = None,
    ) -> None:
        self.groups = groups
        self.heads = heads
        self.shapes = shapes
        self.trace = trace
        self.seconds = seconds
        self.replay = replay  # lets apply_plan check the pruned model (None: no check)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        example_inputs: ExampleInputs,
        ignore: Iterable[str] = (),
        heads: str = "heads",
    ) -> DependencyGraph:
        """Trace ``model`` on ``example_inputs`` and group its channels; the model is not changed.

        ``ignore`` names modules whose parameters keep all their channels (their channels are pinned,
        and so is everything coupled to them). ``heads`` says what attention channels are:
        ``"heads"`` (whole heads, ``head_dim`` kept) or ``"head_dim"`` (the same dims of every head).
        Raises ``UnsupportedOpError`` naming the op and module when an op without a channel rule
        touches a prunable channel.
        """
        with gc_paused(), walks_shared():  # see gc_pause.py and walk.py; no frame added (stacklevel)
            check_choice(heads, "heads", HEAD_MODES)
            start = time.perf_counter()
            modules = dict(named_modules(model))
            ignored = _check_ignore(ignore, modules) + _compiled(modules)
            trace = trace_model(model, example_inputs)
            uf, labels, members, shapes = UnionFind(), {}, [], {}
            channel_dims, tensors = _channel_dims(modules, ignored), []
            for node, (kind, name) in trace.sources.items():
                if kind in ("param", "buffer"):
                    shape = shapes[name] = trace.shapes[node]
                    owner, _, local = name.rpartition(".")
                    tensors.append((node, name, owner, shape, channel_dims(owner, local, kind, shape)))
            # fresh labels for every channel dim at once, in order; the other dims share read-only zeros
            count = sum(n for *_, shape, dims in tensors for d, n in enumerate(shape) if d in dims and n > 1)
            fresh, at = uf.fresh(count), 0
            for node, name, owner, shape, dims in tensors:
                vectors = []
                for d, n in enumerate(shape):
                    if d in dims and n > 1:
                        vectors.append(fresh[at : at + n])
                        members.append((Member(name, d, dims[d], owner), vectors[-1]))
                        at += n
                    else:
                        vectors.append(_pinned(n))
                labels[node] = vectors
            classes = {k: type(v).__name__ for k, v in modules.items()}
            attention = find_attention(trace)
            ctx = propagate(
                trace, uf, labels, classes, head_hints(trace, heads, attention), _sliced_qkv(trace)
            )
            couple_eager_attention(attention, labels, uf)
            vectors = [v for _, v in members]
            roots = uf.find(np.concatenate(vectors)) if vectors else np.zeros(0, dtype=np.int64)
            roots = _pin_unproduced(uf, roots, [m for m, _ in members], [len(v) for v in vectors])
            groups, channel_roots = _groups([m for m, _ in members], roots, [len(v) for v in vectors])
            groups = _annotated(
                groups,
                channel_roots,
                [(uf.find(v), m) for v, m in ctx.multiples],
                [uf.find(v) for v in ctx.statistics],
            )
            producers = tuple(tuple(sorted({m.module for m in g.members if m.role == "out"})) for g in groups)
            replay = Replay(example_inputs, labels, uf, channel_roots, classes, producers)
            return cls(groups, shapes, trace, time.perf_counter() - start, heads, replay)

    def __repr__(self) -> str:
        return f"DependencyGraph({len(self.groups)} groups, {len(self.trace.ops)} ops)"


@functools.lru_cache(maxsize=256)
def _pinned(size: int) -> np.ndarray:
    """``size`` pinned labels (zeros), read-only: shared by every dim of that size that holds no channel."""
    zeros = np.zeros(size, dtype=np.int64)
    zeros.flags.writeable = False
    return zeros


def _sliced_qkv(trace: Trace) -> set[tuple[int, int]]:
    """``(node, dim)`` of fused q/k/v projection outputs the model slices apart (:data:`.hf.SLICED_QKV`)."""
    nodes = {node for name, node in trace.module_outputs.items() if name.rpartition(".")[2] in hf.SLICED_QKV}
    return tiled_slices(trace, nodes) if nodes else set()


def _channel_dims(
    modules: dict[str, nn.Module], ignored: tuple[str, ...]
) -> Callable[[str, str, str, tuple[int, ...]], dict[int, str]]:
    """``dims(owner, local, kind, shape)``: the channel dims (with roles) of one parameter or buffer.

    From the owner's handler (asked once per module); none in ignored modules; a parameter of a module
    without a handler (class token, position embedding, layer scale …) has every dim longer than one,
    and so has such a module's saved floating-point buffer (a frozen BatchNorm's statistics, a fixed
    scale); the originals of a weight-normalised tensor (``weight_norm``'s g and v, also the deprecated
    hook's ``weight_g``/``weight_v``) have its dims where they are full. Integer buffers (indices,
    masks) and non-persistent ones (rebuilt by the module's constructor, such as rotary frequencies)
    keep all their entries. A subclass of a handled layer gets its handler's dims for the tensors the
    handler names and these generic dims for those it adds (a masked conv's mask, a LoRA Linear's
    factors), which the traced ops then couple.
    """
    handled: dict[str, Dims | None] = {}

    def dims(owner: str, local: str, kind: str, shape: tuple[int, ...]) -> dict[int, str]:
        if _is_ignored(owner, ignored):
            return {}
        source = _original_of(modules, owner, local)
        if source is not None:  # weight_norm's g and v: the dims of the tensor they make, where full
            full = dims(*source, "param", shape)
            return {d: role for d, role in full.items() if d < len(shape) and shape[d] > 1}
        if owner not in handled:
            handler = handler_for(modules[owner])
            handled[owner] = None if handler is None else handler.dims(modules[owner])
        named = handled[owner]
        if named is not None and (local in named or not named or not inherits_handler(modules[owner])):
            return named.get(local, {})
        if kind == "buffer" and not _saved_float(modules[owner], local):
            return {}
        return {d: "out" for d, n in enumerate(shape) if n > 1}

    return dims


def _original_of(modules: dict[str, nn.Module], owner: str, local: str) -> tuple[str, str] | None:
    """``(module, tensor name)`` of the tensor that ``owner.local`` is an original of: a parametrized
    one (``conv.parametrizations.weight.original0`` → ``("conv", "weight")``) or the weight a
    deprecated ``weight_norm`` hook computes (``conv.weight_g`` → ``("conv", "weight")``)."""
    parent = parametrized_module(f"{owner}.{local}")
    if parent is not None:
        return parent, owner.rpartition(".")[2]
    hook = next(
        (h for h in weight_norm_hooks(modules[owner]) if local in (f"{h.name}_g", f"{h.name}_v")), None
    )
    return None if hook is None else (owner, hook.name)


def _saved_float(module: nn.Module, local: str) -> bool:
    buffer = module._buffers[local]
    return buffer.is_floating_point() and local not in module._non_persistent_buffers_set


def _check_ignore(ignore: Iterable[str], modules: dict[str, nn.Module]) -> tuple[str, ...]:
    if isinstance(ignore, str):
        raise TypeError(f"ignore must be a list of module names, got the str {ignore!r}; write [{ignore!r}]")
    names = tuple(ignore)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise ValueError(
            f"ignore names modules that do not exist: {unknown}; valid names include "
            f"{[n for n in modules if n][:8]} (see model.named_modules())"
        )
    return names


def _compiled(modules: dict[str, nn.Module]) -> tuple[str, ...]:
    """The outermost TorchScript modules (``torch.jit.script`` / ``torch.jit.trace``), kept whole with a
    warning: their compiled code holds sizes (a conv's ``groups``, a stored width) that pruning cannot
    update, and their ops are recorded as their caller's."""
    found: list[str] = []
    for name, module in modules.items():
        if isinstance(module, torch.jit.ScriptModule) and not _is_ignored(name, tuple(found)):
            found.append(name)
    if found:
        where = "the model is" if found == [""] else f"{len(found)} module(s) ({', '.join(found[:4])}) are"
        warnings.warn(
            f"{where} TorchScript (torch.jit.script or torch.jit.trace): compiled code keeps the sizes it "
            "was built with, so prunekit keeps the channels it touches, and those coupled to them, whole. "
            "To prune inside, build the graph on the Python module before scripting it",
            stacklevel=3,
        )
    return tuple(found)


def _is_ignored(owner: str, ignored: tuple[str, ...]) -> bool:
    return any(owner == n or owner.startswith(n + ".") or n == "" for n in ignored)


def _pin_unproduced(uf: UnionFind, roots: np.ndarray, members: list[Member], sizes: list[int]) -> np.ndarray:
    """``roots`` with the channels no member produces (role ``"out"``) pinned, in ``uf`` too.

    Such channels carry values no weight makes, so no zeroed weight can silence them: copies an
    ``expand`` broadcasts (a one-channel map ``expand_as`` the features and concatenated, a grey image
    expanded to three channels) reach only the in-dims of the layers that read them.
    """
    produced = np.repeat(
        np.fromiter((m.role == "out" for m in members), dtype=bool, count=len(members)), sizes
    )
    made = np.zeros(len(uf), dtype=bool)  # by label: some member produces it (a lookup, not a sort)
    made[roots[produced]] = True
    unproduced = (roots != 0) & ~made[roots]
    if not unproduced.any():
        return roots
    uf.pin(roots[unproduced])
    return np.where(unproduced, 0, roots)


def _groups(
    members: list[Member], roots: np.ndarray, sizes: list[int]
) -> tuple[tuple[Group, ...], tuple[np.ndarray, ...]]:
    """Channels (union-find roots) touching the same set of members form one group; also returns each
    group's channel roots.

    ``roots`` holds every member's root labels one after another (``sizes[m]`` for member ``m``).
    Groups are ordered by the first member and position where one of their channels appears, and so are
    the channels within a group.

    Members whose labels are the same, index by index (a conv's output dim, its BatchNorm's four tensors,
    the next conv's input dim), always share their channels, so the grouping runs on the distinct label
    vectors: MobileNetV2 has 298 members (97 k labels) but 27 distinct vectors (10 k labels).
    """
    if not (roots != 0).any():
        return (), ()
    offsets = np.cumsum([0, *sizes]).tolist()
    vector_of: dict[bytes, int] = {}
    kind = [vector_of.setdefault(roots[a:b].tobytes(), len(vector_of)) for a, b in pairwise(offsets)]
    sharing: list[list[int]] = [[] for _ in vector_of]  # distinct vector → the members holding it
    for member, k in enumerate(kind):
        sharing[k].append(member)
    firsts = [held[0] for held in sharing]
    distinct = np.concatenate([roots[offsets[m] : offsets[m + 1]] for m in firsts])
    signatures, channel_roots, channel_of = _distinct_groups(distinct, [sizes[m] for m in firsts])
    groups = []
    for index, signature in enumerate(signatures):
        chosen = sorted(m for k in signature for m in sharing[k])
        map_of = {k: channel_of(k, index) for k in signature}  # shared by the members holding vector k
        maps = tuple(map_of[kind[m]] for m in chosen)
        groups.append(Group(index, tuple(members[m] for m in chosen), maps, len(channel_roots[index])))
    return tuple(groups), tuple(channel_roots)


def _distinct_groups(
    roots: np.ndarray, sizes: list[int]
) -> tuple[list[list[int]], list[np.ndarray], Callable[[int, int], np.ndarray]]:
    """:func:`_groups` over distinct label vectors (``sizes[k]`` labels for vector ``k``): each group's
    vectors, its channel roots, and ``channel_of(vector, group)``."""
    live = roots != 0
    lengths = np.asarray(sizes, dtype=np.int64)
    mem = np.repeat(np.arange(len(sizes), dtype=np.int64), lengths)
    pos = np.arange(len(roots), dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    flat, mem, pos = roots[live], mem[live], pos[live]
    # sort by (root, vector), positions ascending within (stable): keep each pair's first position
    pair = flat * len(sizes) + mem
    order = np.argsort(pair, kind="stable")
    pair = pair[order]
    first = order[np.r_[True, pair[1:] != pair[:-1]]]
    rts, mem, pos = flat[first], mem[first], pos[first]
    starts = np.flatnonzero(np.r_[True, rts[1:] != rts[:-1]])
    order = np.lexsort((pos[starts], mem[starts]))  # roots by (first vector, position)
    starts, ends = starts[order], np.r_[starts[1:], len(rts)][order]
    by_signature: dict[bytes, list[np.ndarray]] = defaultdict(list)
    runs = np.r_[np.flatnonzero(~_same_as_previous(mem, starts, ends)), len(starts)]
    for begin, stop in zip(runs[:-1].tolist(), runs[1:].tolist(), strict=True):
        by_signature[mem[starts[begin] : ends[begin]].tobytes()].append(rts[starts[begin:stop]])
    channel_roots = [np.concatenate(parts) for parts in by_signature.values()]
    signatures = [np.frombuffer(signature, dtype=np.int64).tolist() for signature in by_signature]
    return signatures, channel_roots, _channel_maps(roots, sizes, channel_roots)


def _annotated(
    groups: tuple[Group, ...],
    channel_roots: tuple[np.ndarray, ...],
    multiples: list[tuple[np.ndarray, int]],
    statistics: list[np.ndarray],
) -> tuple[Group, ...]:
    """``groups`` with ``multiple`` set where a kernel needs the kept count of their channels (roots in
    ``multiples``) to be a multiple, and ``exact`` unset where a statistic runs over them (``statistics``)."""
    if not groups or not (multiples or statistics):
        return groups
    every = np.concatenate(channel_roots)  # each root is in one group: sorted, with its group's index
    order = np.argsort(every)
    group_of = np.repeat(np.arange(len(channel_roots)), list(map(len, channel_roots)))[order]
    every = every[order]

    def hit(roots: np.ndarray) -> set[int]:
        at = np.minimum(np.searchsorted(every, roots), len(every) - 1)
        return set(group_of[at[every[at] == roots]].tolist())

    needed = dict.fromkeys(range(len(groups)), 1)
    for roots, multiple in multiples:
        for index in hit(roots):
            needed[index] = math.lcm(needed[index], multiple)
    inexact = set().union(*(hit(roots) for roots in statistics)) if statistics else set()
    return tuple(
        dataclasses.replace(g, multiple=needed[g.index], exact=g.index not in inexact)
        if needed[g.index] > 1 or g.index in inexact
        else g
        for g in groups
    )


def _same_as_previous(mem: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per root k (its members are ``mem[starts[k]:ends[k]]``): are they the same as root k − 1's?"""
    lengths = ends - starts
    same = np.zeros(len(starts), dtype=bool)
    candidates = np.flatnonzero(lengths[1:] == lengths[:-1]) + 1
    counts = lengths[candidates]
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    here = mem[np.repeat(starts[candidates], counts) + offset]
    before = mem[np.repeat(starts[candidates - 1], counts) + offset]
    differs = np.zeros(len(candidates), dtype=bool)
    differs[np.repeat(np.arange(len(candidates)), counts)[here != before]] = True
    same[candidates[~differs]] = True
    return same


def _channel_maps(
    roots: np.ndarray, sizes: list[int], channel_roots: list[np.ndarray]
) -> Callable[[int, int], np.ndarray]:
    """``channel_of(member, group)``: each index of the member → its channel in ``group``, else −1.

    One lookup table indexed by root label (group and position of every channel root) serves all
    members at once.
    """
    owner_of = np.full(int(roots.max()) + 1, -1, dtype=np.int64)
    position_of = np.zeros(len(owner_of), dtype=np.int64)
    for index, channels in enumerate(channel_roots):
        owner_of[channels] = index
        position_of[channels] = np.arange(len(channels))
    owners, positions = owner_of[roots], position_of[roots]
    offsets = np.cumsum([0, *sizes]).tolist()

    def channel_of(member: int, index: int) -> np.ndarray:
        span = slice(offsets[member], offsets[member + 1])
        return np.where(owners[span] == index, positions[span], -1)

    return channel_of
