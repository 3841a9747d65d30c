import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from prunekit.export import ENCODINGS, NotApplicableError, decode, encode

DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int8,
    torch.uint8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
]


def raw(t: torch.Tensor) -> torch.Tensor:
    """Bytes of ``t``: equality means bit-exact (-0.0, NaN payloads included)."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def sparse_tensor(shape: tuple[int, ...], dtype: torch.dtype, sparsity: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        t = torch.randn(shape, generator=g).to(dtype)
        if t.numel() > 2:  # special values must survive as values
            t.view(-1)[0], t.view(-1)[1] = -0.0, float("nan")
    elif dtype == torch.bool:
        t = torch.ones(shape, dtype=torch.bool)
    else:
        info = torch.iinfo(dtype)
        t = torch.randint(max(info.min, -1000), min(info.max, 1000), shape, generator=g).to(dtype)
    return t.masked_fill(torch.rand(shape, generator=g) < sparsity, 0)


def applicable(t: torch.Tensor):
    for name in ENCODINGS.names():
        try:
            yield name, encode(t, name)
        except NotApplicableError:
            continue


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple)
    | st.tuples(st.integers(1, 5), st.sampled_from([4, 8, 16, 32]), st.integers(1, 3)),
    dtype=st.sampled_from(DTYPES),
    sparsity=st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_every_encoding_round_trips_exactly(shape, dtype, sparsity, seed):
    t = sparse_tensor(shape, dtype, sparsity, seed)
    sizes = {}
    for name, encoded in applicable(t):
        out = decode(encoded)
        assert out.dtype == dtype and out.shape == t.shape, name
        assert torch.equal(raw(out), raw(t)), name
        sizes[name] = encoded.nbytes
    assert "dense" in sizes and "bitmap" in sizes and "relative" in sizes and "csr" in sizes
    auto = encode(t)
    assert torch.equal(raw(decode(auto)), raw(t))
    assert auto.nbytes == min(sizes.values()) <= t.numel() * t.element_size()


def test_relative_indexing_hand_computed():
    t = torch.zeros(11)
    t[1], t[10] = 5.0, 7.0
    e = encode(t, "relative", k=2)
    # gaps 2 and 9; skip = 2^2 - 1 = 3: codes [1], then fillers [3, 3] and remainder 2 → [1, 3, 3, 2]
    assert e.params == {"k": 2, "codes": 4}
    assert e.parts["gaps"].tolist() == [1 | 3 << 2 | 3 << 4 | 2 << 6]
    assert e.parts["values"].tolist() == [5.0, 7.0]
    assert torch.equal(decode(e), t)


def test_relative_chooses_k_minimising_bits():
    t = torch.zeros(4096)
    t[::64] = 1.0  # every gap is 64: k=7 writes each in one code, no fillers
    e = encode(t, "relative")
    assert e.params == {"k": 7, "codes": 64}
    assert e.nbytes == math.ceil(64 * 7 / 8) + 64 * 4


def test_csr_uses_narrowest_index_types():
    t = torch.zeros(3, 300)
    t[0, 299] = t[2, 5] = 1.0
    e = encode(t, "csr")
    assert e.parts["col"].dtype == torch.uint16 and e.parts["col"].tolist() == [299, 5]
    assert e.parts["crow"].dtype == torch.uint8 and e.parts["crow"].tolist() == [0, 1, 1, 2]
    assert encode(torch.ones(2, 200), "csr").parts["col"].dtype == torch.uint8


def test_nm_stores_n_values_and_positions_per_group():
    t = torch.tensor([[0.0, 2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0]])  # 1:4 along dim 1
    e = encode(t, "nm", m=4)
    assert e.params == {"n": 1, "m": 4}
    assert e.parts["values"].tolist() == [2.0, 3.0]
    assert e.parts["positions"].tolist() == [1 | 0 << 2]  # two 2-bit positions: 1 and 0
    assert torch.equal(decode(e), t)
    with pytest.raises(NotApplicableError, match="fully dense"):
        encode(torch.ones(2, 4), "nm", m=4)


def test_auto_picks_block_for_block_sparse_weights():
    t = torch.zeros(16, 16)
    t[0:4, 0:4] = torch.randn(4, 4)
    t[12:16, 12:16] = torch.randn(4, 4)
    e = encode(t)
    assert (e.encoding, e.params) == ("block", {"rows": 4, "cols": 4})
    assert e.parts["offsets"].tolist() == [0, 15] and e.nbytes == 2 + 32 * 4
    assert torch.equal(decode(e), t)


def test_auto_picks_dense_for_dense_and_relative_for_very_sparse():
    assert encode(torch.randn(64, 64)).encoding == "dense"
    t = torch.randn(256, 256).masked_fill(torch.rand(256, 256) < 0.98, 0)
    assert encode(t).encoding == "relative"


def test_bad_input_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match="valid encodings are: bitmap, block, csr, dense, nm, relative"):
        encode(torch.zeros(3), "zip")
    with pytest.raises(TypeError, match="real and bool"):
        encode(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="k \\(bits per gap\\) in 1…32"):
        encode(torch.zeros(3), "relative", k=0)
    with pytest.raises(ValueError, match="need a forced encoding"):
        encode(torch.zeros(3), k=3)
