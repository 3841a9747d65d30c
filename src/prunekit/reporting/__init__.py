"""Reports of pruning runs: a frozen :class:`RunRecord` rendered as JSON, Markdown and HTML."""

from .record import FAMILIES, ChannelChange, Curve, LayerSparsity, ModelMeasures, RunRecord

__all__ = ["FAMILIES", "ChannelChange", "Curve", "LayerSparsity", "ModelMeasures", "RunRecord"]
