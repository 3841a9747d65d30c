"""Layer-wise one-shot solvers: per-output magnitude, Wanda and SparseGPT on one weight matrix.

Every solver works on a weight ``W`` of shape (out, in) — a Linear's weight — and compares weights
within each output row (the per-output comparison group of Wanda and SparseGPT), so every row keeps
exactly the same number of weights. Patterns: unstructured (``sparsity`` per row) or N:M (keep ``n``
of every ``m`` consecutive input columns).

Statistics come from calibration inputs ``X`` of shape (in, tokens):

- Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"):
  ``S_ij = |W_ij| · ‖X_j‖₂`` — needs only ``diag(XXᵀ)``.
- SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in
  One-Shot"): ``H = 2XXᵀ + λI`` with ``λ = percdamp · mean(diag H)``; the OBS saliency
  ``w_q² / [H⁻¹]_qq²`` (with the Cholesky factor of ``H⁻¹``) chooses the mask inside the column sweep
  and the OBS update ``δ = −(w_q / [H⁻¹]_qq) · H⁻¹[:, q]`` compensates the remaining columns.
"""

from __future__ import annotations

import torch

from ..patterns import NM


def row_keep_mask(scores: torch.Tensor, sparsity: float, pattern: NM | None = None) -> torch.Tensor:
    """Keep-mask pruning the lowest ``round(sparsity · in)`` scores of every row (or N:M per group).

    Ties prune the earlier column first (stable sort), so the result is deterministic.
    """
    if pattern is not None:
        return pattern.keep_mask(scores)
    out, cols = scores.shape  # (out, in)
    k = round(sparsity * cols)
    keep = torch.ones(out, cols, dtype=torch.bool, device=scores.device)
    if k > 0:
        order = torch.sort(scores.float(), dim=1, stable=True).indices  # ascending
        keep.scatter_(1, order[:, :k], False)
    return keep


def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: NM | None = None) -> torch.Tensor:
    """Per-output magnitude: keep the largest ``|W_ij|`` of each row."""
    return row_keep_mask(weight.abs(), sparsity, pattern)


