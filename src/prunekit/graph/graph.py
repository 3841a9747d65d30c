"""The dependency graph: groups of coupled channels found by tracing one real forward pass."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .._checks import check_choice
from . import hf, rules  # noqa: F401  (register the Conv1D handler and the op rules)
from .attention import HEAD_MODES, head_hints
from .modules import handler_for
from .propagate import propagate
from .trace import ExampleInputs, Trace, trace_model
from .unionfind import UnionFind


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops on one intra-op thread, then restore the caller's setting.

    Graph building, scoring and slicing are hundreds of small ops: a second thread gains little, and
    where the cores are shared every op can wait a scheduler time slice at an OpenMP barrier. Measured
    on 2 shared cores (load 3–5), ResNet-50 graph + plan + apply took 5.3–8.3 s on 2 threads and
    0.4–1.3 s on 1.
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
    """

    index: int
    members: tuple[Member, ...]
    channel_of: tuple[np.ndarray, ...]
    size: int

    def indices(self, member: int, channels: Iterable[int]) -> np.ndarray:
        """Indices along ``members[member].dim`` that belong to ``channels`` (sorted)."""
        chosen = np.isin(self.channel_of[member], np.fromiter(channels, dtype=np.int64))
        return np.flatnonzero(chosen)

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
    ) -> None:
        self.groups = groups
        self.heads = heads
        self.shapes = shapes
        self.trace = trace
        self.seconds = seconds

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
        check_choice(heads, "heads", HEAD_MODES)
        start = time.perf_counter()
        modules = dict(model.named_modules())
        ignored = _check_ignore(ignore, modules)
        with one_thread():
            trace = trace_model(model, example_inputs)
        uf, labels, members, shapes = UnionFind(), {}, [], {}
        for node, (kind, name) in trace.sources.items():
            if kind not in ("param", "buffer"):
                continue
            shapes[name] = trace.shapes[node]
            owner, _, local = name.rpartition(".")
            dims = (
                {} if _is_ignored(owner, ignored) else _channel_dims(modules[owner], local, kind, node, trace)
            )
            vectors = []
            for d, n in enumerate(trace.shapes[node]):
                if d in dims and n > 1:
                    vectors.append(uf.fresh(n))
                    members.append((Member(name, d, dims[d], owner), vectors[-1]))
                else:
                    vectors.append(np.zeros(n, dtype=np.int64))
            labels[node] = vectors
        classes = {k: type(v).__name__ for k, v in modules.items()}
        propagate(trace, uf, labels, classes, head_hints(trace, heads))
        groups = _groups([m for m, _ in members], [uf.find(v) for _, v in members])
        return cls(groups, shapes, trace, time.perf_counter() - start, heads)

    def __repr__(self) -> str:
        return f"DependencyGraph({len(self.groups)} groups, {len(self.trace.ops)} ops)"


def _channel_dims(module: nn.Module, local: str, kind: str, node: int, trace: Trace) -> dict[int, str]:
    handler = handler_for(module)
    if handler is not None:
        return handler.dims(module).get(local, {})
    if kind == "param":  # a bare parameter: class token, position embedding, layer scale …
        return {d: "out" for d, n in enumerate(trace.shapes[node]) if n > 1}
    return {}


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


def _is_ignored(owner: str, ignored: tuple[str, ...]) -> bool:
    return any(owner == n or owner.startswith(n + ".") or n == "" for n in ignored)


def _groups(members: list[Member], roots: list[np.ndarray]) -> tuple[Group, ...]:
    """Channels (union-find roots) touching the same set of members form one group.

    Groups are ordered by the first member and position where one of their channels appears, and so are
    the channels within a group.
    """
    root_of, member_of, position_of = [], [], []
    for m, r in enumerate(roots):
        unique, positions = np.unique(r, return_index=True)
        live = unique != 0
        root_of.append(unique[live])
        position_of.append(positions[live])
        member_of.append(np.full(int(live.sum()), m, dtype=np.int64))
    if not roots or not sum(len(r) for r in root_of):
        return ()
    rts, mem, pos = (np.concatenate(a) for a in (root_of, member_of, position_of))
    order = np.lexsort((mem, rts))  # by root, then member: each root's members in a run, ascending
    rts, mem, pos = rts[order], mem[order], pos[order]
    starts = np.flatnonzero(np.r_[True, rts[1:] != rts[:-1]])
    ends = np.r_[starts[1:], len(rts)]
    by_signature: dict[bytes, list[int]] = defaultdict(list)
    for k in np.lexsort((pos[starts], mem[starts])).tolist():  # roots by (first member, position)
        by_signature[mem[starts[k] : ends[k]].tobytes()].append(int(rts[starts[k]]))
    groups = []
    for index, (signature, channel_roots) in enumerate(by_signature.items()):
        order = np.asarray(channel_roots, dtype=np.int64)
        sort = np.argsort(order)
        channel_of = []
        chosen = np.frombuffer(signature, dtype=np.int64).tolist()
        for m in chosen:
            pos = np.clip(np.searchsorted(order[sort], roots[m]), 0, len(order) - 1)
            hit = order[sort][pos] == roots[m]
            channel_of.append(np.where(hit, sort[pos], -1))
        groups.append(Group(index, tuple(members[m] for m in chosen), tuple(channel_of), len(order)))
    return tuple(groups)
