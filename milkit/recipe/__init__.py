"""TOML recipes: parse, override, validate (all problems at once, with file:line), resolve."""

from milkit.recipe.load import Recipe, load_recipe, parse_override
from milkit.recipe.validate import validate_recipe

__all__ = ["Recipe", "load_recipe", "parse_override", "validate_recipe"]
