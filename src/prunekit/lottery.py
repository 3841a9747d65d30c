"""Lottery tickets: iterative magnitude pruning (IMP) with rewinding, and its two controls.

Frankle & Carbin, "The Lottery Ticket Hypothesis", ICLR 2019; rewinding to iteration k: Frankle et al.,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020.

Round 0 trains the dense network from θ₀ (saving θ_k at iteration k). Round r ≥ 1 prunes ``prune_rate``
of the weights still remaining in each layer (globally with ``scope="global"``; the output layer at
``output_rate``) by magnitude of the trained weights, rewinds the survivors to θ_k (θ₀ for k = 0) and
retrains with the same budget. Controls, trained with the same budget in the same run: ``reinit`` (the
ticket's masks on a fresh initialisation, another seed) and ``random_prune`` (random masks with the
ticket's per-layer sparsity, on θ_k).

Everything is checkpointed under ``checkpoint_dir`` (safetensors + JSON, written atomically): masks,
θ₀/θ_k and the final weights of every run; each finished run's metrics; and, at the end of every
epoch, the weights, optimizer state and metric trace of the run in progress. A run killed
at any point resumes from its last epoch and produces exactly the results of an uninterrupted run:
every epoch's shuffling (and the global torch RNG, e.g. for dropout) is seeded by (seed, run, epoch), so
the RNG state at an epoch boundary is a function of the run and needs no saving.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from . import _checkpoint as ck
from ._checks import check_choice, check_positive_int
from .api import compute_masks
from .masks import MaskedTraining, Masks
from .selection import SCOPES
from .targets import prunable_parameters
from .training import OPTIMIZERS, _build_optimizer

CONTROLS = ("reinit", "random_prune")
KINDS = ("dense", "ticket", *CONTROLS)
_REINIT_SEED_OFFSET = 1_000  # reinit control of round r initialises with seed + 1000 + r


@dataclass(frozen=True)
class LotteryConfig:
    """IMP settings. Defaults follow the paper's LeNet-300-100 (Adam 1.2e-3, batch 60, 20 % / 10 %).

    ``epochs`` per training run (every round and control gets the same budget); validation and test
    accuracy is measured every ``eval_every`` iterations and at the end; the early-stopping iteration is
    the one with the best validation accuracy, and the test accuracy is measured there and at the end.
    """

    rounds: int = 15
    prune_rate: float = 0.2
    output_rate: float | None = 0.1
    scope: str = "layer"
    rewind_iteration: int = 0
    epochs: int = 2
    batch_size: int = 60
    lr: float = 1.2e-3
    optimizer: str = "adam"
    eval_every: int = 200
    seed: int = 0
    controls: tuple[str, ...] = CONTROLS

    def __post_init__(self) -> None:
        check_positive_int(self.rounds, "rounds")
        for name in ("prune_rate", "output_rate"):
            value = getattr(self, name)
            if value is None and name == "output_rate":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ValueError(
                    f"{name} must be a fraction of the remaining weights in (0, 1), e.g. 0.2, got {value!r}"
                    + ("; pass None to prune the output layer at prune_rate" if name == "output_rate" else "")
                )
        check_choice(self.scope, "scope", SCOPES)
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        if isinstance(self.rewind_iteration, bool) or not isinstance(self.rewind_iteration, int):
            raise TypeError(f"rewind_iteration must be an int >= 0 (0 = θ₀), got {self.rewind_iteration!r}")
        if self.rewind_iteration < 0:
            raise ValueError(f"rewind_iteration must be >= 0 (0 rewinds to θ₀), got {self.rewind_iteration}")
        for name in ("epochs", "batch_size", "eval_every"):
            check_positive_int(getattr(self, name), name)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr must be a float > 0, e.g. 1.2e-3, got {self.lr!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {self.seed!r}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown or len(set(self.controls)) != len(self.controls):
            raise ValueError(f"controls must be distinct names from {CONTROLS}, got {self.controls!r}")

    def sparsity(self, round_index: int, *, output: bool) -> float:
        """Sparsity after ``round_index`` rounds: 1 − (1 − rate)^round."""
        rate = self.output_rate if output and self.output_rate is not None else self.prune_rate
        return 1.0 - (1.0 - rate) ** round_index


@dataclass(frozen=True)
class RunResult:
    """One training run. Accuracies are in [0, 1]; ``trace`` holds (iteration, validation accuracy) pairs.

    ``test_at_early_stop`` is the test accuracy of the weights at ``early_stop_iteration``, the
    evaluation with the best validation accuracy (the earliest on ties).
    """

    name: str
    kind: str
    round: int
    remaining: float
    layer_remaining: dict[str, float]
    final_val: float
    final_test: float
    best_val: float
    early_stop_iteration: int
    test_at_early_stop: float
    iterations: int
    trace: tuple[tuple[int, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "trace": [list(t) for t in self.trace]}


@dataclass(frozen=True)
class LotteryResult:
    config: LotteryConfig
    runs: tuple[RunResult, ...]

    def of_kind(self, kind: str) -> list[RunResult]:
        """Runs of ``kind`` ("dense", "ticket", "reinit", "random_prune"), by round."""
        check_choice(kind, "kind", KINDS)
        return [r for r in self.runs if r.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {"config": dataclasses.asdict(self.config), "runs": [r.to_dict() for r in self.runs]}


OnEpoch = Callable[[str, int], None]


def find_ticket(
    model_fn: Callable[[], nn.Module],
    train: TensorDataset,
    val: TensorDataset,
    test: TensorDataset,
    config: LotteryConfig,
    checkpoint_dir: str | Path,
    *,
    resume: bool = False,
    on_epoch: OnEpoch | None = None,
) -> LotteryResult:
    """Run IMP with rewinding and the controls; return every run's metrics.

    ``model_fn()`` builds the architecture (its initialisation comes from ``torch.manual_seed`` set
    here). ``resume=True`` continues the run in ``checkpoint_dir`` (same config required); otherwise the
    folder must not hold a run yet. ``on_epoch(run_name, epoch)`` is called after each epoch's checkpoint.
    """
    if not isinstance(config, LotteryConfig):
        raise TypeError(f"config must be a LotteryConfig, got {type(config).__name__}")
    for label, dataset in (("train", train), ("val", val), ("test", test)):
        if not isinstance(dataset, TensorDataset) or len(dataset.tensors) != 2:
            raise TypeError(
                f"{label} must be a TensorDataset of (inputs, targets), got {type(dataset).__name__}"
            )
    run = _Run(model_fn, (train, val, test), config, Path(checkpoint_dir), on_epoch)
    run.open(resume)
    return run.execute()


@dataclass
class _Run:
    """The state of one IMP run on disk; ``execute`` walks the jobs, skipping finished ones."""

    model_fn: Callable[[], nn.Module]
    data: tuple[TensorDataset, TensorDataset, TensorDataset]
    config: LotteryConfig
    folder: Path
    on_epoch: OnEpoch | None
    done: dict[str, RunResult] = dataclasses.field(default_factory=dict)

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    def open(self, resume: bool) -> None:
        expected = dataclasses.asdict(self.config)
        expected["controls"] = list(self.config.controls)
        if self.state_file.exists():
            if not resume:
                raise ValueError(
                    f"checkpoint_dir {str(self.folder)!r} already holds a lottery run; pass resume=True "
                    "(CLI: --resume) to continue it, or choose another folder"
                )
            saved = ck.read_json(self.state_file)
            if saved["config"] != expected:
                raise ValueError(
                    f"cannot resume {str(self.folder)!r}: it was started with config {saved['config']}, "
                    f"not {expected}; resume with the same settings or choose another folder"
                )
            self.done = {r["name"]: _run_from_dict(r) for r in saved["runs"]}
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(self.config.seed)
        ck.write_tensors(self.folder / "init.safetensors", self.model_fn().state_dict())
        ck.write_json(self.state_file, {"config": expected, "runs": []})

    def execute(self) -> LotteryResult:
        self._job("dense", "dense", 0, None)
        for r in range(1, self.config.rounds + 1):
            masks = Masks.load(self.folder / f"masks_round{r:02d}.safetensors")
            self._job(f"ticket_{r:02d}", "ticket", r, masks)
            for control in self.config.controls:
                self._job(f"{control}_{r:02d}", control, r, masks)
        return LotteryResult(self.config, tuple(self.done.values()))  # in training order

    def _job(self, name: str, kind: str, round_index: int, masks: Masks | None) -> None:
        if name in self.done:
            return
        model = self._initial_model(kind, round_index)
        if kind == "random_prune":
            masks = _random_like(masks, self.config.seed * 7919 + round_index)
        job_index = len(self.done)
        result = _train_job(self, name, kind, round_index, job_index, model, masks)
        ck.write_tensors(self.folder / f"{name}_final.safetensors", model.state_dict())
        if kind in ("dense", "ticket") and round_index < self.config.rounds:
            self._next_masks(model, masks, round_index + 1)
        self.done[name] = result
        saved = ck.read_json(self.state_file)
        saved["runs"].append(result.to_dict())
        ck.write_json(self.state_file, saved)
        (self.folder / "in_progress.json").unlink(missing_ok=True)
        (self.folder / "in_progress.safetensors").unlink(missing_ok=True)

    def _initial_model(self, kind: str, round_index: int) -> nn.Module:
        if kind == "reinit":
            torch.manual_seed(self.config.seed + _REINIT_SEED_OFFSET + round_index)
            return self.model_fn()
        model = self.model_fn()
        source = "init" if kind == "dense" or self.config.rewind_iteration == 0 else "rewind"
        model.load_state_dict(ck.read_tensors(self.folder / f"{source}.safetensors"))
        return model

    def _next_masks(self, trained: nn.Module, masks: Masks | None, round_index: int) -> None:
        names = prunable_parameters(trained)
        overrides = None
        if self.config.output_rate is not None:
            overrides = {names[-1]: self.config.sparsity(round_index, output=True)}
        new = compute_masks(
            trained,
            "magnitude",
            self.config.sparsity(round_index, output=False),
            scope=self.config.scope,
            targets=names,
            overrides=overrides,
            prior=masks,
            on_collapse="ignore",
        )
        new.save(self.folder / f"masks_round{round_index:02d}.safetensors")


@dataclass
class _Progress:
    """A run's training state between epochs: iteration count, (iteration, val) trace, best weights."""

    iteration: int = 0
    trace: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    best_iteration: int = -1
    best_val: float = -1.0
    best_state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def record(self, model: nn.Module, val: TensorDataset) -> None:
        accuracy = _accuracy(model, val)
        self.trace.append((self.iteration, accuracy))
        if accuracy > self.best_val:  # the earliest best wins ties
            self.best_iteration, self.best_val = self.iteration, accuracy
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train_job(
    run: _Run, name: str, kind: str, round_index: int, job_index: int, model: nn.Module, masks: Masks | None
) -> RunResult:
    """Train one run with per-epoch checkpoints, resuming from the last one when it is this run's."""
    config, (train, val, test) = run.config, run.data
    optimizer = _build_optimizer(config.optimizer, list(model.parameters()), config.lr, 0.9, 0.0)
    progress_file, weights_file = run.folder / "in_progress.json", run.folder / "in_progress.safetensors"
    start_epoch, progress = 0, _Progress()
    if progress_file.exists() and ck.read_json(progress_file)["name"] == name:
        saved = ck.read_json(progress_file)
        tensors = ck.read_tensors(weights_file)
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ck.load_optimizer(optimizer, tensors, saved["optimizer"])
        start_epoch = saved["epoch"]
        progress = _Progress(
            saved["iteration"],
            [tuple(t) for t in saved["trace"]],
            saved["best_iteration"],
            saved["best_val"],
            {k[5:]: v for k, v in tensors.items() if k.startswith("best.")},
        )
    per_epoch = math.ceil(len(train) / config.batch_size)
    if kind == "dense" and config.rewind_iteration > config.epochs * per_epoch:
        raise ValueError(
            f"rewind_iteration={config.rewind_iteration} is past the end of training "
            f"({config.epochs * per_epoch} iterations); use a smaller rewind_iteration or more epochs"
        )
    holder = MaskedTraining(model, masks, optimizer) if masks is not None else None
    try:
        for epoch in range(start_epoch, config.epochs):
            _epoch(run, kind, model, optimizer, _epoch_seed(config, job_index, epoch), progress)
            opt_tensors, opt_plain = ck.optimizer_tensors(optimizer)
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"best.{k}": v for k, v in progress.best_state.items()})
            ck.write_tensors(weights_file, {**tensors, **opt_tensors})
            state = {k: v for k, v in dataclasses.asdict(progress).items() if k != "best_state"}
            ck.write_json(progress_file, {"name": name, "epoch": epoch + 1, **state, "optimizer": opt_plain})
            if run.on_epoch is not None:
                run.on_epoch(name, epoch + 1)
    finally:
        if holder is not None:
            holder.remove()
    if not progress.trace or progress.trace[-1][0] != progress.iteration:
        progress.record(model, val)
    final_test = _accuracy(model, test)
    best = copy.deepcopy(model)
    best.load_state_dict(progress.best_state)
    return _result(name, kind, round_index, model, masks, progress, final_test, _accuracy(best, test))


