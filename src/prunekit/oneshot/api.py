"""One-shot pruning of a pretrained transformer from calibration batches: the public entry point."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._checks import check_choice, check_positive_int, check_sparsity
from ..masks import Masks
from ..patterns import NM, Element, parse_pattern
from .allocation import outlier_ratio, owl_sparsities, uniform_sparsities
from .calibration import (
    LayerStats,
    calibrate_blocks,
    find_blocks,
    is_conv1d,
    prunable_layers,
    set_weight_matrix,
    weight_matrix,
)
from .solvers import magnitude_mask, sparsegpt, wanda_mask, wanda_scores

METHODS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("uniform", "owl")
HESSIAN_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_STATS = {"magnitude": "none", "wanda": "diag", "sparsegpt": "full"}


@dataclass(frozen=True)
class OneShotConfig:
    """What to prune and how.

    Args:
        method: ``"magnitude"`` (per output row), ``"wanda"`` or ``"sparsegpt"``.
        sparsity: fraction of each Linear's weights removed, in [0, 1); ``None`` for N:M patterns.
        pattern: ``"element"`` (unstructured) or N:M such as ``"2:4"``, ``"4:8"``.
        allocation: ``"uniform"`` or ``"owl"`` (outlier-weighted per-block sparsity, unstructured only).
        skip: glob patterns of module names never pruned (e.g. ``"*attention.output*"``); a bare word
            matches any name containing it.
        owl_lambda, owl_threshold: OWL's sparsity spread λ and outlier multiple M.
        percdamp, blocksize: SparseGPT's dampening fraction of mean(diag H) and lazy-block width.
        hessian_dtype: precision of SparseGPT's ``XXᵀ`` accumulation and solve, ``"float32"`` or
            ``"float64"``. float32, as in the reference implementation, halves the two largest buffers
            (``XXᵀ`` and the solver's work copy, in² each; 9.4 MB instead of 18.9 MB for a 1536-wide
            input) and measured as good as float64 on MiniLM (per-layer reconstruction error within 2e-4
            relative, embedding cosine within 0.003; BENCHMARKS.md); the damping keeps the float32
            Cholesky stable. float64 where results must agree to ~1e-9 (e.g. across ranks or references).
    """

    method: str = "sparsegpt"
    sparsity: float | None = 0.5
    pattern: str = "element"
    allocation: str = "uniform"
    skip: tuple[str, ...] = ()
    owl_lambda: float = 0.08
    owl_threshold: float = 5.0
    percdamp: float = 0.01
    blocksize: int = 128
    hessian_dtype: str = "float32"

    def __post_init__(self) -> None:
        check_choice(self.method, "method", METHODS)
        check_choice(self.hessian_dtype, "hessian_dtype", HESSIAN_DTYPES)
        check_choice(self.allocation, "allocation", ALLOCATIONS)
        check_positive_int(self.blocksize, "blocksize")
        pattern = parse_pattern(self.pattern)
        if not isinstance(pattern, (Element, NM)):
            raise ValueError(f"pattern must be 'element' or N:M such as '2:4', got {self.pattern!r}")
        if isinstance(pattern, NM):
            if self.sparsity is not None and not math.isclose(self.sparsity, pattern.sparsity):
                raise ValueError(
                    f"sparsity={self.sparsity!r} contradicts pattern {self.pattern!r} (fixed sparsity "
                    f"{pattern.sparsity}); pass sparsity=None with an N:M pattern"
                )
            if self.allocation != "uniform":
                raise ValueError(f"allocation={self.allocation!r} needs pattern='element'; N:M is uniform")
            if self.blocksize % pattern.m:
                raise ValueError(f"blocksize={self.blocksize} must be a multiple of M={pattern.m} for N:M")
        else:
            check_sparsity(self.sparsity)
        if not isinstance(self.percdamp, (int, float)) or not 0 < self.percdamp < 1:
            raise ValueError(f"percdamp must be in (0, 1) (e.g. 0.01), got {self.percdamp!r}")
        if isinstance(self.skip, str):
            raise TypeError(f"skip must be a tuple of glob patterns, got the string {self.skip!r}")

    @property
    def nm(self) -> NM | None:
        pattern = parse_pattern(self.pattern)
        return pattern if isinstance(pattern, NM) else None

    @property
    def target(self) -> float:
        nm = self.nm
        return nm.sparsity if nm is not None else float(self.sparsity or 0.0)


@dataclass
class OneShotResult:
    """The pruned model, its masks and the sparsity given to each transformer block."""

    model: nn.Module
    masks: Masks
    block_sparsity: list[float] = field(default_factory=list)


def prune_oneshot(
    model: nn.Module,
    calibration: Sequence[Mapping[str, torch.Tensor]],
    config: OneShotConfig | None = None,
    *,
    inplace: bool = False,
    progress: bool = False,
) -> OneShotResult:
    """Prune every Linear of the transformer blocks of ``model`` one-shot, block by block.

    ``calibration`` holds model keyword batches (``{"input_ids": …, "attention_mask": …}``); under
    ``torch.distributed`` each rank passes its own share. SparseGPT changes the kept weights too, so the
    result is a pruned copy of ``model`` (``model`` itself when ``inplace``) plus its masks. ``progress``
    shows a tqdm bar over the blocks.
    """
    config = config or OneShotConfig()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not calibration:
        raise ValueError("calibration must hold at least one batch dict such as {'input_ids': ids}")
    target = model if inplace else copy.deepcopy(model)
    was_training = target.training
    target.eval()
    blocks = len(find_blocks(target)[1])
    sparsities = uniform_sparsities(config.target, blocks)
    if config.allocation == "owl":
        sparsities = _owl_allocation(target, calibration, config)
    masks: dict[str, torch.Tensor] = {}

    def prune_block(index: int, layers: dict[str, nn.Module], stats: dict[str, LayerStats]) -> None:
        for name, module in layers.items():  # each layer's statistics are freed once it is pruned
            w, keep = _prune_layer(weight_matrix(module), stats.pop(name), sparsities[index], config)
            set_weight_matrix(module, w)
            masks[f"{name}.weight"] = keep.T.contiguous() if is_conv1d(module) else keep

    if config.method == "magnitude" and config.allocation == "uniform":  # data-free: no forward pass needed
        prefix, stack = find_blocks(target)
        for index, block in enumerate(stack):
            layers = prunable_layers(block, f"{prefix}.{index}", config.skip)
            prune_block(
                index, layers, {n: LayerStats("none", weight_matrix(m).shape[1]) for n, m in layers.items()}
            )
    else:
        calibrate_blocks(
            target,
            calibration,
            prune_block,
            stats=_STATS[config.method],
            skip=config.skip,
            hessian_dtype=HESSIAN_DTYPES[config.hessian_dtype],
            progress=progress,
        )
    target.train(was_training)
    return OneShotResult(target, Masks(masks), sparsities)


def _prune_layer(
    w: torch.Tensor, stats: LayerStats, sparsity: float, config: OneShotConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(new (out, in) weight, keep-mask (out, in)) of one layer by the configured method."""
    if config.method == "sparsegpt":
        return sparsegpt(
            w,
            stats.xtx,
            stats.tokens,
            sparsity,
            config.nm,
            blocksize=config.blocksize,
            percdamp=config.percdamp,
            dtype=HESSIAN_DTYPES[config.hessian_dtype],
            overwrite_xtx=True,  # the statistics are dropped once the layer is pruned
        )
    if config.method == "wanda":
        keep = wanda_mask(w, stats.sq_norms, sparsity, config.nm)
    else:
        keep = magnitude_mask(w, sparsity, config.nm)
    return w.detach() * keep, keep


def _owl_allocation(
    model: nn.Module, calibration: Sequence[Mapping[str, torch.Tensor]], config: OneShotConfig
) -> list[float]:
    """A dense calibration pass collecting each block's Wanda-score outlier ratio, then OWL."""
    ratios: list[float] = []

    def measure(_index: int, layers: dict[str, nn.Module], stats: dict[str, LayerStats]) -> None:
        scores = [wanda_scores(weight_matrix(m), stats[n].sq_norms) for n, m in layers.items()]
        ratios.append(outlier_ratio(scores, config.owl_threshold) if scores else 0.0)

    calibrate_blocks(model, calibration, measure, stats="diag", skip=config.skip)
    return owl_sparsities(ratios, config.target, config.owl_lambda)
