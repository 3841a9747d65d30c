import json

import pytest
import torch
from torch import nn

from prunekit import Masks
from prunekit.demo import cache_dir
from prunekit.export import SparseLinear, best_kernel, sparsify_linears
from prunekit.export import sparse_linear as sl


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|: relative to the output scale."""
    return float((a - b).detach().abs().max() / b.detach().abs().max())


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))


def sparse_linear_layer(
    out_f: int = 24, in_f: int = 40, sparsity: float = 0.8, bias: bool = True
) -> nn.Linear:
    layer = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        layer.weight.masked_fill_(torch.rand(out_f, in_f) < sparsity, 0)
    return layer


@pytest.mark.parametrize("shape", [(40,), (1, 40), (7, 40), (2, 3, 40)])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_equals_dense(shape, bias):
    layer = sparse_linear_layer(bias=bias)
    sparse = SparseLinear.from_linear(layer)
    x = torch.randn(shape)
    out = sparse(x)
    assert out.shape == (*shape[:-1], 24)
    assert rel_err(out, layer(x)) <= 1e-5
    assert sparse.crow_indices.dtype == sparse.col_indices.dtype == torch.int32
    assert sparse.values.numel() == int(layer.weight.count_nonzero())
    assert torch.equal(sparse.csr_weight().to_dense(), layer.weight.detach())


def test_sparsify_always_matches_the_dense_masked_model_and_keeps_the_original():
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 5))
    masks = Masks({n: torch.rand(p.shape) > 0.9 for n, p in model.named_parameters() if p.dim() == 2})
    sparse = sparsify_linears(model, masks=masks, policy="always")
    assert [type(m).__name__ for m in sparse] == [
        "SparseLinear",
        "ReLU",
        "SparseLinear",
        "ReLU",
        "SparseLinear",
    ]
    assert all(type(m) is nn.Linear for m in model[::2])  # the user's model is untouched
    x = torch.randn(3, 32)
    assert rel_err(sparse(x), masks.apply(model)(x)) <= 1e-5
    same = sparsify_linears(model, masks=masks, policy="always", inplace=True)
    assert same is model and isinstance(model[0], SparseLinear)


def test_measure_policy_follows_the_cached_kernel_choice(monkeypatch):
    prefix, suffix = "16x16|d", f"|b1|t{torch.get_num_threads()}|torch{torch.__version__}"

    def t(median: float, best: float) -> dict[str, float]:
        return {"median": median, "min": best}

    cache = {
        f"{prefix}0.10{suffix}": {"dense": t(1, 1), "sparse": t(0.5, 0.3), "sparse-1-thread": t(0.4, 0.4)},
        f"{prefix}0.20{suffix}": {"dense": t(1, 1), "sparse": t(0.5, 0.5)},
        f"{prefix}0.30{suffix}": {"dense": t(2, 1), "sparse": t(1, 0.95)},  # best time: not 10% faster
        f"{prefix}0.50{suffix}": {"dense": t(1, 1), "sparse": t(0.95, 0.5)},  # median: not 10% faster
    }
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / sl.CACHE_FILE).write_text(json.dumps(cache))
    monkeypatch.setattr(sl, "measure_kernels", lambda *a, **k: pytest.fail("the cache was not used"))
    assert best_kernel(16, 16, 0.1) == "sparse-1-thread"
    assert best_kernel(16, 16, 0.21) == "sparse"
    assert best_kernel(16, 16, 0.3) == best_kernel(16, 16, 0.5) == "dense"
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16))
    with torch.no_grad():
        model[0].weight.view(-1)[26:] = 0  # density 26/256 → bucket 0.10
        model[1].weight.view(-1)[51:] = 0  # density 51/256 → bucket 0.20
        model[2].weight.view(-1)[128:] = 0  # density 0.5
    converted = sparsify_linears(model)
    assert isinstance(converted[0], SparseLinear) and converted[0].threads == 1
    assert isinstance(converted[1], SparseLinear) and converted[1].threads is None
    assert type(converted[2]) is nn.Linear
    x = torch.randn(1, 16)
    assert rel_err(converted(x), model(x)) <= 1e-5
    assert torch.get_num_threads() == 1  # conftest's setting survives the one-thread kernel


def test_measurement_is_cached_and_reused(monkeypatch):
    calls = []

    def fake(out_f, in_f, density, batch):
        calls.append((out_f, in_f, density, batch))
        return {"dense": {"median": 2.0, "min": 2.0}, "sparse": {"median": 1.0, "min": 1.0}}

    monkeypatch.setattr(sl, "measure_kernels", fake)
    model = nn.Sequential(sparse_linear_layer(8, 12, 0.5), nn.ReLU(), nn.Linear(8, 3))
    converted = sparsify_linears(model)
    assert isinstance(converted[0], SparseLinear) and type(converted[2]) is nn.Linear  # dense layer skipped
    sparsify_linears(model)
    assert len(calls) == 1 and calls[0][:2] == (8, 12) and calls[0][3] == 1
    entries = json.loads((cache_dir() / sl.CACHE_FILE).read_text())
    assert list(entries.values()) == [
        {"dense": {"median": 2.0, "min": 2.0}, "sparse": {"median": 1.0, "min": 1.0}}
    ]


def test_stale_cache_entries_are_measured_again(monkeypatch):
    key = f"8x8|d0.50|b1|t{torch.get_num_threads()}|torch{torch.__version__}"
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / sl.CACHE_FILE).write_text(json.dumps({key: {"dense_s": 1.0, "sparse_s": 0.1}}))
    monkeypatch.setattr(sl, "measure_kernels", lambda *a: {"dense": {"median": 1, "min": 1}})
    assert best_kernel(8, 8, 0.5) == "dense"
    assert json.loads((cache_dir() / sl.CACHE_FILE).read_text())[key] == {"dense": {"median": 1, "min": 1}}


def test_one_thread_kernel_restores_the_thread_count():
    layer = sparse_linear_layer()
    torch.set_num_threads(2)
    try:
        out = SparseLinear.from_linear(layer, threads=1)(torch.randn(3, 40))
        assert torch.get_num_threads() == 2 and out.shape == (3, 24)
        medians = sl.measure_kernels(32, 32, 0.1, 1, repeats=3)
        assert set(medians) == {"dense", "sparse", "sparse-1-thread"}
        assert all(0 < m["min"] <= m["median"] for m in medians.values())
    finally:
        torch.set_num_threads(1)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="policy must be one of 'measure', 'always'"):
        sparsify_linears(nn.Linear(2, 2), policy="never")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sparsify_linears(nn.Linear(2, 2), batch_size=0)
    with pytest.raises(ValueError, match="2-d"):
        SparseLinear(torch.zeros(3), None)
