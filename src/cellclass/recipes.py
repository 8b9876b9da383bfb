"""Moved to `cellclass.training.recipes`; this name stays so that existing scripts keep working."""

from cellclass.training.recipes import REFERENCE, STRONG, Recipe, resolve_recipes

__all__ = ["REFERENCE", "STRONG", "Recipe", "resolve_recipes"]
