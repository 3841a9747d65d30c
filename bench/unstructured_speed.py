"""Global magnitude pruning of a ≥100M-parameter model: prunekit vs ``torch.nn.utils.prune``.

What is measured, in the same run:

* **prunekit**: ``compute_masks(model, "magnitude", 0.9, scope="global")`` (selection) and then
  ``masks.apply(model, inplace=True)`` (permanent zeros); ``select`` = the first, ``total`` = both.
* **torch**: ``prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.9)``,
  which both selects and applies (it re-parametrises every layer as ``weight_orig * weight_mask``).
  ``prune.remove`` (needed for a permanent, plain model) is timed separately and not included.

The speed-up compares like with like: torch's call against prunekit's select + apply.

Method:

* Every measurement runs in a fresh Python process (this script re-invoked with ``--worker``), so no
  method inherits allocator state, warm caches or freed pages from another. Repeats alternate the two
  methods (prunekit, torch, prunekit, torch, …); the table reports medians.
* The model (``nn.Linear`` layers, float32, 2 threads) is built on the ``meta`` device, materialised
  with ``to_empty`` and filled in place with seeded normal weights (std = fan_in^-½), so building it
  allocates nothing beyond the model itself. Every process builds the identical model.
* Peak extra memory = peak resident set size during the operation minus the resident set size just
  before it (after building the model and ``gc.collect()``). The kernel's high-water mark is reset by
  writing ``5`` to ``/proc/self/clear_refs``; afterwards ``VmHWM`` in ``/proc/self/status`` is the exact
  peak since the reset. Where that reset is unavailable, a thread samples ``VmRSS`` every 2 ms instead
  (a lower bound; the JSON says which method was used). MiB = 2^20 bytes.
* Correctness is checked on the measured runs: both methods must prune exactly round(0.9·N) of the
  N prunable weights; the masks of the first prunekit and the first torch run are compared. Float32
  normal weights of a 100M-parameter model do tie (the same |w| occurs several times), and torch's
  ``topk`` breaks ties at the threshold arbitrarily, while prunekit prunes the earliest first; so the
  summary reports exact equality (``masks_equal``), the number of differing entries, and whether all
  differences are among weights whose |w| equals the threshold value (``masks_equal_up_to_ties``).
* ``loadavg_1min`` (before, after) records other work on the machine: timings taken while other
  processes compete for the cores are slower and noisier, for both methods.

Usage::

    python bench/unstructured_speed.py            # full: 109M parameters, 3 repeats per method
    python bench/unstructured_speed.py --quick    # ≤ 60 s: 41.9M parameters, 1 repeat per method
    python bench/unstructured_speed.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import nn

SPARSITY = 0.9
SEED = 0
THREADS = 2
# (in_features, out_features) of each nn.Linear: square 4096² blocks plus odd shapes.
FULL_LAYERS = [(1000, 4096)] + [(4096, 4096)] * 6 + [(4096, 1027), (1027, 10)]  # 109.0M parameters
QUICK_LAYERS = [(1000, 4096)] + [(4096, 4096)] * 2 + [(4096, 1027), (1027, 10)]  # 41.9M parameters
SPEEDUP_TARGET = 5.0  # torch time / prunekit time, at least
MEMORY_TARGET = 0.3  # prunekit peak extra memory / torch peak extra memory, at most


# -- the model ---------------------------------------------------------------------------------
def build_model(layers: list[tuple[int, int]]) -> nn.Sequential:
    """Linear stack with seeded normal weights, filled in place (no temporaries)."""
    with torch.device("meta"):
        model = nn.Sequential(*[nn.Linear(i, o) for i, o in layers])
    model = model.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for layer in model:
            layer.weight.normal_(0.0, layer.in_features**-0.5, generator=generator)  # (out, in)
            layer.bias.normal_(0.0, 0.01, generator=generator)
    return model


# -- memory ------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


class PeakRss:
    """Peak resident memory above the level at ``start()``, in bytes."""

    def __init__(self) -> None:
        self.method = "VmHWM after clear_refs"
        self._peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        gc.collect()
        self._base_kib = _status_kib("VmRSS")
        if not self._reset_hwm():
            self.method = "VmRSS sampled every 2 ms"
            self._peak_kib = self._base_kib
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def stop(self) -> int:
        if self._thread is None:
            peak = _status_kib("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak_kib, _status_kib("VmRSS"))
        return max(peak - self._base_kib, 0) * 1024

    def _reset_hwm(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return _status_kib("VmHWM") <= self._base_kib + 1024  # reset took effect (1 MiB slack)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak_kib = max(self._peak_kib, _status_kib("VmRSS"))


# -- one measurement, in a fresh process -------------------------------------------------------
def run_worker(method: str, layers: list[tuple[int, int]], save_to: str | None) -> dict:
    torch.set_num_threads(THREADS)
    model = build_model(layers)
    weights = [(layer, "weight") for layer in model]
    if method == "prunekit":
        import prunekit  # imported before timing, like torch.nn.utils.prune

        peak = PeakRss()
        peak.start()
        start = time.perf_counter()
        masks = prunekit.compute_masks(model, "magnitude", SPARSITY, scope="global")
        selected = time.perf_counter()
        masks.apply(model, inplace=True)
        end = time.perf_counter()
        extra = peak.stop()
        pruned_masks = [~masks[f"{i}.weight"] for i in range(len(model))]
        result = {"select_s": selected - start, "total_s": end - start}
        zeroed = all(bool((layer.weight[p] == 0).all()) for layer, p in zip(model, pruned_masks, strict=True))
        result["pruned_are_zero"] = zeroed
    else:
        from torch.nn.utils import prune

        peak = PeakRss()
        peak.start()
        start = time.perf_counter()
        prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=SPARSITY)
        end = time.perf_counter()
        extra = peak.stop()
        pruned_masks = [layer.weight_mask == 0 for layer in model]
        result = {"total_s": end - start, **_threshold_ties(model, pruned_masks)}
        start = time.perf_counter()
        for layer, name in weights:
            prune.remove(layer, name)
        result["remove_s"] = time.perf_counter() - start
    result.update(
        peak_extra_bytes=extra,
        memory_method=peak.method,
        pruned=sum(int(p.sum()) for p in pruned_masks),
        prunable=sum(p.numel() for p in pruned_masks),
        params=sum(p.numel() for p in model.parameters()),
    )
    if save_to:
        torch.save(torch.cat([p.flatten() for p in pruned_masks]), save_to)
    return result


def _threshold_ties(model: nn.Sequential, pruned: list[torch.Tensor]) -> dict:
    """Entries whose |w| equals the largest pruned |w| (torch may break those ties either way)."""
    scores = [layer.weight_orig.detach().abs() for layer in model]
    threshold = max(float(s[p].max()) for s, p in zip(scores, pruned, strict=True) if p.any())
    ties = torch.cat([(s == threshold).flatten() for s in scores])
    return {"threshold": threshold, "tie_positions": ties.nonzero().flatten().tolist()}


def spawn_worker(method: str, quick: bool, save_to: str | None) -> dict:
    command = [sys.executable, __file__, "--worker", method] + (["--quick"] if quick else [])
    if save_to:
        command += ["--save-masks", save_to]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{method} worker failed (exit {done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the benchmark -----------------------------------------------------------------------------
def benchmark(quick: bool, repeats: int) -> dict:
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"prunekit": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {m: str(Path(tmp) / f"{m}.pt") for m in runs}
        for repeat in range(repeats):
            for method in runs:
                runs[method].append(spawn_worker(method, quick, paths[method] if repeat == 0 else None))
        ours = torch.load(paths["prunekit"], weights_only=True)
        theirs = torch.load(paths["torch"], weights_only=True)
    differing = (ours != theirs).nonzero().flatten()
    ties = set(runs["torch"][0]["tie_positions"])
    summary = summarise(runs, quick, differing, ties)
    summary["wall_s"] = round(time.perf_counter() - start, 1)
    summary["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # other work running?
    return summary


def summarise(runs: dict[str, list[dict]], quick: bool, differing: torch.Tensor, ties: set[int]) -> dict:
    def median(method: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[method])

    ours = runs["prunekit"][0]
    n, k = ours["prunable"], round(SPARSITY * ours["prunable"])
    mib = 1 << 20
    summary = {
        "params": ours["params"],
        "prunable": n,
        "requested_sparsity": SPARSITY,
        "sparsity": ours["pruned"] / n,
        "sparsity_exact": all(r["pruned"] == k for rs in runs.values() for r in rs),
        "prunekit_select_s": round(median("prunekit", "select_s"), 4),
        "prunekit_total_s": round(median("prunekit", "total_s"), 4),
        "torch_prune_s": round(median("torch", "total_s"), 4),
        "torch_remove_s": round(median("torch", "remove_s"), 4),
        "speedup": round(median("torch", "total_s") / median("prunekit", "total_s"), 2),
        "speedup_select_only": round(median("torch", "total_s") / median("prunekit", "select_s"), 2),
        "prunekit_peak_extra_mb": round(median("prunekit", "peak_extra_bytes") / mib, 1),
        "torch_peak_extra_mb": round(median("torch", "peak_extra_bytes") / mib, 1),
        "memory_ratio": round(
            median("prunekit", "peak_extra_bytes") / median("torch", "peak_extra_bytes"), 4
        ),
        "masks_equal": differing.numel() == 0,
        "mask_mismatches": differing.numel(),
        "threshold_ties": len(ties),
        "masks_equal_up_to_ties": set(differing.tolist()) <= ties,
        "pruned_are_zero": all(r["pruned_are_zero"] for r in runs["prunekit"]),
        "repeats": len(runs["prunekit"]),
        "prunekit_total_s_all": [round(r["total_s"], 4) for r in runs["prunekit"]],
        "torch_prune_s_all": [round(r["total_s"], 4) for r in runs["torch"]],
        "memory_method": ours["memory_method"],
        "quick": quick,
        "threads": THREADS,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    summary["meets_targets"] = (
        summary["speedup"] >= SPEEDUP_TARGET and summary["memory_ratio"] <= MEMORY_TARGET
    )
    return summary


def print_table(s: dict) -> None:
    print(
        f"global magnitude pruning, {s['params'] / 1e6:.1f}M parameters "
        f"({s['prunable'] / 1e6:.1f}M prunable), "
        f"sparsity {s['requested_sparsity']} → achieved {s['sparsity']:.6f} (exact: {s['sparsity_exact']}); "
        f"{s['threads']} threads, median of {s['repeats']} fresh process(es) each"
    )
    rows = [
        ("prunekit compute_masks", s["prunekit_select_s"], s["prunekit_peak_extra_mb"]),
        ("prunekit compute_masks + apply", s["prunekit_total_s"], s["prunekit_peak_extra_mb"]),
        ("torch prune.global_unstructured", s["torch_prune_s"], s["torch_peak_extra_mb"]),
    ]
    print(f"{'method':<34}{'time (s)':>10}{'peak extra (MiB)':>18}")
    for name, seconds, mib in rows:
        print(f"{name:<34}{seconds:>10.3f}{mib:>18.1f}")
    print(
        f"speed-up {s['speedup']:.1f}× (target ≥ 5×), memory ratio {s['memory_ratio']:.3f} (target ≤ 0.3); "
        f"masks equal: {s['masks_equal']} ({s['mask_mismatches']} differ; {s['threshold_ties']} weights "
        f"tie at the threshold; equal up to ties: {s['masks_equal_up_to_ties']}); "
        f"torch prune.remove afterwards: {s['torch_remove_s']:.3f} s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, one repeat (≤ 60 s)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--repeats", type=int, default=None, help="fresh processes per method")
    parser.add_argument("--worker", choices=["prunekit", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--save-masks", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    layers = QUICK_LAYERS if args.quick else FULL_LAYERS
    if args.worker:
        print(json.dumps(run_worker(args.worker, layers, args.save_masks)))
        return 0
    repeats = args.repeats or (1 if args.quick else 3)
    if repeats < 1:
        parser.error(f"--repeats must be at least 1, got {repeats}")
    summary = benchmark(args.quick, repeats)
    print_table(summary)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
