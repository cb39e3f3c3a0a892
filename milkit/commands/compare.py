"""``milkit compare RECIPE``: many aggregators, one cohort, the same folds; one table."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command("compare")
    def compare(
        recipe: Annotated[Path, typer.Argument(help="Recipe with a [compare] table.")],
        out: Annotated[Path | None, typer.Option("--out", help="Output dir (default: [run] output_dir).")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override: section.key=value.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
        force_new: Annotated[bool, typer.Option(
            "--force-new", help="Delete the folder's finished runs and start the comparison again.")] = False,
    ) -> None:
        """Train every aggregator of the recipe's compare table on the same patient-disjoint folds; re-runs reuse finished runs."""
        from milkit.compare.runner import load_comparison, run_compare
        from milkit.errors import Issue, RecipeError
        from milkit import distributed
        from milkit.plugins import get_plugin_manager
        from milkit.recipe import load_recipe, validate_recipe
        from milkit.registry import build_registries

        from milkit import cli_options as options

        if out is not None:
            out = options.out_dir(out)
        distributed.init_from_env()  # under torchrun: one process group, gloo on CPU / NCCL on GPU
        registries = build_registries(get_plugin_manager())
        loaded = load_recipe(recipe, set_)
        if "compare" not in loaded.data:
            raise RecipeError([Issue(str(recipe), None, "[compare]", "missing: add a [compare] table with "
                                     "aggregators = [{name = \"mean\"}, {name = \"abmil\"}]")])
        resolved = validate_recipe(loaded, registries)
        out_dir = run_compare(resolved, registries, out=out, progress=not quiet, console=Console(stderr=True),
                              force_new=force_new)
        console = Console() if sys.stdout.isatty() else Console(width=150)  # full table in logs and pipes
        print_comparison(console, load_comparison(out_dir), out_dir)


def print_comparison(console: Console, table: dict[str, Any], out_dir: Path) -> None:
    metric = table["metric"]
    t = Table(title=escape(f"test {metric} over {table['folds']} folds × {len(table['seeds'])} seed(s)  ({out_dir})"))
    for col in ("aggregator", f"{metric} mean ± std", "95 % CI", "vs best", "params", "s/epoch", "peak MiB",
                "s/slide"):
        t.add_column(col, justify="left" if col == "aggregator" else "right")
    for row in sorted(table["rows"], key=lambda r: -(r[metric]["mean"] or 0) if table["mode"] == "max"
                      else (r[metric]["mean"] or 0)):
        s = row[metric]
        vs = row["vs_best"]
        verdict = "best" if vs["is_best"] else (f"p={vs['p_value']:.3f}" + (" (within noise)" if vs["within_noise"] else ""))
        fmt = (lambda v: "n/a" if v is None else f"{v:.3f}")
        t.add_row(escape(row["aggregator"]), f"{fmt(s['mean'])} ± {fmt(s['std'])}",
                  escape(f"[{fmt(s['ci95'][0])}, {fmt(s['ci95'][1])}]"),
                  verdict, f"{row['n_parameters']:,}", f"{row['seconds_per_epoch']:.2f}", f"{row['peak_memory_mb']:.1f}",
                  f"{row['inference_seconds_per_slide']:.4f}")
    console.print(t)