def wanda_scores(weight: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """Wanda scores ``|W_ij| · ‖X_j‖₂`` from the squared input norms ``‖X_j‖²`` (shape (in,))."""
    return weight.abs().double() * sq_norms.double().clamp_min(0).sqrt()[None, :]  # (out, in)


def wanda_mask(
    weight: torch.Tensor, sq_norms: torch.Tensor, sparsity: float, pattern: NM | None = None
) -> torch.Tensor:
    """Wanda keep-mask: the highest ``|W_ij| · ‖X_j‖₂`` of each row (or of each N:M group)."""
    return row_keep_mask(wanda_scores(weight, sq_norms), sparsity, pattern)


def damped_hessian(
    xtx: torch.Tensor,
    tokens: int,
    percdamp: float,
    *,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> torch.Tensor:
    """``H = 2XXᵀ/tokens + λI`` with ``λ = percdamp · mean(diag H)``; dead inputs get ``H_jj = 1``.

    ``xtx`` is the running sum ``XXᵀ`` (in, in) over ``tokens`` calibration tokens; scaling by the
    token count does not change the solution, only keeps the numbers in range. ``H`` has ``dtype``;
    ``overwrite`` computes it in the memory of ``xtx`` (destroying it) when ``xtx`` already has that
    dtype, instead of in a new (in, in) matrix.
    """
    h = xtx.to(dtype)
    scale = 2.0 / max(tokens, 1)
    h = h.mul_(scale) if overwrite or h is not xtx else h * scale  # (in, in)
    diag = torch.diagonal(h)
    diag[diag == 0] = 1.0
    diag.add_(percdamp * diag.mean())
    return h


def inverse_hessian_cholesky(h: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``H⁻¹`` (``H⁻¹ = UᵀU``): row ``q`` of ``U`` holds, scaled, the
    inverse Hessian of the columns not yet swept when the sweep reaches ``q``.

    Each factor is copied back into one work matrix, returned as ``U``: ``h`` itself with ``overwrite``
    (destroying it), else a copy. At most two (in, in) matrices are alive at once.
    """
    work = h if overwrite else h.clone()
    work.copy_(torch.linalg.cholesky(work))  # lower L, H = LLᵀ
    work.copy_(torch.cholesky_inverse(work))  # H⁻¹
    return work.copy_(torch.linalg.cholesky(work, upper=True))


def obs_remove_one(weight_row: torch.Tensor, h_inv: torch.Tensor, q: int) -> torch.Tensor:
    """Optimal Brain Surgeon: remove weight ``q`` and update the rest of the row optimally.

    ``w ← w − (w_q / [H⁻¹]_qq) · H⁻¹[:, q]`` (Hassibi & Stork 1993); the result has ``w_q = 0`` and
    minimises ``(w' − w)ᵀ H (w' − w)`` under that constraint (= least squares on the inputs).
    """
    return weight_row - (weight_row[q] / h_inv[q, q]) * h_inv[:, q]


def sparsegpt(
    weight: torch.Tensor,
    xtx: torch.Tensor,
    tokens: int,
    sparsity: float,
    pattern: NM | None = None,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
    dtype: torch.dtype = torch.float32,
    overwrite_xtx: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one (out, in) weight: returns ``(updated weight, keep-mask)``.

    Columns are swept left to right in lazy blocks of ``blocksize`` columns: inside a block each pruned
    weight's error ``e = w_q / U_qq`` is spread over the block's later columns (``W[:, q:] −= e·U[q, q:]``),
    and the block's accumulated errors update all later columns in one matrix product. The mask is
    chosen as the sweep reaches it: per row, the block's share of ``round(sparsity · in)`` columns with the
    lowest ``w² / U_qq²`` (adaptive mask selection), or for N:M the ``m − n`` lowest of each group of
    ``m`` columns when the sweep reaches the group. ``H``, its factor and the sweep are computed in
    ``dtype`` (float32, as in the reference implementation, or float64); the result has the input dtype.
    ``overwrite_xtx`` lets the solver use an ``xtx`` of that dtype as its work memory (``xtx`` is
    destroyed): the solve then adds at most one (in, in) matrix above the statistics instead of two.
    """
    out, cols = weight.shape  # (out, in)
    w = weight.detach().to(dtype, copy=True)
    w[:, torch.diagonal(xtx) == 0] = 0.0
    h = damped_hessian(xtx, tokens, percdamp, dtype=dtype, overwrite=overwrite_xtx)  # ours, or xtx's memory
    u = inverse_hessian_cholesky(h, overwrite=True)  # (in, in), upper, in h's memory
    keep = torch.ones(out, cols, dtype=torch.bool, device=w.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]  # (out, b), (b, b)
        err = torch.zeros_like(w1)
        diag = torch.diagonal(u1)
        if pattern is None:
            k = round(sparsity * i2) - round(sparsity * i1)  # exact total per row over all blocks
            keep1 = _lowest_pruned(w1**2 / diag[None, :] ** 2, k)
        else:
            keep1 = torch.ones_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if pattern is not None and i % pattern.m == 0:
                group = w1[:, i : i + pattern.m] ** 2 / diag[None, i : i + pattern.m] ** 2
                keep1[:, i : i + pattern.m] = _lowest_pruned(group, pattern.m - pattern.n)
            col = w1[:, i]
            quant = torch.where(keep1[:, i], col, torch.zeros_like(col))
            e = (col - quant) / u1[i, i]  # (out,)
            w1[:, i:] -= e[:, None] * u1[i, i:][None, :]
            w1[:, i] = quant
            err[:, i] = e
        w[:, i1:i2] = w1
        w[:, i2:] -= err @ u[i1:i2, i2:]
        keep[:, i1:i2] = keep1
    w[~keep] = 0.0
    return w.to(weight.dtype), keep


def _lowest_pruned(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask dropping the ``k`` lowest scores of each row (stable: earlier column first)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k > 0:
        keep.scatter_(1, torch.sort(scores, dim=1, stable=True).indices[:, :k], False)
    return keep
