"""Recipes: a YAML file describing a whole pruning job, validated up front, run by ``prunekit run``."""

from ._parse import RecipeError
from .methods import FAMILIES, Activations, AtInit, Lottery, OneShot, Structured, Unstructured
from .runner import run_recipe
from .schema import EXPORTS, Recipe, dump_recipe, load_recipe, parse_recipe
from .sections import DataSpec, ModelSpec, TrainSpec

__all__ = [
    "EXPORTS",
    "FAMILIES",
    "Activations",
    "AtInit",
    "DataSpec",
    "Lottery",
    "ModelSpec",
    "OneShot",
    "Recipe",
    "RecipeError",
    "Structured",
    "TrainSpec",
    "Unstructured",
    "dump_recipe",
    "load_recipe",
    "parse_recipe",
    "run_recipe",
]
