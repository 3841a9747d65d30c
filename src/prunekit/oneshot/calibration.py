"""Block-by-block calibration of a transformer stack (the sequential scheme of SparseGPT and Wanda).

The inputs of the first block are captured once (a pre-hook stops the forward there); then, for each
block in turn, forward hooks on its Linear layers accumulate input statistics over every calibration
batch, the block is pruned from them, and the block is run again — now pruned — so its outputs become
the next block's inputs. Only one block's activations (one hidden-state tensor per batch, overwritten
in place) and that block's statistics are alive beyond the model itself; freed heap memory is handed
back to the OS between blocks (glibc ``malloc_trim``), so the resident size follows the live tensors.

Data parallel: when ``torch.distributed`` is initialised, each rank passes its own calibration batches;
the statistics are summed across ranks (``all_reduce``) before pruning, and the pruned block is
broadcast from rank 0 so that every rank continues from bit-identical weights. ``XXᵀ`` accumulates in
the Hessian dtype the caller chooses (float32 by default, float64 on request) and ``‖X_j‖²`` in float64,
so a different summation order changes the statistics only by rounding in that dtype.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fnmatch
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

BLOCK_LIST_NAMES = ("layer", "layers", "h", "blocks", "block")
STATS_KINDS = ("none", "diag", "full")
STATS_CHUNK_TOKENS = 256
# Sequences per block forward: the forward's temporaries (attention scores, MLP activations) scale with it,
# and on MiniLM with batches of 8 × 128 tokens they were most of the peak memory added by calibration.
MICRO_BATCH = 2


@dataclass
class LayerStats:
    """Running input statistics of one Linear: ``XXᵀ`` (``"full"``) or ``diag(XXᵀ) = ‖X_j‖²``.

    ``dtype`` is the precision of the accumulated ``xtx``.
    """

    kind: str
    features: int
    tokens: int = 0
    dtype: torch.dtype = torch.float64
    xtx: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        shape = (self.features, self.features) if self.kind == "full" else (self.features,)
        self.xtx = torch.zeros(shape, dtype=self.dtype)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, self.features)  # (tokens, in)
        self.tokens += x.shape[0]
        if self.kind != "full":
            x = x.to(self.dtype)
            self.xtx += (x * x).sum(0)
            return
        for chunk in x.split(STATS_CHUNK_TOKENS):  # converted copies of a few tokens, not of the batch
            chunk = chunk.to(self.dtype)
            self.xtx.addmm_(chunk.T, chunk)

    @property
    def sq_norms(self) -> torch.Tensor:
        """``‖X_j‖²`` per input feature (in,)."""
        return torch.diagonal(self.xtx) if self.kind == "full" else self.xtx

    def all_reduce(self) -> None:
        """Sum the statistics over all ranks (no-op without an initialised process group)."""
        if dist.is_available() and dist.is_initialized():
            tokens = torch.tensor([self.tokens], dtype=torch.float64)
            dist.all_reduce(self.xtx)
            dist.all_reduce(tokens)
            self.tokens = int(tokens.item())


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight of a Linear, or of a transformers ``Conv1D`` (stored as (in, out))."""
    return module.weight.T if is_conv1d(module) else module.weight


def set_weight_matrix(module: nn.Module, w: torch.Tensor) -> None:
    with torch.no_grad():
        module.weight.copy_(w.T if is_conv1d(module) else w)


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer stack: the largest ``nn.ModuleList`` named ``layer``/``layers``/``h``/``blocks``."""
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES
    ]
    if not found:
        raise ValueError(
            f"found no transformer block list in {type(model).__name__}: one-shot calibration needs an "
            f"nn.ModuleList named one of {BLOCK_LIST_NAMES} (e.g. BERT encoder.layer, GPT-2 h)"
        )
    return max(found, key=lambda item: len(item[1]))


def prunable_layers(block: nn.Module, prefix: str, skip: Sequence[str]) -> dict[str, nn.Module]:
    """Full name → Linear / Conv1D modules of ``block`` whose name matches no ``skip`` glob."""
    layers = {}
    for name, mod in block.named_modules():
        full = f"{prefix}.{name}" if name else prefix
        if (isinstance(mod, nn.Linear) or is_conv1d(mod)) and not _skipped(full, skip):
            layers[full] = mod
    return layers


class _StopForward(Exception):
    """Raised by the capture hook once the first block's inputs are recorded."""


def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]
) -> list[tuple[list[Any], dict[str, Any]]]:
    """Positional and keyword inputs of the first block for every calibration batch.

    The hidden states are copies (calibration overwrites them in place, block after block).
    """
    captured: list[tuple[list[Any], dict[str, Any]]] = []

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        args, kwargs = list(args), dict(kwargs)
        if args:
            args[0] = args[0].clone()
        else:
            kwargs["hidden_states"] = kwargs["hidden_states"].clone()
        captured.append((args, kwargs))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    extra = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    try:
        with torch.no_grad():
            for batch in batches:
                with contextlib.suppress(_StopForward):
                    model(**batch, **extra)
    finally:
        handle.remove()
    return captured


BlockPruner = Callable[[int, dict[str, nn.Module], dict[str, LayerStats]], None]


