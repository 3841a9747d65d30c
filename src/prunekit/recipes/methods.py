"""The ``method`` section of a recipe: one frozen dataclass per pruning family."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..activations import PER_CHOICES
from ..graph import IMPORTANCES
from ..lottery import CONTROLS, LotteryConfig
from ..oneshot import METHODS as ONESHOT_METHODS
from ..oneshot import OneShotConfig
from ..patterns import NM, Element, parse_pattern
from ..scoring import SCORERS
from ..selection import COLLAPSE_POLICIES, SCOPES
from ..structured_schedule import SCHEDULES as STRUCTURED_SCHEDULES
from ._parse import check_fraction, check_one_of, check_positive, fail, wrapped

UNSTRUCTURED_SCHEDULES = ("oneshot", "iterative", "gradual")
ACTIVATION_MODES = ("topk", "threshold")


@dataclass(frozen=True)
class Unstructured:
    """Score → select → apply masks; ``schedule`` oneshot, iterative (``steps`` rounds of prune →
    fine-tune) or gradual (cubic, ``steps`` pruning steps spread over the fine-tuning)."""

    FAMILY: ClassVar[str] = "unstructured"
    scorer: str = "magnitude"
    sparsity: float | None = None
    scope: str = "global"
    pattern: str = "element"
    schedule: str = "oneshot"
    steps: int = 1
    batches: int = 4
    ignore: tuple[str, ...] = ()
    on_collapse: str = "warn"

    def __post_init__(self) -> None:
        check_one_of(self.scorer, "scorer", SCORERS.names(), "scorer")
        check_one_of(self.scope, "scope", SCOPES, "scope")
        check_one_of(self.schedule, "schedule", UNSTRUCTURED_SCHEDULES, "schedule")
        check_one_of(self.on_collapse, "on_collapse", COLLAPSE_POLICIES, "on_collapse policy")
        check_fraction(self.sparsity, "sparsity")
        check_positive(self.steps, "steps")
        check_positive(self.batches, "batches")
        pattern = wrapped("pattern", lambda: parse_pattern(self.pattern))
        if isinstance(pattern, NM):
            if self.sparsity is not None:
                fail(
                    "sparsity",
                    f"pattern {self.pattern!r} fixes the sparsity at {pattern.sparsity}; remove it",
                )
            if self.schedule != "oneshot":
                fail(
                    "schedule",
                    f"an N:M pattern is pruned one-shot; use schedule: oneshot, got {self.schedule!r}",
                )
        elif self.sparsity is None:
            fail("sparsity", "missing; give the fraction of weights removed, e.g. sparsity: 0.9")
        if self.schedule != "oneshot" and not isinstance(pattern, Element):
            fail(
                "pattern", f"schedule {self.schedule!r} supports pattern: element only, got {self.pattern!r}"
            )

    @property
    def target(self) -> float:
        pattern = parse_pattern(self.pattern)
        return pattern.sparsity if isinstance(pattern, NM) else float(self.sparsity or 0.0)


@dataclass(frozen=True)
class AtInit:
    """Masks at initialisation (SNIP, GraSP, SynFlow …) over ``iterations`` rounds, then training.

    ``collapse_curve``: log10 compressions (e.g. ``[1, 2, 3, 4]``) at which the same scorer's masks are
    also computed, for a layer-collapse curve (share of layers with weights left) in the report.
    """

    FAMILY: ClassVar[str] = "at_init"
    scorer: str = "synflow"
    sparsity: float | None = None
    compression: float | None = None
    iterations: int = 1
    scope: str = "global"
    batches: int = 1
    collapse_curve: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        check_one_of(self.scorer, "scorer", SCORERS.names(), "scorer")
        check_one_of(self.scope, "scope", SCOPES, "scope")
        if (self.sparsity is None) == (self.compression is None):
            fail(
                "sparsity", "give exactly one of sparsity (e.g. 0.99) or compression (dense / kept, e.g. 100)"
            )
        check_fraction(self.sparsity, "sparsity")
        if self.compression is not None and not self.compression >= 1:
            fail("compression", f"must be >= 1 (dense ÷ remaining weights), got {self.compression}")
        check_positive(self.iterations, "iterations")
        check_positive(self.batches, "batches")
        for i, x in enumerate(self.collapse_curve):
            if not 0 < x <= 12:
                fail(f"collapse_curve[{i}]", f"must be a log10 compression in (0, 12] (2 = 100×), got {x}")

    @property
    def target(self) -> float:
        return self.sparsity if self.sparsity is not None else 1.0 - 1.0 / float(self.compression or 1.0)


@dataclass(frozen=True)
class Lottery:
    """Iterative magnitude pruning with rewinding to iteration ``rewind_iteration`` (0 = θ₀)."""

    FAMILY: ClassVar[str] = "lottery"
    rounds: int = 3
    prune_rate: float = 0.2
    output_rate: float | None = 0.1
    scope: str = "layer"
    rewind_iteration: int = 0
    epochs: int = 1
    lr: float = 1.2e-3
    batch_size: int = 60
    eval_every: int = 200
    controls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_positive(self.rounds, "rounds")
        for control in self.controls:
            check_one_of(control, "controls", CONTROLS, "control")
        wrapped("", lambda: self.config(0))

    def config(self, seed: int) -> LotteryConfig:
        return LotteryConfig(**_values(self), seed=seed)

    @property
    def target(self) -> float:
        return 1.0 - (1.0 - self.prune_rate) ** self.rounds


@dataclass(frozen=True)
class Structured:
    """Remove ``ratio`` of every group's channels (``steps`` > 1: iteratively, fine-tuning in between)."""

    FAMILY: ClassVar[str] = "structured"
    ratio: float | None = None
    importance: str = "l1"
    round_to: int = 1
    ignore: tuple[str, ...] = ()
    input_shape: tuple[int, ...] | None = None
    steps: int = 1
    schedule: str = "exponential"
    global_ranking: bool = False

    def __post_init__(self) -> None:
        if self.ratio is None:
            fail("ratio", "missing; give the fraction of channels removed per group, e.g. ratio: 0.5")
        check_fraction(self.ratio, "ratio", "the fraction of channels removed")
        check_one_of(self.importance, "importance", IMPORTANCES.names(), "importance")
        check_one_of(self.schedule, "schedule", STRUCTURED_SCHEDULES, "schedule")
        check_positive(self.round_to, "round_to")
        check_positive(self.steps, "steps")
        if self.input_shape is not None and (not self.input_shape or min(self.input_shape) < 1):
            fail("input_shape", f"must be positive ints such as [1, 1, 28, 28], got {list(self.input_shape)}")


