import math

import pytest
import torch

from prunekit.export import binary_entropy, entropy_bound_bits, size_report


def test_binary_entropy_and_bound_hand_computed():
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0
    assert binary_entropy(0.9) == pytest.approx(0.468996, abs=1e-6)
    # 1000 entries, 100 nonzero fp32: 1000·H(0.9) + 100·32
    assert entropy_bound_bits(1000, 100, 32) == pytest.approx(1000 * 0.468996 + 3200, abs=1e-3)


def test_report_rows_and_totals():
    w = torch.zeros(100, 100)
    w.view(-1)[::10] = 1.5  # 90% sparse, every gap is 10
    b = torch.ones(7, dtype=torch.float16)
    report = size_report({"w": w, "b": b})
    rw, rb = report.tensors
    assert (rw.encoding, rw.nonzeros, rw.value_bits, rw.dense_bytes) == ("relative", 1000, 32, 40000)
    assert rw.sparsity == pytest.approx(0.9)
    assert (rb.encoding, rb.bytes, rb.value_bits) == ("dense", 14, 16)
    # relative with k=4 (one code per gap of 10): 1000·4 bits + 1000 values
    assert rw.bytes == 1000 * 4 // 8 + 4000
    assert report.bytes == rw.bytes + 14 and report.dense_bytes == 40014
    total = report.to_dict()["total"]
    assert total["vs_dense"] == pytest.approx(40014 / report.bytes)
    assert total["vs_bound"] == pytest.approx(report.bytes / (rw.bound_bytes + 14))
    assert total["bits_per_weight"] == pytest.approx(8 * report.bytes / 10007)
    text = report.to_text()
    assert (
        text.splitlines()[0].startswith("tensor")
        and "relative" in text
        and text.splitlines()[-1].startswith("total")
    )


def test_random_fp32_meets_the_storage_targets():
    for sparsity in (0.75, 0.9, 0.98):
        w = torch.randn(256, 256).masked_fill(torch.rand(256, 256) < sparsity, 0)
        total = size_report({"w": w}).to_dict()["total"]
        assert total["vs_bound"] <= 1.10, sparsity
        assert total["vs_dense"] >= (8 if sparsity >= 0.9 else 3), sparsity
    dense = size_report({"w": torch.randn(64, 64)}).to_dict()["total"]
    assert dense["vs_dense"] == 1.0 and math.isclose(dense["vs_bound"], 1.0)
