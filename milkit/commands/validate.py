"""``milkit validate RECIPE``: report every problem of a recipe (file:line: key: message), exit 2."""

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(
        recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")] = None,
    ) -> None:
        """Check a recipe completely without running anything."""
        from milkit.plugins import get_plugin_manager
        from milkit.recipe import load_recipe, validate_recipe
        from milkit.registry import build_registries

        registries = build_registries(get_plugin_manager())
        for problem in registries.problems:
            typer.echo(f"warning: {problem}", err=True)
        resolved = validate_recipe(load_recipe(recipe, set_), registries)
        typer.echo(f"{recipe}: ok ({resolved.aggregator.name} + {resolved.head.name})")
