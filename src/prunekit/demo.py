"""The main job: LeNet-300-100 on real MNIST → 90% global magnitude pruning → masked fine-tune → report."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .api import prune
from .checkpoints import load_weights, save_weights
from .data import load_mnist, make_loader
from .report import build_report
from .training import evaluate, train
from .zoo import lenet_300_100


@dataclass(frozen=True)
class DemoConfig:
    """Hyper-parameters of the demo (documented budget: 8 dense epochs, 2 masked fine-tune epochs)."""

    sparsity: float = 0.9
    epochs: int = 8
    lr: float = 1e-3
    finetune_epochs: int = 2
    finetune_lr: float = 3e-4
    batch_size: int = 128
    seed: int = 0


def cache_dir() -> Path:
    """Where trained dense models are cached: ``$PRUNEKIT_CACHE`` or ``~/.cache/prunekit``."""
    return Path(os.environ.get("PRUNEKIT_CACHE", Path.home() / ".cache" / "prunekit"))


def run_demo(
    out_dir: str | os.PathLike[str], config: DemoConfig = DemoConfig(), *, progress: bool = True
) -> dict:
    """Run the demo, write masks, weights and reports to ``out_dir``, return the summary dict."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_loader = make_loader(load_mnist("train"), config.batch_size, shuffle=True, seed=config.seed)
    test_loader = make_loader(load_mnist("test"), 1000, shuffle=False)

    model, cached = trained_dense_model(config, train_loader, progress)
    dense_accuracy = evaluate(model, test_loader)

    result = prune(model, "magnitude", config.sparsity, scope="global")
    train(
        result.model,
        train_loader,
        epochs=config.finetune_epochs,
        lr=config.finetune_lr,
        seed=config.seed + 1,
        masks=result.masks,
        progress=progress,
    )
    pruned_accuracy = evaluate(result.model, test_loader)
    report = build_report(
        result.model,
        masks=result.masks,
        example_inputs=torch.zeros(1, 1, 28, 28),
        requested=config.sparsity,
        method="magnitude",
        scope="global",
        pattern="element",
    )

    result.masks.save(out / "masks.safetensors")
    save_weights(result.model, out / "pruned.safetensors")
    (out / "report.txt").write_text(report.to_text() + "\n")
    (out / "report.json").write_text(report.to_json() + "\n")
    summary = {
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "accuracy_drop_points": 100 * (dense_accuracy - pruned_accuracy),
        "sparsity": report.achieved_sparsity,
        "requested_sparsity": config.sparsity,
        "theoretical_speedup": report.theoretical_speedup,
        "dense_model_cached": cached,
        "seconds": time.perf_counter() - start,
        "out_dir": str(out),
        "config": asdict(config),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "report_text": report.to_text()}


def trained_dense_model(config: DemoConfig, loader: Any, progress: bool) -> tuple[torch.nn.Module, bool]:
    """The demo's trained dense LeNet-300-100 and whether it came from the cache (else trained, cached)."""
    torch.manual_seed(config.seed)
    model = lenet_300_100()
    key = f"lenet_300_100-mnist-e{config.epochs}-lr{config.lr:g}-b{config.batch_size}-s{config.seed}"
    path = cache_dir() / f"{key}-torch{torch.__version__}.safetensors"
    if path.is_file():
        try:
            return load_weights(model, path), True
        except ValueError:
            path.unlink()  # a corrupt cache entry is rebuilt, never trusted
    train(model, loader, epochs=config.epochs, lr=config.lr, seed=config.seed, progress=progress)
    save_weights(model, path)
    return model, False
