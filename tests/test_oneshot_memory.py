"""Memory behaviour of one-shot calibration: what is kept alive, for how long, and what is overwritten."""

import weakref

import pytest
import torch
from torch import nn

from prunekit.oneshot import OneShotConfig, calibrate_blocks, capture_block_inputs, prune_oneshot, sparsegpt
from prunekit.oneshot.solvers import damped_hessian, inverse_hessian_cholesky


class Stack(nn.Module):
    """Three MLP blocks fed the caller's tensor directly, as LLaMA feeds ``inputs_embeds``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)) for _ in range(3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _batches(n: int = 3) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(5, 8, generator=gen)} for _ in range(n)]


def _xtx(cols: int = 12, tokens: int = 64) -> torch.Tensor:
    x = torch.randn(tokens, cols, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[:, 3] = 0.0  # a dead input
    return x.T @ x  # (in, in)


def test_block_statistics_are_freed_before_the_next_block_runs():
    model, previous, dead_at_next_block = Stack(), [], []

    def prune_block(_index, _layers, stats):
        for s in stats.values():
            assert not s.xtx.requires_grad and s.xtx.grad_fn is None
        previous[:] = [weakref.ref(s.xtx) for s in stats.values()]

    def check(_module, _args):
        dead_at_next_block.append([ref() is None for ref in previous])

    for layer in model.layers:
        layer.register_forward_pre_hook(check)
    calibrate_blocks(model, _batches(), prune_block, stats="full")
    # Batches of block 0 (nothing before), then block 1 and 2 runs: the earlier block's XXᵀ are gone.
    stats_runs = [flags for flags in dead_at_next_block if flags]
    assert stats_runs and all(all(flags) for flags in stats_runs)


def test_captured_inputs_are_detached_copies():
    model, data = Stack(), _batches()
    for (args, _kwargs), batch in zip(capture_block_inputs(model, model.layers[0], data), data, strict=True):
        assert args[0].grad_fn is None and not args[0].requires_grad
        assert args[0].data_ptr() != batch["x"].data_ptr()
        assert torch.equal(args[0], batch["x"])


def test_in_place_block_updates_leave_the_callers_batches_untouched():
    model, data = Stack(), _batches()
    originals = [b["x"].clone() for b in data]
    result = prune_oneshot(model, data, OneShotConfig(method="sparsegpt", sparsity=0.5, blocksize=4))
    assert all(torch.equal(b["x"], o) for b, o in zip(data, originals, strict=True))
    assert result.masks.sparsity == pytest.approx(0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sparsegpt_overwriting_xtx_gives_identical_results_and_default_keeps_it(dtype):
    xtx = _xtx().to(dtype)
    w = torch.randn(6, 12, generator=torch.Generator().manual_seed(3))
    before = xtx.clone()
    kept = sparsegpt(w, xtx, 64, 0.5, blocksize=4, dtype=dtype)
    assert torch.equal(xtx, before)
    overwritten = sparsegpt(w, xtx, 64, 0.5, blocksize=4, dtype=dtype, overwrite_xtx=True)
    assert not torch.equal(xtx, before)  # used as work memory
    assert torch.equal(kept[0], overwritten[0]) and torch.equal(kept[1], overwritten[1])
    assert torch.all(kept[0][:, 3] == 0)  # the dead input's column


def test_in_place_hessian_and_factor_equal_the_textbook_formulas():
    xtx = _xtx()
    h_ref = xtx * (2.0 / 64)
    h_ref[3, 3] = 1.0
    h_ref += 0.01 * torch.diagonal(h_ref).mean() * torch.eye(12, dtype=torch.float64)
    h = damped_hessian(xtx.clone(), 64, 0.01, dtype=torch.float64, overwrite=True)
    torch.testing.assert_close(h, h_ref, rtol=1e-15, atol=0)
    h32 = damped_hessian(xtx, 64, 0.01)  # the default precision: a float32 copy
    assert h32.dtype == torch.float32
    torch.testing.assert_close(h32, h_ref.float(), rtol=1e-6, atol=0)
    u_ref = torch.linalg.cholesky(torch.linalg.inv(h_ref), upper=True)
    work = h.clone()
    u = inverse_hessian_cholesky(work, overwrite=True)
    assert u.data_ptr() == work.data_ptr()  # U is returned in the work matrix's memory
    torch.testing.assert_close(u, u_ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(inverse_hessian_cholesky(h), u)
    assert torch.equal(h, damped_hessian(xtx, 64, 0.01, dtype=torch.float64))  # overwrite=False kept xtx


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_xtx_accumulates_in_the_hessian_dtype_and_diag_stays_float64(dtype):
    model, seen = Stack(), {}

    def record(index, _layers, stats):
        if index == 0:
            seen.update({(s.kind, n): s.xtx.clone() for n, s in stats.items()})

    calibrate_blocks(model, _batches(), record, stats="full", hessian_dtype=dtype)
    calibrate_blocks(model, _batches(), record, stats="diag", hessian_dtype=dtype)
    x = torch.cat([b["x"] for b in _batches()]).double()  # (tokens, 8): the inputs of layers.0.0
    full, diag = seen[("full", "layers.0.0")], seen[("diag", "layers.0.0")]
    assert full.dtype == dtype and full.shape == (8, 8) and diag.dtype == torch.float64
    rtol = 1e-6 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(full.double(), x.T @ x, rtol=rtol, atol=rtol * float((x.T @ x).abs().max()))
    torch.testing.assert_close(diag, (x * x).sum(0), rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", ["hf_bert", "hf_gpt2", "hf_llama"])
def test_micro_batched_calibration_gives_the_same_pruning(name, monkeypatch) -> None:
    """Blocks run 2 sequences at a time (less peak memory); masks equal whole-batch calibration's."""
    from prunekit.oneshot import calibration
    from structured_zoo import HF_ZOO

    generator = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, 50, (5, 12), generator=generator)} for _ in range(2)]
    config = OneShotConfig(method="sparsegpt", sparsity=0.5, blocksize=16, hessian_dtype="float64")
    results = []
    for micro in (2, 10**6):  # 5 sequences → pieces of 2, 2, 1; then whole batches
        monkeypatch.setattr(calibration, "MICRO_BATCH", micro)
        torch.manual_seed(0)
        results.append(prune_oneshot(HF_ZOO[name]().eval(), data, config))
    assert results[0].masks == results[1].masks
    for (key, a), b in zip(
        results[0].model.state_dict().items(), results[1].model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), key


def test_a_block_input_that_only_looks_batched_is_not_split() -> None:
    """A (B, B) tensor that is not per-sequence: splitting changes the output, so calibration must not."""
    from prunekit.oneshot.calibration import _micro_batches, _splits_exactly

    class Mixing(nn.Module):
        def forward(self, hidden_states: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
            return torch.einsum("ij,jtd->itd", mix, hidden_states)  # mixes sequences: (B, B) @ (B, T, d)

    class Shift(nn.Module):
        def forward(self, hidden_states: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            return hidden_states + bias.mean(0)  # bias (B, d) is pooled over the batch, not per sequence

    hidden, mix = torch.randn(4, 3, 2), torch.randn(4, 4)
    assert len(_micro_batches([hidden], {"mix": mix}, 2)) == 2
    assert not _splits_exactly(Mixing(), ([hidden], {"mix": mix}), 2)  # the pieces do not fit
    assert not _splits_exactly(Shift(), ([hidden], {"bias": torch.randn(4, 2)}), 2)  # they fit, but differ
    assert _splits_exactly(Shift(), ([hidden], {"bias": torch.ones(4, 2)}), 2)
