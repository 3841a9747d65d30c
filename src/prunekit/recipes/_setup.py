"""What every run needs before pruning: the model (pre-trained if asked), its data, and measurements."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..checkpoints import load_weights
from ..data import load_dataset, make_loader, subset
from ..masks import Masks
from ..metrics import count_nonzeros, count_parameters, dense_bytes, layer_macs, measure_latency, sparse_macs
from ..reporting import LayerSparsity, ModelMeasures
from ..training import evaluate, train
from ..zoo import get_model
from .schema import Recipe
from .sections import hf_directory, resolve_factory

log = logging.getLogger("prunekit")
TEST_SEED = 0  # the test subset never depends on the recipe's seed: accuracies compare across seeds


@dataclass
class Job:
    """A prepared run: the dense starting model, its example input and how to train and evaluate it."""

    recipe: Recipe
    progress: bool
    model: nn.Module
    example: Any
    evaluate: Callable[[nn.Module], dict[str, float]]
    build: Callable[[], nn.Module]
    train_set: TensorDataset | None = None
    val_set: TensorDataset | None = None
    test_set: TensorDataset | None = None
    calibration: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def loader(self, seed_offset: int = 0) -> DataLoader:
        """The training data, shuffled by the recipe's seed plus ``seed_offset``."""
        assert self.train_set is not None  # classification families only (checked by the recipe)
        seed = self.recipe.seed + seed_offset
        return make_loader(self.train_set, self.recipe.data.batch_size, shuffle=True, seed=seed)

    def finetune(self, model: nn.Module, masks: Masks | None, round_index: int = 0, **kwargs: Any) -> None:
        """Train ``model`` in place with the recipe's fine-tune budget (nothing without one)."""
        spec = self.recipe.finetune
        if spec is None or spec.epochs == 0:
            return
        log.info("fine-tuning %d epoch(s) (round %d)", spec.epochs, round_index)
        seed = self.recipe.seed + 1 + round_index
        train(
            model, self.loader(1 + round_index), epochs=spec.epochs, lr=spec.lr, optimizer=spec.optimizer,
            lr_schedule=spec.lr_schedule, weight_decay=spec.weight_decay, seed=seed, masks=masks,
            progress=self.progress, **kwargs,
        )  # fmt: skip


def build_model(recipe: Recipe) -> nn.Module:
    """The recipe's model, seeded by the recipe, with its weights file loaded (zoo or factory models)."""
    torch.manual_seed(recipe.seed)
    return construct(recipe)


def construct(recipe: Recipe) -> nn.Module:
    """The recipe's model from the current global RNG state (no seeding here)."""
    spec = recipe.model
    if spec.huggingface is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel

        return AutoModel.from_pretrained(str(hf_directory(spec.huggingface))).eval()
    factory = get_model if spec.zoo is not None else resolve_factory(spec.factory or "")
    model = factory(spec.zoo, **spec.args) if spec.zoo is not None else factory(**spec.args)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model.factory {spec.factory!r} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return load_weights(model, spec.weights) if spec.weights else model


def prepare(recipe: Recipe, progress: bool) -> Job:
    """Load the model and data; pre-train the dense model when the recipe has a ``pretrain`` budget."""
    model = build_model(recipe)
    if recipe.model.is_hf:
        from ._text import text_job_parts

        calibration, example, evaluate_fn = text_job_parts(recipe, model)
        return Job(
            recipe, progress, model, example, evaluate_fn, lambda: construct(recipe), calibration=calibration
        )
    data = recipe.data
    name = data.dataset or ""
    train_set = load_dataset(name, "train")
    if data.train_samples is not None:
        train_set = subset(train_set, min(data.train_samples, len(train_set)), recipe.seed)
    held_out = [load_dataset(name, split) for split in ("val", "test")]
    if data.test_samples is not None:
        held_out = [subset(s, min(data.test_samples, len(s)), TEST_SEED) for s in held_out]
    test_loader = make_loader(held_out[1], 1000, shuffle=False)

    def accuracy(m: nn.Module) -> dict[str, float]:
        return {"accuracy": 100.0 * evaluate(m, test_loader)}

    example = train_set.tensors[0][:1]
    job = Job(recipe, progress, model, example, accuracy, lambda: construct(recipe), train_set, *held_out)
    spec = recipe.pretrain
    if spec is not None and spec.epochs > 0:
        log.info("pre-training the dense model for %d epoch(s)", spec.epochs)
        train(
            model, job.loader(), epochs=spec.epochs, lr=spec.lr, optimizer=spec.optimizer,
            lr_schedule=spec.lr_schedule, weight_decay=spec.weight_decay, seed=recipe.seed, progress=progress,
        )  # fmt: skip
    return job


def measure(model: nn.Module, example: Any, metrics: dict[str, float]) -> ModelMeasures:
    """Parameters, nonzeros, dense and sparse MACs, bytes and a cheap median latency of ``model``."""
    dense = layer_macs(model, example)
    latency = measure_latency(model, example, warmup=2, repeats=10)
    return ModelMeasures(
        params=count_parameters(model),
        nonzeros=count_nonzeros(model),
        macs=sum(dense.values()),
        sparse_macs=sum(sparse_macs(model, dense).values()),
        dense_bytes=dense_bytes(model),
        latency_ms=1000.0 * latency["median_s"],
        metrics=metrics,
    )


def layer_rows(model: nn.Module, masks: Masks, requested: float | None) -> tuple[LayerSparsity, ...]:
    """Achieved sparsity of every masked parameter of ``model`` (``requested`` per layer, if any)."""
    params = dict(model.named_parameters())
    return tuple(
        LayerSparsity(name, params[name].numel(), int(torch.count_nonzero(params[name])), requested)
        for name in masks
    )
