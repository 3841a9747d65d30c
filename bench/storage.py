"""Compressed storage of pruned fp32 weights: bytes vs dense and vs the entropy bound.

What is measured:

* **random**: one fp32 matrix (1024×1024; ``--quick`` 512×512) of standard-normal values with exactly
  ``round(s·n)`` zeros at uniformly random positions, for s in 0 (the "never larger than dense"
  check), 50, 75, 90, 95, 98%. ``encode(w)`` picks the smallest encoding; the row gives its payload
  bytes, bits per weight, the entropy bound ``H(s) + (1 − s)·32`` bits per weight, the ratio to the
  bound (×bound) and the compression vs dense (÷dense). Every encoding is decoded and compared bit
  for bit.
* **real**: the trained LeNet-300-100 of the demo (8 epochs on MNIST, cached in
  ``prunekit.demo.cache_dir()``; trained once if missing) pruned by global magnitude to each sparsity.
  The whole state_dict (weights and dense biases) is encoded; the file columns compare
  ``save_compressed`` with the dense ``save_weights`` safetensors file, and the saved file is loaded
  back into a fresh LeNet-300-100 and compared bit for bit.

Targets (issue): never larger than dense + 1%; within 10% of the bound at 75–98%; ≥ 8× smaller than
dense at 90%; the 98%-sparse LeNet file ≤ 1/25 of the dense state_dict file.

Usage::

    python bench/storage.py            # full (1024×1024 random matrices)
    python bench/storage.py --quick    # ≤ 60 s (512×512)
    python bench/storage.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from prunekit import compute_masks, save_weights
from prunekit.data import load_mnist, make_loader
from prunekit.demo import DemoConfig, trained_dense_model
from prunekit.export import decode, encode, load_compressed, save_compressed, size_report
from prunekit.export.size import entropy_bound_bits
from prunekit.zoo import lenet_300_100

SPARSITIES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98)


def random_row(sparsity: float, side: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(side, side, generator=g)  # (side, side)
    zeros = round(sparsity * w.numel())
    w.view(-1)[torch.randperm(w.numel(), generator=g)[:zeros]] = 0
    encoded = encode(w)
    exact = torch.equal(decode(encoded).view(torch.int32), w.view(torch.int32))
    bound = entropy_bound_bits(w.numel(), w.numel() - zeros, 32) / 8
    return _row(sparsity, encoded.encoding, encoded.nbytes, 4 * w.numel(), bound, w.numel()) | {
        "exact": exact,
        "k": encoded.params.get("k"),
    }


def real_row(sparsity: float, dense: torch.nn.Module, tmp: Path) -> dict:
    model = dense
    if sparsity > 0:
        model = compute_masks(dense, "magnitude", sparsity, scope="global").apply(dense)
    report = size_report(model)
    dense_file = save_weights(model, tmp / "dense.safetensors").stat().st_size
    path = save_compressed(model, tmp / "compressed.safetensors")
    loaded = load_compressed(lenet_300_100(), path)
    exact = all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
    encodings = sorted({t.encoding for t in report.tensors if t.name.endswith("weight")})
    row = _row(
        sparsity, "+".join(encodings), report.bytes, report.dense_bytes, report.bound_bytes, report.numel
    )
    file_bytes = path.stat().st_size
    return row | {
        "file_bytes": file_bytes,
        "dense_file_bytes": dense_file,
        "file_ratio": dense_file / file_bytes,
        "exact": exact,
    }


def _row(sparsity: float, encoding: str, nbytes: int, dense: int, bound: float, numel: int) -> dict:
    return {
        "sparsity": sparsity,
        "encoding": encoding,
        "bytes": nbytes,
        "bits_per_weight": 8 * nbytes / numel,
        "bound_bits_per_weight": 8 * bound / numel,
        "vs_bound": nbytes / bound,
        "vs_dense": dense / nbytes,
    }


def checks(random_rows: list[dict], real_rows: list[dict]) -> dict[str, bool]:
    rows = random_rows + real_rows
    high = [r for r in rows if 0.75 <= r["sparsity"] <= 0.98]
    return {
        "never_larger_than_dense_plus_1pct": all(r["vs_dense"] >= 1 / 1.01 for r in rows)
        and all(r["file_ratio"] >= 1 / 1.01 for r in real_rows),
        "within_10pct_of_bound_at_75_to_98": all(r["vs_bound"] <= 1.10 for r in high),
        "at_least_8x_smaller_at_90": all(r["vs_dense"] >= 8 for r in rows if r["sparsity"] == 0.9),
        "lenet_98_file_at_most_1_25_of_dense": all(
            r["file_ratio"] >= 25 for r in real_rows if r["sparsity"] == 0.98
        ),
        "all_round_trips_exact": all(r["exact"] for r in rows),
    }


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    head = f"{'sparsity':>8} {'encoding':<17} {'bytes':>9} {'bits/w':>7} {'bound':>7} "
    head += f"{'×bound':>7} {'÷dense':>7}"
    file_cols = "file_bytes" in rows[0]
    print(head + (f" {'file':>9} {'dense file':>10} {'÷file':>6}" if file_cols else ""))
    for r in rows:
        line = (
            f"{r['sparsity']:>8.2f} {r['encoding']:<17} {r['bytes']:>9} {r['bits_per_weight']:>7.3f} "
            f"{r['bound_bits_per_weight']:>7.3f} {r['vs_bound']:>7.3f} {r['vs_dense']:>7.2f}"
        )
        if file_cols:
            line += f" {r['file_bytes']:>9} {r['dense_file_bytes']:>10} {r['file_ratio']:>6.1f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512×512 random matrices (≤ 60 s)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    side = 512 if args.quick else 1024
    random_rows = [random_row(s, side) for s in SPARSITIES]
    config = DemoConfig()  # the demo's dense model: loaded from the cache, trained only when missing
    loader = make_loader(load_mnist("train"), config.batch_size, shuffle=True, seed=config.seed)
    dense, _ = trained_dense_model(config, loader, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        real_rows = [real_row(s, dense, Path(tmp)) for s in SPARSITIES]
    print_table(f"random fp32 {side}×{side} (uniform random zeros)", random_rows)
    print_table("LeNet-300-100 (trained on MNIST), global magnitude pruning, whole state_dict", real_rows)
    summary = {
        "quick": args.quick,
        "random_side": side,
        "random": random_rows,
        "lenet_300_100": real_rows,
        "checks": checks(random_rows, real_rows),
        "seconds": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    print(f"\nchecks: {summary['checks']}  ({summary['seconds']:.1f} s)")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