def calibrate_blocks(
    model: nn.Module,
    batches: Sequence[Mapping[str, torch.Tensor]],
    prune_block: BlockPruner,
    *,
    stats: str = "full",
    skip: Sequence[str] = (),
    hessian_dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> None:
    """Run the stack block by block, calling ``prune_block(index, layers, stats)`` for every block.

    ``stats``: ``"full"`` accumulates ``XXᵀ`` (SparseGPT) in ``hessian_dtype``, ``"diag"`` only ``‖X_j‖²``
    (Wanda) in float64, ``"none"`` nothing (magnitude). ``prune_block`` modifies the block's layers in
    place (and may pop used entries of ``stats`` to free them early); the pruned block's outputs feed the
    next block. ``progress`` shows a tqdm bar over the blocks.
    """
    prefix, blocks = find_blocks(model)
    inputs = capture_block_inputs(model, blocks[0], batches)
    micro = MICRO_BATCH if _splits_exactly(blocks[0], inputs[0], MICRO_BATCH) else None
    for index, block in enumerate(tqdm(blocks, desc="calibrating blocks", disable=not progress, leave=False)):
        layers = prunable_layers(block, f"{prefix}.{index}", skip)
        layer_stats = _collect_stats(block, layers, inputs, stats, hessian_dtype, micro)
        _release_freed_memory()
        prune_block(index, layers, layer_stats)
        del layer_stats  # freed before the next block's statistics are allocated
        _broadcast_block(block)
        _run_block(block, inputs, micro, replace=True)
        _release_freed_memory()


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    glibc keeps freed blocks of a few MB in its heap, where the long-lived statistics and hidden
    states fragment it: measured on MiniLM, 30–60 MB of free heap stayed resident between blocks.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    libc = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None


def _collect_stats(
    block: nn.Module,
    layers: dict[str, nn.Module],
    inputs: list[tuple[list[Any], dict[str, Any]]],
    kind: str,
    hessian_dtype: torch.dtype,
    micro: int | None,
) -> dict[str, LayerStats]:
    """Input statistics of ``layers`` over every calibration batch, summed over ranks."""
    dtype = hessian_dtype if kind == "full" else torch.float64
    layer_stats = {n: LayerStats(kind, weight_matrix(m).shape[1], dtype=dtype) for n, m in layers.items()}
    handles = []
    if kind != "none":
        handles = [m.register_forward_hook(_stats_hook(layer_stats[n])) for n, m in layers.items()]
    try:
        _run_block(block, inputs, micro, replace=False)
    finally:
        for handle in handles:
            handle.remove()
    for layer in layer_stats.values():
        layer.all_reduce()
    return layer_stats


def _run_block(
    block: nn.Module, inputs: list[tuple[list[Any], dict[str, Any]]], micro: int | None, *, replace: bool
) -> None:
    """Run ``block`` on every captured batch, ``micro`` sequences at a time (``None``: whole batches);
    with ``replace`` its outputs overwrite the hidden states in place."""
    with torch.no_grad():
        for args, kwargs in inputs:
            hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, d)
            for part_args, part_kwargs, part in _micro_batches(args, kwargs, micro):
                out = block(*part_args, **part_kwargs)
                if (
                    replace
                ):  # in place: the long-lived inputs keep their memory, so the heap does not fragment
                    hidden[part].copy_(out[0] if isinstance(out, (tuple, list)) else out)


def _micro_batches(
    args: list[Any], kwargs: dict[str, Any], size: int | None
) -> list[tuple[list[Any], dict[str, Any], slice]]:
    """The block inputs cut into ``size`` sequences along the batch dim: every tensor of ≥ 2 dims whose
    first dim is the hidden states' batch size (masks, position ids, rotary cos/sin in tuples)."""
    batch = (args[0] if args else kwargs["hidden_states"]).shape[0]
    if size is None or batch <= size:
        return [(args, kwargs, slice(None))]

    def cut(value: Any, part: slice) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == batch:
            return value[part]
        if isinstance(value, (tuple, list)):
            return type(value)(cut(v, part) for v in value)
        return value

    parts = [slice(start, start + size) for start in range(0, batch, size)]
    return [([cut(a, p) for a in args], {k: cut(v, p) for k, v in kwargs.items()}, p) for p in parts]


def _splits_exactly(block: nn.Module, batch: tuple[list[Any], dict[str, Any]], size: int) -> bool:
    """Whether ``block`` gives the same outputs on ``size``-sequence pieces of ``batch`` as on all of it
    (a non-batch tensor that happens to lead with the batch size would be cut wrongly: then do not split)."""
    args, kwargs = batch
    with torch.no_grad():
        whole = block(*args, **kwargs)
        whole = whole[0] if isinstance(whole, (tuple, list)) else whole
        pieces = []
        try:
            for part_args, part_kwargs, _ in _micro_batches(args, kwargs, size):
                out = block(*part_args, **part_kwargs)
                pieces.append(out[0] if isinstance(out, (tuple, list)) else out)
        except (RuntimeError, ValueError, IndexError):  # pieces that do not even fit together
            return False
    return torch.allclose(torch.cat(pieces), whole, rtol=1e-4, atol=1e-5)


def _broadcast_block(block: nn.Module) -> None:
    if dist.is_available() and dist.is_initialized():
        with torch.no_grad():
            for param in block.parameters():
                dist.broadcast(param.data, src=0)


def _stats_hook(stats: LayerStats):
    def hook(_mod: nn.Module, inputs: tuple, _out: Any) -> None:
        stats.add(inputs[0])

    return hook


def is_conv1d(module: nn.Module) -> bool:
    """A transformers ``Conv1D`` (GPT-2): a Linear whose weight is stored transposed, (in, out)."""
    return type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None


def _skipped(name: str, skip: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, f"*{pat}*") for pat in skip)
