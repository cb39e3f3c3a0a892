"""``milkit run RECIPE``: validate, then train and evaluate, writing a run dir."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
        out: Annotated[Path | None, typer.Option("--out", help="Run dir (default: [run] output_dir or runs/<name>).")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoints.")] = False,
        force_new: Annotated[bool, typer.Option(
            "--force-new", help="Start again in a run dir that holds a run (its results are replaced).")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    ) -> None:
        """Train and evaluate the recipe's model; results land in the run dir."""
        from milkit import distributed
        from milkit.plugins import get_plugin_manager
        from milkit.recipe import load_recipe, validate_recipe
        from milkit.registry import build_registries
        from milkit.runner import run_recipe

        from milkit import cli_options as options
        from milkit.errors import UsageError

        if resume and force_new:
            raise UsageError("--resume/--force-new", "give one: --resume continues the run, --force-new replaces it")
        if out is not None:
            out = options.out_dir(out)
        console = Console(stderr=True)
        distributed.init_from_env()  # under torchrun: one process group, gloo on CPU / NCCL on GPU
        registries = build_registries(get_plugin_manager())
        for problem in registries.problems:
            console.print(f"[yellow]warning:[/] {escape(problem)}")
        resolved = validate_recipe(load_recipe(recipe, set_), registries)
        run_dir = run_recipe(resolved, registries, out=out, resume=resume, progress=not quiet, console=console)
        if distributed.is_main():
            print_summary(Console(), run_dir)


def print_summary(console: Console, run_dir: Path) -> None:
    """A table of the run's final metrics (mean ± std over folds)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = Table(title=escape(f"{metrics['aggregator']} + {metrics['head']}  ({run_dir})"))
    table.add_column("split")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for split, values in metrics["summary"].items():
        for key, stat in values.items():
            if stat["mean"] is None:
                text = "n/a"
            elif len(metrics["folds"]) > 1:
                text = f"{stat['mean']:.4f} ± {stat['std']:.4f}"
            else:
                text = f"{stat['mean']:.4f}"
            table.add_row(escape(split), escape(key), text)
    console.print(table)
