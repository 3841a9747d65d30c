"""The tables every report format shows, as strings: one source for Markdown, HTML and the plots."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import _format as fmt
from .record import ChannelChange, LayerSparsity, ModelMeasures, RunRecord

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]
"""A header and its rows, every cell already formatted."""


@dataclass(frozen=True)
class Measure:
    """One size or cost of the model before and after pruning, with how to print it."""

    label: str
    before: float
    after: float
    show: Callable[[float], str]
    fewer: str
    more: str

    @property
    def change(self) -> str:
        """E.g. ``4.0× fewer MACs``."""
        return fmt.ratio(self.before, self.after, self.fewer, self.more)


# (label, field, fallback field for `before`, formatter, fewer, more). A model before pruning is dense,
# so its sparse MACs and stored size fall back to its dense MACs and dense size when not measured.
_MEASURES = (
    ("parameters", "params", None, fmt.count, "fewer parameters", "more parameters"),
    ("nonzero weights", "nonzeros", None, fmt.count, "fewer nonzeros", "more nonzeros"),
    ("MACs", "macs", None, fmt.count, "fewer MACs", "more MACs"),
    ("MACs skipping zeros", "sparse_macs", "macs", fmt.count, "fewer MACs", "more MACs"),
    ("dense size", "dense_bytes", None, fmt.nbytes, "smaller", "larger"),
    ("stored size", "stored_bytes", "dense_bytes", fmt.nbytes, "smaller", "larger"),
    ("latency", "latency_ms", None, fmt.millis, "faster", "slower"),
)


def compared_measures(before: ModelMeasures, after: ModelMeasures) -> tuple[Measure, ...]:
    """The measures known on both sides, in a fixed order (parameters first, latency last)."""
    found = []
    for label, name, fallback, show, fewer, more in _MEASURES:
        old = getattr(before, name)
        if old is None and fallback is not None:
            old = getattr(before, fallback)
        new = getattr(after, name)
        if old is not None and new is not None:
            found.append(Measure(label, old, new, show, fewer, more))
    return tuple(found)


def summary_table(record: RunRecord) -> Table:
    """Measures and quality metrics before vs after, with the change in words or points."""
    rows = [
        (m.label, m.show(m.before), m.show(m.after), m.change)
        for m in compared_measures(record.before, record.after)
    ]
    before, after = record.before.metrics, record.after.metrics
    for name in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(name), after.get(name)
        change = f"{new - old:+.2f}" if old is not None and new is not None else "—"
        rows.append((name, _metric(old), _metric(new), change))
    return ("measure", "before", "after", "change"), rows


def layer_table(layers: Sequence[LayerSparsity]) -> Table:
    """One row per layer: weights, nonzeros, requested and achieved sparsity."""
    rows = [
        (
            layer.name,
            fmt.count(layer.params),
            fmt.count(layer.nonzeros),
            "—" if layer.requested is None else fmt.percent(layer.requested),
            fmt.percent(layer.sparsity),
        )
        for layer in layers
    ]
    return ("layer", "weights", "nonzeros", "requested", "achieved"), rows


def plan_table(plan: Sequence[ChannelChange]) -> Table:
    """One row per structurally pruned layer: channels before, after and the fraction removed."""
    rows = [
        (
            change.layer,
            str(change.before),
            str(change.after),
            fmt.percent(1 - change.after / change.before) if change.before else "—",
        )
        for change in plan
    ]
    return ("layer", "channels before", "channels after", "removed"), rows


def run_facts(record: RunRecord) -> list[tuple[str, str]]:
    """Family, seed, wall time and written files, for the lines under the title."""
    facts = [("family", record.family)]
    if record.seed is not None:
        facts.append(("seed", str(record.seed)))
    if record.wall_s is not None:
        facts.append(("wall time", fmt.seconds(record.wall_s)))
    facts.extend((f"output ({kind})", path) for kind, path in record.outputs.items())
    return facts


def _metric(value: float | None) -> str:
    """Two decimals (98.25, 89.00), or four significant digits below 1 (0.8327, 0.0012)."""
    if value is None:
        return "—"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4g}"


def recipe_text(record: RunRecord) -> str:
    """The recipe as indented JSON (values JSON cannot hold are shown with ``str``)."""
    return json.dumps(record.recipe, indent=2, default=str)
