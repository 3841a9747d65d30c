"""The scorer contract: (model, parameter names, optional data) → one score per weight.

Higher score = more important = kept longer. Scores have the parameter's shape; selection prunes the
lowest. Scorers never change the model: any scorer that runs it restores weights, buffers, gradients
and train/eval mode through :func:`preserved`; only scores come out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._calling import call_model
from .._registry import Registry

Batch = tuple[Any, Any]
LossFn = Callable[[Any, Any], torch.Tensor]


def _cross_entropy(outputs: Any, targets: Any) -> torch.Tensor:
    return nn.functional.cross_entropy(outputs, targets)


@dataclass(frozen=True)
class ScoringInput:
    """What a scorer may read.

    Attributes:
        model: the network to score (left unchanged by every scorer).
        names: parameter names to score, e.g. ``("fc1.weight", "fc2.weight")``.
        data: iterable of ``(inputs, targets)`` batches; ``None`` for data-free scorers.
        loss_fn: ``loss_fn(model(inputs), targets) -> scalar``; cross-entropy by default.
        max_batches: read at most this many batches from ``data`` (``None`` = all).
        generator: source of randomness for stochastic scorers.
        masks: current keep-masks (``None`` = dense); scorers evaluate the masked network.
    """

    model: nn.Module
    names: tuple[str, ...]
    data: Iterable[Batch] | None = None
    loss_fn: LossFn = _cross_entropy
    max_batches: int | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    masks: Mapping[str, torch.Tensor] | None = None

    def parameters(self) -> dict[str, nn.Parameter]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self.names}

    def batches(self) -> Iterator[Batch]:
        """Yield up to ``max_batches`` batches, moved to the model's device."""
        if self.data is None:
            raise ValueError("this scorer needs data: pass data=<iterable of (inputs, targets) batches>")
        device = _device_of(self.model)
        count = 0
        for inputs, targets in self.data:
            if self.max_batches is not None and count >= self.max_batches:
                break
            yield _to(inputs, device), _to(targets, device)
            count += 1
        if count == 0:
            raise ValueError("data yielded no batches; pass a non-empty iterable of (inputs, targets)")


ScoreFn = Callable[[ScoringInput], Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class Scorer:
    """A registered criterion: ``fn`` maps a :class:`ScoringInput` to ``{name: scores}``."""

    name: str
    fn: ScoreFn
    needs_data: bool
    summary: str

    def __call__(self, request: ScoringInput) -> Mapping[str, torch.Tensor]:
        if self.needs_data and request.data is None:
            raise ValueError(
                f"scorer {self.name!r} needs data: pass data=<iterable of (inputs, targets) batches> "
                "(e.g. a DataLoader); data-free scorers are: "
                + ", ".join(n for n in SCORERS.names() if not SCORERS.get(n).needs_data)
            )
        return self.fn(request)


SCORERS: Registry[Scorer] = Registry("scorer")


def register_scorer(name: str, *, needs_data: bool) -> Callable[[ScoreFn], ScoreFn]:
    """Decorator registering ``fn(request: ScoringInput) -> {name: scores}`` under ``name``.

    The first line of ``fn``'s docstring is shown by ``prunekit methods``.
    """

    def wrap(fn: ScoreFn) -> ScoreFn:
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        SCORERS.register(name, Scorer(name=name, fn=fn, needs_data=needs_data, summary=summary))
        return fn

    return wrap


def get_scorer(name: str) -> Scorer:
    return SCORERS.get(name)


class LazyScores(Mapping[str, torch.Tensor]):
    """Scores computed on access, so selection over a huge model never holds them all at once."""

    def __init__(self, shapes: Mapping[str, torch.Size], compute: Callable[[str], torch.Tensor]) -> None:
        self.shapes = dict(shapes)
        self._compute = compute

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.shapes:
            raise KeyError(name)
        return self._compute(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


@contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Restore parameters, buffers, ``.grad`` and every module's train/eval mode on exit."""
    modes = {m: m.training for m in model.modules()}
    state = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    grads = {p: (None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()}
    try:
        yield
    finally:
        with torch.no_grad():
            for key, tensor in model.state_dict(keep_vars=True).items():
                tensor.copy_(state[key])
        for param, grad in grads.items():
            param.grad = grad
        for module, mode in modes.items():
            module.training = mode


@contextmanager
def masked_view(request: ScoringInput) -> Iterator[None]:
    """Zero the pruned entries of ``request.masks`` for the duration (restored by :func:`preserved`)."""
    if request.masks:
        params = dict(request.model.named_parameters())
        with torch.no_grad():
            for name, mask in request.masks.items():
                params[name].masked_fill_(~mask.to(params[name].device), 0)
    yield


def accumulate_gradients(request: ScoringInput, reduce: Callable[[str, torch.Tensor], None]) -> int:
    """Run forward/backward per batch; call ``reduce(name, grad)`` for each scored parameter.

    Returns the number of batches read. Gradients are cleared before every batch.
    """
    params = request.parameters()
    count = 0
    with preserved(request.model), masked_view(request):
        for inputs, targets in request.batches():
            for p in params.values():
                p.grad = None
            loss = request.loss_fn(call_model(request.model, inputs), targets)
            loss.backward()
            for name, p in params.items():
                reduce(name, torch.zeros_like(p) if p.grad is None else p.grad.detach())
            count += 1
    return count


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    return value
