"""The vectorised union-find behind channel coupling: batches with conflicting links, pinning, broadcast."""

from __future__ import annotations

import numpy as np
import pytest

from prunekit.graph import unionfind
from prunekit.graph.unionfind import UnionFind


def _partition(uf: UnionFind, labels: np.ndarray) -> set[frozenset[int]]:
    roots = uf.find(labels)
    return {frozenset(labels[roots == r].tolist()) for r in np.unique(roots)}


def test_a_root_linked_twice_in_one_batch_still_joins_everything() -> None:
    uf = UnionFind()
    labels = uf.fresh(4)  # 1, 2, 3, 4
    uf.union(np.array([4, 4, 3]), np.array([1, 2, 2]))  # 4 would be linked to 1 and to 2 in one write
    assert _partition(uf, labels) == {frozenset({1, 2, 3, 4})}


def test_broadcast_union_and_pin() -> None:
    uf = UnionFind()
    a, b, c = uf.fresh(3), uf.fresh(3), uf.fresh(3)
    uf.union(np.stack([a, b]), c)  # (2, 3) with (3,): index i of a, b and c together
    assert _partition(uf, np.concatenate([a, b, c])) == {
        frozenset({int(a[i]), int(b[i]), int(c[i])}) for i in range(3)
    }
    uf.pin(b[:1])
    assert uf.find(a).tolist()[0] == 0 and (uf.find(c)[1:] != 0).all()


@pytest.mark.parametrize("batch", [5, 16384])  # queues joined every few unions, or only at the find
def test_random_batches_match_a_one_pair_at_a_time_reference(
    batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unionfind, "_BATCH", batch)
    rng = np.random.default_rng(0)
    uf = UnionFind()
    labels = uf.fresh(200)
    parent = {int(x): int(x) for x in labels}

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for _ in range(40):
        a, b = rng.choice(labels, 12), rng.choice(labels, 12)
        uf.union(a, b)
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            parent[max(root(x), root(y))] = min(root(x), root(y))
    expected = {}
    for x in labels.tolist():
        expected.setdefault(root(x), set()).add(x)
    assert _partition(uf, labels) == {frozenset(s) for s in expected.values()}
    # each set's root is its smallest label: the unions, joined lazily in one batch, give the same roots
    assert uf.find(labels).tolist() == [min(expected[root(x)]) for x in labels.tolist()]
