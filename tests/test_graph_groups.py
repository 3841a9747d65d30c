"""Grouping coupled channels: the vectorised ``_groups`` (which works on distinct label vectors) against a
one-root-at-a-time reference, on random members that share, permute, repeat and drop labels."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.graph.graph import Member, _groups


def _reference(vectors: list[np.ndarray]) -> list[tuple[list[int], list[int], list[list[int]]]]:
    """Per group, in order: its members, its channel roots, and each member's index → channel (or −1).

    A root's members are those holding it; roots holding the same members form a group. Roots are
    ordered by the first member holding them, then their first position there; groups by their first root.
    """
    holders: dict[int, set[int]] = {}
    first: dict[int, tuple[int, int]] = {}
    for m, vector in enumerate(vectors):
        for p, root in enumerate(vector.tolist()):
            if root:
                holders.setdefault(root, set()).add(m)
                first.setdefault(root, (m, p))
    by_members: dict[tuple[int, ...], list[int]] = {}
    for root in sorted(holders, key=first.__getitem__):
        by_members.setdefault(tuple(sorted(holders[root])), []).append(root)
    return [
        (list(members), roots, [[roots.index(r) if r in roots else -1 for r in vectors[m]] for m in members])
        for members, roots in by_members.items()
    ]


@st.composite
def _members(draw: st.DrawFn) -> list[np.ndarray]:
    """Label vectors as a traced model gives them: a few base vectors (a conv's output channels), held
    as is by several members (its BatchNorm), permuted, concatenated, repeated or partly pinned (0)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bases = [rng.choice(np.arange(1, 60), size=draw(st.integers(1, 6)), replace=False) for _ in range(3)]
    vectors = []
    for _ in range(draw(st.integers(1, 12))):
        base = bases[draw(st.integers(0, len(bases) - 1))]
        how = draw(st.sampled_from(["same", "same", "permuted", "concat", "repeat", "pinned"]))
        if how == "permuted":
            base = rng.permutation(base)
        elif how == "concat":
            base = np.concatenate([base, bases[draw(st.integers(0, len(bases) - 1))]])
        elif how == "repeat":
            base = np.repeat(base, 2)
        elif how == "pinned":
            base = np.where(rng.random(len(base)) < 0.5, 0, base)
        vectors.append(base.astype(np.int64))
    return vectors


@settings(max_examples=300, deadline=None)
@given(_members())
def test_groups_match_a_one_root_at_a_time_reference(vectors: list[np.ndarray]) -> None:
    members = [Member(f"layer{m}.weight", 0, "out", f"layer{m}") for m in range(len(vectors))]
    groups, channel_roots = _groups(members, np.concatenate(vectors), [len(v) for v in vectors])
    want = _reference(vectors)
    assert len(groups) == len(want)
    for index, (group, roots, (held, want_roots, want_maps)) in enumerate(
        zip(groups, channel_roots, want, strict=True)
    ):
        assert group.index == index and group.size == len(want_roots)
        assert group.members == tuple(members[m] for m in held)
        assert roots.tolist() == want_roots
        assert [c.tolist() for c in group.channel_of] == want_maps


def test_no_live_channel_gives_no_group() -> None:
    members = [Member("a.weight", 0, "out", "a")]
    assert _groups(members, np.zeros(3, dtype=np.int64), [3]) == ((), ())
    assert _groups([], np.zeros(0, dtype=np.int64), []) == ((), ())
