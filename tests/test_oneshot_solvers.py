"""Layer-wise solvers on a single Linear with correlated random inputs (float64 references)."""

import pytest
import torch

from prunekit.oneshot.solvers import (
    damped_hessian,
    magnitude_mask,
    obs_remove_one,
    sparsegpt,
    wanda_mask,
)
from prunekit.patterns import NM


def _layer(out: int = 24, cols: int = 32, tokens: int = 512):
    gen = torch.Generator().manual_seed(1)
    mix = torch.randn(cols, cols, generator=gen, dtype=torch.float64)
    scale = torch.logspace(-1, 1, cols, dtype=torch.float64)[torch.randperm(cols, generator=gen)]
    x = (mix @ torch.randn(cols, tokens, generator=gen, dtype=torch.float64)) * scale[:, None]  # (in, T)
    w = torch.randn(out, cols, generator=gen, dtype=torch.float64)
    return w, x


def _lstsq_optimum(w: torch.Tensor, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per row: the best weights on the kept columns, min ‖w x − w' x‖ (independent of SparseGPT)."""
    best = torch.zeros_like(w)
    target = w @ x  # (out, T)
    for r in range(w.shape[0]):
        cols = keep[r].nonzero().squeeze(1)
        sol = torch.linalg.lstsq(x[cols].T, target[r][:, None]).solution  # (kept, 1)
        best[r, cols] = sol[:, 0]
    return best


def _err(w: torch.Tensor, w_hat: torch.Tensor, x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm((w - w_hat) @ x))


@pytest.mark.parametrize("pattern", [None, NM(2, 4), NM(4, 8)])
def test_sparsegpt_beats_wanda_and_magnitude_and_not_the_lstsq_optimum(pattern):
    w, x = _layer()
    xtx = x @ x.T
    # Unstructured: one mask-selection block over all 32 columns; N:M: two lazy blocks of 16.
    blocksize = 32 if pattern is None else 16
    w_sgpt, keep = sparsegpt(
        w, xtx, x.shape[1], 0.5, pattern, blocksize=blocksize, percdamp=0.01, dtype=torch.float64
    )
    keep_wanda = wanda_mask(w, torch.diagonal(xtx), 0.5, pattern)
    keep_mag = magnitude_mask(w, 0.5, pattern)
    for k in (keep, keep_wanda, keep_mag):
        assert int(k.sum()) == w.numel() // 2
    e_sgpt = _err(w, w_sgpt, x)
    e_wanda, e_mag = _err(w, w * keep_wanda, x), _err(w, w * keep_mag, x)
    assert e_sgpt < 0.9 * e_wanda
    assert e_wanda < 0.5 * e_mag
    assert torch.equal(w_sgpt != 0, keep)
    e_opt = _err(w, _lstsq_optimum(w, x, keep), x)
    assert e_opt <= e_sgpt * (1 + 1e-9)
    assert e_sgpt < 1.3 * e_opt  # close to optimal for its own mask


def test_obs_single_removal_equals_constrained_least_squares():
    w, x = _layer(out=1, cols=16, tokens=200)
    h = x @ x.T  # (in, in), no damping: the exact least-squares Hessian (up to the factor 2)
    q = 5
    updated = obs_remove_one(w[0], torch.linalg.inv(h), q)
    keep = torch.ones_like(w, dtype=torch.bool)
    keep[0, q] = False
    expected = _lstsq_optimum(w, x, keep)[0]
    assert updated[q].abs() < 1e-12
    assert torch.allclose(updated, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))


def test_sparsegpt_one_weight_unstructured_matches_obs_with_same_hessian():
    w, x = _layer(out=1, cols=8, tokens=100)
    xtx = x @ x.T
    w_sgpt, keep = sparsegpt(w, xtx, x.shape[1], 1 / 8, blocksize=8, percdamp=0.01, dtype=torch.float64)
    q = int((~keep[0]).nonzero())
    # The sweep freezes columns < q and reaches q with the rest unchanged: one OBS step on the
    # sub-problem of columns q.. (inverse of H restricted to them) gives the same row.
    h = damped_hessian(xtx, x.shape[1], 0.01, dtype=torch.float64)
    expected = w[0].clone()
    expected[q:] = obs_remove_one(w[0, q:], torch.linalg.inv(h[q:, q:]), 0)
    assert torch.allclose(w_sgpt[0], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_masks_valid_in_every_group(n, m):
    w, x = _layer(out=10, cols=32)
    xtx = x @ x.T
    pattern = NM(n, m)
    masks = [
        sparsegpt(w, xtx, x.shape[1], 0.0, pattern, blocksize=16)[1],
        wanda_mask(w, torch.diagonal(xtx), 0.0, pattern),
        magnitude_mask(w, 0.0, pattern),
    ]
    for keep in masks:
        assert torch.all(keep.reshape(10, 32 // m, m).sum(-1) == n)


def test_wanda_and_magnitude_hand_computed():
    w = torch.tensor([[1.0, -2.0, 3.0, -0.5], [4.0, 1.0, -1.0, 2.0]])
    sq = torch.tensor([16.0, 1.0, 0.25, 100.0])  # norms 4, 1, 0.5, 10
    # scores row 0: 4, 2, 1.5, 5 ; row 1: 16, 1, 0.5, 20
    assert wanda_mask(w, sq, 0.5).tolist() == [[True, False, False, True], [True, False, False, True]]
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, True, False], [True, False, False, True]]
    assert magnitude_mask(w, 0.75).sum(1).tolist() == [1, 1]


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_sparsegpt_exact_per_row_sparsity_across_blocks(sparsity):
    w, x = _layer(out=6, cols=40)
    _, keep = sparsegpt(w, x @ x.T, x.shape[1], sparsity, blocksize=16)
    assert keep.sum(1).tolist() == [40 - round(sparsity * 40)] * 6


@pytest.mark.parametrize("pattern", [None, NM(2, 4)])
def test_float32_solve_reconstructs_as_well_as_float64(pattern):
    w, x = _layer(out=24, cols=64, tokens=1024)
    xtx = x @ x.T
    w64, keep64 = sparsegpt(w, xtx, x.shape[1], 0.5, pattern, blocksize=32, dtype=torch.float64)
    w32, keep32 = sparsegpt(w, xtx.float(), x.shape[1], 0.5, pattern, blocksize=32, dtype=torch.float32)
    assert w32.dtype == torch.float64  # the weight's own dtype, whatever the solve's
    assert torch.equal(w32 != 0, keep32) and int(keep32.sum()) == w.numel() // 2
    assert float((keep32 == keep64).double().mean()) > 0.98
    e32, e64 = _err(w, w32, x), _err(w, w64, x)
    assert abs(e32 - e64) < 1e-3 * e64
