"""``milkit import-histgen CHECKPOINT --annotations JSON --out RUN_DIR``: official weights -> run dir."""

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("import-histgen")
    def import_histgen(
        checkpoint: Annotated[Path, typer.Argument(help="HistGen checkpoint (model_best.pth) or a .safetensors of it.")],
        annotations: Annotated[Path, typer.Option("--annotations", help="The annotation JSON it was trained on.")],
        out: Annotated[Path, typer.Option("--out", help="Run dir to write.")],
        features_dir: Annotated[Path | None, typer.Option(help="Folder of <slide id>.pt feature files.")] = None,
        threshold: Annotated[int, typer.Option(min=1, help="Vocabulary threshold used in training.")] = 10,
        max_seq_length: Annotated[int, typer.Option(min=3, help="Report length limit incl. BOS/EOS.")] = 100,
        num_heads: Annotated[int, typer.Option(min=1, help="Attention heads (not stored in the weights).")] = 8,
        topk: Annotated[int, typer.Option(min=1, help="Memory top-k (not stored in the weights).")] = 512,
        prototype_num: Annotated[int, typer.Option(min=1, help="Prototype queries (not stored in the weights).")] = 512,
        region_size: Annotated[int | None, typer.Option(min=2, help="Tokens per region (default: read from the weights).")] = None,
    ) -> None:
        """Convert an official HistGen checkpoint into a milkit run dir (aggregator 'histgen', variant 'faithful')."""
        from milkit import cli_options
        from milkit.histgen.importer import import_histgen as run_import

        out = cli_options.out_dir(out)

        run_dir = run_import(checkpoint, annotations, out, threshold=threshold, max_seq_length=max_seq_length,
                             num_heads=num_heads, topk=topk, prototype_num=prototype_num, region_size=region_size,
                             features_dir=features_dir)
        typer.echo(f"wrote {run_dir} (recipe.toml, fold_0/target_state.json, fold_0/checkpoints/best.safetensors)")
        typer.echo(f"generate reports with: milkit generate {run_dir} --features <feature folder>")
