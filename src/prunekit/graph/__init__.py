"""Structured pruning: trace a model, find coupled channels, score and remove them."""

from .graph import DependencyGraph, Group, Member
from .hf import load_pretrained
from .importance import IMPORTANCES, group_scores
from .io import load_pruned, save_pruned
from .modules import ModuleHandler, handler_for, register_handler
from .propagate import UnsupportedOpError, register_op_rule
from .trace import ForwardError, Trace, trace_model
from .verify import PrunedModelMismatchError

__all__ = [
    "IMPORTANCES",
    "DependencyGraph",
    "ForwardError",
    "Group",
    "Member",
    "ModuleHandler",
    "PrunedModelMismatchError",
    "Trace",
    "UnsupportedOpError",
    "group_scores",
    "handler_for",
    "load_pretrained",
    "load_pruned",
    "register_handler",
    "register_op_rule",
    "save_pruned",
    "trace_model",
]