def _epoch(
    run: _Run, kind: str, model: nn.Module, optimizer: torch.optim.Optimizer, seed: int, progress: _Progress
) -> None:
    """One pass over the training set in an order fixed by ``seed``."""
    config, (train, val, _) = run.config, run.data
    x, y = train.tensors
    torch.manual_seed(seed)  # any randomness in the model (dropout) depends on (seed, run, epoch) only
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    model.train()
    for start in range(0, len(y), config.batch_size):
        batch = order[start : start + config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[batch]), y[batch]).backward()  # mean over the batch
        optimizer.step()
        progress.iteration += 1
        if kind == "dense" and progress.iteration == config.rewind_iteration:
            ck.write_tensors(run.folder / "rewind.safetensors", model.state_dict())
        if progress.iteration % config.eval_every == 0:
            progress.record(model, val)


def _result(
    name: str,
    kind: str,
    round_index: int,
    model: nn.Module,
    masks: Masks | None,
    progress: _Progress,
    final_test: float,
    best_test: float,
) -> RunResult:
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    counts = {n: int(masks[n].sum()) if masks is not None else params[n].numel() for n in names}
    return RunResult(
        name=name,
        kind=kind,
        round=round_index,
        remaining=sum(counts.values()) / sum(params[n].numel() for n in names),
        layer_remaining={n: counts[n] / params[n].numel() for n in names},
        final_val=progress.trace[-1][1],
        final_test=final_test,
        best_val=progress.best_val,
        early_stop_iteration=progress.best_iteration,
        test_at_early_stop=best_test,
        iterations=progress.iteration,
        trace=tuple(tuple(t) for t in progress.trace),
    )


def _random_like(masks: Masks, seed: int) -> Masks:
    """Random masks keeping, in every layer, as many weights as ``masks`` keeps there."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, mask in masks.items():
        keep = torch.zeros(mask.numel(), dtype=torch.bool)
        keep[torch.randperm(mask.numel(), generator=generator)[: int(mask.sum())]] = True
        out[name] = keep.view(mask.shape)
    return Masks(out)


def _epoch_seed(config: LotteryConfig, job_index: int, epoch: int) -> int:
    return (config.seed * 1_000_003 + job_index * 1_009 + epoch) % (2**63)


@torch.no_grad()
def _accuracy(model: nn.Module, dataset: TensorDataset, chunk: int = 2_000) -> float:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    x, y = dataset.tensors
    correct = sum(
        int((model(x[i : i + chunk]).argmax(1) == y[i : i + chunk]).sum()) for i in range(0, len(y), chunk)
    )
    for module, mode in modes:
        module.training = mode
    return correct / len(y)


def _run_from_dict(d: dict[str, Any]) -> RunResult:
    return RunResult(**{**d, "trace": tuple(tuple(t) for t in d["trace"])})
