"""What one pruning run produced, as plain frozen data: the input of every report format.

A :class:`RunRecord` is built by whoever ran the job (``prunekit run``, a sweep, a user's script)
and rendered by the report writers (JSON, Markdown, self-contained HTML). It holds numbers only —
no tensors, no modules — so it round-trips through JSON exactly (:meth:`RunRecord.to_dict` /
:meth:`RunRecord.from_dict`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("unstructured", "at_init", "lottery", "structured", "oneshot", "activations")


@dataclass(frozen=True)
class ModelMeasures:
    """Size, cost and quality of one model (before or after pruning).

    ``macs`` are dense multiply-accumulates per example input; ``sparse_macs`` skip zero weights;
    ``dense_bytes`` is the parameters' storage as dense tensors, ``stored_bytes`` what the exported
    files take; ``latency_ms`` is a median forward time; ``metrics`` holds quality figures by name
    (e.g. ``{"accuracy": 98.1}`` in percent, ``{"perplexity": 5.2}``).
    """

    params: int
    nonzeros: int
    macs: int | None = None
    sparse_macs: int | None = None
    dense_bytes: int | None = None
    stored_bytes: int | None = None
    latency_ms: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.params < 0 or not 0 <= self.nonzeros <= self.params:
            raise ValueError(
                f"ModelMeasures needs 0 <= nonzeros <= params, got nonzeros={self.nonzeros}, "
                f"params={self.params}"
            )


@dataclass(frozen=True)
class LayerSparsity:
    """One layer's weights after pruning; ``requested`` is the sparsity asked for, if any."""

    name: str
    params: int
    nonzeros: int
    requested: float | None = None

    @property
    def sparsity(self) -> float:
        """Achieved fraction of removed weights, in [0, 1]."""
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


@dataclass(frozen=True)
class ChannelChange:
    """A structurally pruned layer's output channels (or features, heads) before and after."""

    layer: str
    before: int
    after: int


@dataclass(frozen=True)
class Curve:
    """A plot of one or more series of (x, y) points, e.g. accuracy vs sparsity per method."""

    title: str
    x_label: str
    y_label: str
    series: Mapping[str, tuple[tuple[float, float], ...]]
    log_x: bool = False


@dataclass(frozen=True)
class RunRecord:
    """Everything a report shows about one run.

    Args:
        title: heading of the report.
        family: one of :data:`FAMILIES`.
        recipe: the resolved job description (plain JSON-able values).
        before, after: the model's measures before and after pruning (and fine-tuning).
        layers: per-layer achieved sparsity (unstructured families).
        plan: per-layer channel counts (structured family).
        curves: extra plots (accuracy vs sparsity, layer collapse, lottery rounds …).
        notes: free-text lines worth reading (warnings, what was skipped).
        outputs: files written next to the report, by kind (``{"model": "model.safetensors"}``).
    """

    title: str
    family: str
    recipe: Mapping[str, Any]
    before: ModelMeasures
    after: ModelMeasures
    layers: tuple[LayerSparsity, ...] = ()
    plan: tuple[ChannelChange, ...] = ()
    curves: tuple[Curve, ...] = ()
    notes: tuple[str, ...] = ()
    seed: int | None = None
    wall_s: float | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"RunRecord.family must be one of {', '.join(FAMILIES)}, got {self.family!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts/lists/numbers, ready for ``json.dumps``."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """The inverse of :meth:`to_dict` (e.g. a ``report.json`` read back)."""
        return cls(
            title=data["title"],
            family=data["family"],
            recipe=dict(data["recipe"]),
            before=ModelMeasures(**data["before"]),
            after=ModelMeasures(**data["after"]),
            layers=tuple(LayerSparsity(**row) for row in data.get("layers", ())),
            plan=tuple(ChannelChange(**row) for row in data.get("plan", ())),
            curves=tuple(
                Curve(**{**c, "series": {k: tuple(map(tuple, v)) for k, v in c["series"].items()}})
                for c in data.get("curves", ())
            ),
            notes=tuple(data.get("notes", ())),
            seed=data.get("seed"),
            wall_s=data.get("wall_s"),
            outputs=dict(data.get("outputs", {})),
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
