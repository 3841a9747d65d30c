"""A small classification trainer and evaluator, with optional masked training (pruned weights stay zero)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from prunekit._checks import check_choice
from prunekit.masks import MaskedTraining, Masks

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine")
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TrainHistory:
    """What :func:`train` measured.

    ``train_loss[e]`` is the mean cross-entropy (nats per sample) over epoch ``e``'s batches;
    ``val_accuracy[e]`` the accuracy in [0, 1] after epoch ``e`` (empty without a ``val_loader``);
    ``steps`` the number of optimizer steps taken.
    """

    train_loss: tuple[float, ...]
    val_accuracy: tuple[float, ...]
    steps: int


def train(
    model: nn.Module,
    loader: Batches,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "adam",
    lr_schedule: str = "cosine",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    masks: Masks | None = None,
    progress: bool = True,
    val_loader: Batches | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainHistory:
    """Train ``model`` in place with cross-entropy on ``(x, y)`` batches; y holds class indices (int64).

    ``optimizer`` is "adam", "adamw" or "sgd" (``momentum`` applies to "sgd" only). ``lr_schedule``
    "cosine" anneals the rate per step from ``lr`` towards 0 over all ``epochs`` (this needs a loader
    with a length); "constant" keeps ``lr``. With ``masks``, the masked entries are zeroed first and
    stay exactly zero through every step (:class:`MaskedTraining`).
    ``torch.manual_seed(seed)`` is called first; the loader's shuffling has its own generator.
    ``on_step(step)`` runs after each optimizer step with the 1-based count of steps so far.
    """
    _check_hyperparameters(epochs, lr, momentum, weight_decay)
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    check_choice(lr_schedule, "lr_schedule", LR_SCHEDULES)
    if masks is not None and not isinstance(masks, Masks):
        raise TypeError(f"masks must be a prunekit.masks.Masks or None, got {type(masks).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (none with requires_grad=True); nothing to train")
    torch.manual_seed(seed)
    opt = _build_optimizer(optimizer, params, lr, momentum, weight_decay)
    per_epoch = _num_batches(loader)
    total_steps = None if per_epoch is None else epochs * per_epoch
    scheduler = _build_scheduler(lr_schedule, opt, total_steps)
    losses: list[float] = []
    accuracies: list[float] = []
    steps = 0
    guard = MaskedTraining(model=model, masks=masks, optimizer=opt) if masks is not None else nullcontext()
    with guard, tqdm(total=total_steps, disable=not progress, leave=False) as bar:
        for epoch in range(epochs):
            bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
            loss, steps = _train_epoch(model, loader, opt, scheduler, bar, on_step, steps)
            losses.append(loss)
            if val_loader is not None:
                accuracies.append(evaluate(model, val_loader))
    return TrainHistory(train_loss=tuple(losses), val_accuracy=tuple(accuracies), steps=steps)


def _train_epoch(
    model: nn.Module,
    loader: Batches,
    opt: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    bar: tqdm,
    on_step: Callable[[int], None] | None,
    steps: int,
) -> tuple[float, int]:
    """One pass over ``loader`` after ``steps`` earlier steps; returns (mean loss per sample, steps now)."""
    device = next(p.device for p in model.parameters())
    model.train()
    total, count = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)  # mean over the batch
        loss.backward()
        opt.step()
        scheduler.step()
        steps += 1
        value = loss.item()
        total += value * len(y)
        count += len(y)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
        bar.update()
        if on_step is not None:
            on_step(steps)
    if count == 0:
        raise ValueError("loader yielded no batches; give train a non-empty loader")
    return total / count, steps


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` on ``(x, y)`` batches, in eval mode.

    Every submodule's train/eval flag is restored afterwards, also when mixed or when an error occurs.
    """
    modes = [(m, m.training) for m in model.modules()]
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    correct, count = 0, 0
    model.eval()
    try:
        for x, y in loader:
            logits = model(x.to(device))  # (batch, classes)
            correct += int((logits.argmax(dim=1) == y.to(device)).sum())
            count += len(y)
    finally:
        for module, mode in modes:
            module.training = mode
    if count == 0:
        raise ValueError("loader yielded no samples; give evaluate a non-empty loader")
    return correct / count


def _build_optimizer(
    name: str, params: list[nn.Parameter], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _build_scheduler(
    name: str, opt: torch.optim.Optimizer, total_steps: int | None
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step multiplier of the base rate: 1 ("constant") or ½(1 + cos(π·step/total_steps)) ("cosine")."""
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    if total_steps is None:
        raise ValueError(
            "lr_schedule='cosine' needs the number of steps, but the loader has no len(); "
            "pass a loader with a length (e.g. a DataLoader) or lr_schedule='constant'"
        )
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    )


def _check_hyperparameters(epochs: int, lr: float, momentum: float, weight_decay: float) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
    for name, value, ok, allowed in (
        ("lr", lr, lambda v: v > 0, "> 0, e.g. 1e-3"),
        ("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.9"),
        ("weight_decay", weight_decay, lambda v: v >= 0, ">= 0, e.g. 5e-4"),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a float {allowed}, got {type(value).__name__} {value!r}")
        if math.isnan(value) or not ok(value):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _num_batches(loader: Batches) -> int | None:
    """Batches per epoch when the loader knows it (for the progress bar total), else None."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
