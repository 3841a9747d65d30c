"""Sparse CPU inference: Linear layers as CSR products, only where a measurement says it is faster.

``y = x·Wᵀ + b`` is computed as ``(W · xᵀ)ᵀ`` with ``W`` a CSR tensor (int32 row pointers and column
indices) through MKL's sparse kernels: ``torch.sparse.mm(W, xᵀ)`` for a batch, ``torch.mv(W, x)`` for a
single row (measured about 2× faster than ``mm`` with one column). ``F.linear`` with a sparse weight
is slower than dense and is never used. The break-even depends on shape, density, batch size, thread
count, machine load and the torch build, so :func:`sparsify_linears` measures, for each layer shape
and density, three kernels — dense, sparse at the current thread count, and sparse on one thread
(a memory-bound sparse product needs no second thread, and on a shared machine a multi-threaded one
stalls whenever another process holds a core) — and keeps the one with the lowest median time, a
sparse one only if both its median and its best time are < 90% of dense's (near the break-even one
noisy statistic alone flips the verdict). Verdicts are cached as JSON in ``prunekit.demo.cache_dir()``.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_positive_int
from ..demo import cache_dir
from ..masks import Masks
from .fileformat import _write_atomic

CACHE_FILE = "sparse_linear_breakeven.json"
BUCKET = 0.05  # densities are measured at the nearest multiple of this
SPEEDUP_MARGIN = 0.9  # sparse must take at most 90% of the dense time to be chosen


class SparseLinear(nn.Module):
    """Inference-only ``nn.Linear`` with a CSR weight: input ``(*, in_features)`` → ``(*, out_features)``.

    ``threads=1`` runs the sparse product on one thread by setting torch's process-wide intra-op thread
    count for its duration (restored after); do not run such a layer concurrently from several Python
    threads that rely on another thread count.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, threads: int | None = None) -> None:
        super().__init__()
        self.threads = threads  # intra-op threads for the sparse product; None: torch's current setting
        if weight.dim() != 2:
            raise ValueError(f"SparseLinear needs a 2-d (out, in) weight, got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        weight = weight.detach()
        keep = weight != 0  # (out, in)
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), keep.sum(1).cumsum(0)])
        self.register_buffer("crow_indices", crow.to(torch.int32))  # (out + 1,)
        self.register_buffer("col_indices", keep.nonzero()[:, 1].to(torch.int32))  # (nnz,)
        self.register_buffer("values", weight[keep])  # (nnz,), row-major
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear, threads: int | None = None) -> SparseLinear:
        """The same layer with its weight (zeros included as pruned) in CSR form."""
        return cls(linear.weight, linear.bias, threads)

    def csr_weight(self) -> torch.Tensor:
        """The ``(out, in)`` CSR weight built on the stored buffers (no copy)."""
        return torch.sparse_csr_tensor(
            self.crow_indices,
            self.col_indices,
            self.values,
            (self.out_features, self.in_features),
            check_invariants=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in)
        weight = self.csr_weight()
        with _intra_op_threads(self.threads):
            if rows.shape[0] == 1:
                out = torch.mv(weight, rows[0]).unsqueeze(0)  # (1, out)
            else:
                out = torch.sparse.mm(weight, rows.T).T  # (N, out)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        density = self.values.numel() / max(self.in_features * self.out_features, 1)
        threads = "" if self.threads is None else f", threads={self.threads}"
        shape = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"{shape}, density={density:.4f}{threads}"


def sparsify_linears(
    model: nn.Module,
    *,
    masks: Masks | None = None,
    batch_size: int = 1,
    policy: str = "measure",
    inplace: bool = False,
) -> nn.Module:
    """Replace ``nn.Linear`` layers by :class:`SparseLinear` where sparse is faster on this machine.

    ``masks`` are applied first (the result equals the dense masked model). ``policy="measure"`` uses
    :func:`best_kernel` for each layer at ``batch_size`` rows and the current thread count;
    ``"always"`` converts every Linear with at least one zero. Returns a new model unless ``inplace``.
    """
    check_choice(policy, "policy", ("measure", "always"))
    check_positive_int(batch_size, "batch_size")
    target = model if inplace else copy.deepcopy(model)
    if masks is not None:
        masks.apply(target, inplace=True)
    linears = [(n, m) for n, m in target.named_modules() if type(m) is nn.Linear]
    for name, layer in linears:
        density = int(layer.weight.count_nonzero()) / layer.weight.numel()
        if density == 1.0:
            continue
        kernel = "sparse" if policy == "always" else best_kernel(*layer.weight.shape, density, batch_size)
        if kernel != "dense":
            parent_name, _, child = name.rpartition(".")
            threads = 1 if kernel == "sparse-1-thread" else None
            setattr(target.get_submodule(parent_name), child, SparseLinear.from_linear(layer, threads))
    return target