@dataclass(frozen=True)
class OneShot:
    """Post-training pruning of a transformer from calibration text (magnitude, Wanda, SparseGPT)."""

    FAMILY: ClassVar[str] = "oneshot"
    method: str = "sparsegpt"
    sparsity: float | None = 0.5
    pattern: str = "element"
    allocation: str = "uniform"
    skip: tuple[str, ...] = ()
    blocksize: int = 128

    def __post_init__(self) -> None:
        check_one_of(self.method, "method", ONESHOT_METHODS, "one-shot method")
        check_fraction(self.sparsity, "sparsity")
        wrapped("", self.config)

    def config(self) -> OneShotConfig:
        return OneShotConfig(**_values(self))

    @property
    def target(self) -> float:
        return self.config().target


@dataclass(frozen=True)
class Activations:
    """Ephemeral activation pruning (:mod:`prunekit.activations`); the weights are never changed.

    ``layers``: module names or globs; ``types``: module classes (``Linear``, ``torch.nn.ReLU``,
    ``package.module:Class``). ``mode: topk`` zeroes the fraction ``sparsity`` of every sample's (or
    token's) activations; ``mode: threshold`` zeroes |a| below ``threshold``, or below per-layer
    thresholds calibrated on ``calibration_samples`` training samples to realise ``sparsity``.
    ``sweep``: more top-k fractions, measured for an accuracy curve.
    """

    FAMILY: ClassVar[str] = "activations"
    layers: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    mode: str = "topk"
    per: str = "sample"
    sparsity: float | None = None
    threshold: float | None = None
    calibration_samples: int | None = None
    sweep: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.layers and not self.types:
            fail("layers", "missing; give module names or globs (e.g. [fc1, fc2]) and/or types: [Linear]")
        for i, name in enumerate(self.types):
            module_type(name, f"types[{i}]")
        check_one_of(self.mode, "mode", ACTIVATION_MODES, "mode")
        check_one_of(self.per, "per", PER_CHOICES, "per")
        check_fraction(self.sparsity, "sparsity", "the fraction of activations zeroed")
        if self.mode == "topk" and self.sparsity is None:
            fail("sparsity", "missing; mode topk needs the fraction of activations zeroed, e.g. 0.5")
        if self.mode == "topk" and self.threshold is not None:
            fail("threshold", "applies to mode: threshold only; remove it or set mode: threshold")
        if self.mode == "threshold" and (self.sparsity is None) == (self.threshold is None):
            fail("sparsity", "mode threshold needs exactly one of sparsity (calibrated) or threshold (fixed)")
        if self.threshold is not None and not self.threshold >= 0:
            fail("threshold", f"must be >= 0 (|a| below it is zeroed), got {self.threshold}")
        if self.calibration_samples is not None and not self.calibrates:
            fail("calibration_samples", "applies to mode: threshold with sparsity (calibration) only")
        check_positive(self.calibration_samples, "calibration_samples")
        if self.sweep and self.mode != "topk":
            fail("sweep", "lists top-k fractions; it applies to mode: topk only")
        for i, fraction in enumerate(self.sweep):
            check_fraction(fraction, f"sweep[{i}]", "a fraction of activations zeroed")

    @property
    def calibrates(self) -> bool:
        """Whether per-layer thresholds are calibrated on training samples."""
        return self.mode == "threshold" and self.sparsity is not None

    @property
    def samples(self) -> int:
        """Training samples used for calibration (default 256)."""
        return self.calibration_samples or 256

    @property
    def module_types(self) -> tuple[type[nn.Module], ...]:
        return tuple(module_type(name, f"types[{i}]") for i, name in enumerate(self.types))


def module_type(name: str, field: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass named ``Linear`` (in ``torch.nn``), ``a.b.Class`` or ``a.b:Class``."""
    module_name, _, attr = name.rpartition(":") if ":" in name else name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name or "torch.nn"), attr, None)
    except ImportError:
        found = None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        fail(field, f"{name!r} is not an nn.Module class; e.g. Linear, ReLU, torch.nn.Conv2d, pkg.mod:Block")
    return found


def _values(spec: object) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}  # type: ignore[arg-type]


FAMILIES = {cls.FAMILY: cls for cls in (Unstructured, AtInit, Lottery, Structured, OneShot, Activations)}
MethodSpec = Unstructured | AtInit | Lottery | Structured | OneShot | Activations