def best_kernel(out_features: int, in_features: int, density: float, batch_size: int = 1) -> str:
    """``"dense"``, ``"sparse"`` or ``"sparse-1-thread"``: the cached choice for this layer shape,
    density bucket (nearest 0.05), batch, thread count and torch version.

    A missing entry is measured by :func:`measure_kernels` and stored in
    ``cache_dir() / "sparse_linear_breakeven.json"``. The sparse kernel with the lowest median wins
    only if its median and its minimum are both below 90% of dense's.
    """
    bucket = max(BUCKET, round(density / BUCKET) * BUCKET)
    key = (
        f"{out_features}x{in_features}|d{bucket:.2f}|b{batch_size}"
        f"|t{torch.get_num_threads()}|torch{torch.__version__}"
    )
    path = cache_dir() / CACHE_FILE
    cache = _read_cache(path)
    if not _valid_entry(cache.get(key)):
        timings = measure_kernels(out_features, in_features, bucket, batch_size)
        cache = {**_read_cache(path), key: timings}
        _write_atomic(path, json.dumps(cache, indent=1, sort_keys=True).encode())
    timings, dense = cache[key], cache[key]["dense"]
    fastest = min(timings, key=lambda name: timings[name]["median"])
    wins = all(timings[fastest][stat] < SPEEDUP_MARGIN * dense[stat] for stat in ("median", "min"))
    return fastest if wins else "dense"


def measure_kernels(
    out_features: int, in_features: int, density: float, batch_size: int, repeats: int = 30
) -> dict[str, dict[str, float]]:
    """Median and minimum seconds of one forward per kernel, for a random ``(out, in)`` weight.

    The kernels run alternately (dense, sparse, sparse-1-thread, dense, …) so all see the same load;
    ``sparse-1-thread`` is measured only when torch runs more than one thread.
    """
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, in_features, generator=g)  # (out, in)
    weight *= torch.rand(out_features, in_features, generator=g) < density
    x = torch.randn(batch_size, in_features, generator=g)  # (batch, in)
    sparse, sparse_1 = SparseLinear(weight, None), SparseLinear(weight, None, threads=1)
    kernels: dict[str, Callable[[], object]] = {
        "dense": lambda: F.linear(x, weight),
        "sparse": lambda: sparse(x),
    }
    if torch.get_num_threads() > 1:
        kernels["sparse-1-thread"] = lambda: sparse_1(x)
    times: dict[str, list[float]] = {name: [] for name in kernels}
    with torch.inference_mode():
        for i in range(repeats + 2):  # the first two rounds warm up
            for name, fn in kernels.items():
                start = time.perf_counter()
                fn()
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
    return {name: {"median": statistics.median(v), "min": min(v)} for name, v in times.items()}


@contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` intra-op threads (process-wide), then restore the setting."""
    previous = torch.get_num_threads()
    if threads is None or threads == previous:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _valid_entry(entry: object) -> bool:
    """An entry is ``{kernel: {"median": s, "min": s}}`` with a dense kernel; anything else is remeasured."""
    return (
        isinstance(entry, dict)
        and "dense" in entry
        and all(isinstance(t, dict) and {"median", "min"} <= t.keys() for t in entry.values())
    )


def _read_cache(path: Path) -> dict[str, dict[str, dict[str, float]]]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or corrupt: measure again
    return cache if isinstance(cache, dict) else {}


def _consume_beta_warning() -> None:
    """torch warns once per process that CSR is "beta"; take that one warning here, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = torch.ones(1, dtype=torch.int32)
        torch.sparse_csr_tensor(
            torch.tensor([0, 1], dtype=torch.int32), one * 0, torch.ones(1), (1, 1), check_invariants=False
        )


_consume_beta_warning()
