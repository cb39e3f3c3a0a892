"""``milkit generate RUN_DIR --features PATH...``: one generated report per slide, to CSV."""

import csv
from pathlib import Path
from typing import Annotated

import typer


def collect_feature_files(paths: list[Path]) -> list[Path]:
    """Feature files named directly, or found (non-recursively) in named folders."""
    from milkit.data.bags import FEATURE_SUFFIXES
    from milkit.errors import DataError

    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in FEATURE_SUFFIXES))
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"no such feature file or folder: {p}")
    if not files:
        raise DataError(f"no feature files (.h5, .hdf5, .pt) in {', '.join(map(str, paths))}")
    return files


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        run_dir: Annotated[Path, typer.Argument(help="A trained run dir (milkit run or milkit import-histgen).")],
        features: Annotated[list[Path], typer.Option("--features", help="Feature files or folders (repeatable).")],
        out: Annotated[Path, typer.Option("--out", help="CSV to write: slide_id, report.")] = Path("reports.csv"),
        batch_size: Annotated[int, typer.Option(min=1, help="Slides decoded together.")] = 8,
        device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
        fold: Annotated[int, typer.Option(min=0, help="Which fold's model to use.")] = 0,
    ) -> None:
        """Generate a report for every slide with a trained report-generation run."""
        import torch
        from rich.progress import Progress

        from milkit.data.bags import BagStore, collate_bags
        from milkit.errors import MilkitError
        from milkit.plugins import get_plugin_manager
        from milkit.registry import build_registries
        from milkit.runner import load_run
        from milkit.trainer import pick_device

        from milkit import distributed

        from milkit import cli_options as options

        out = options.out_file(out)
        distributed.init_from_env()  # under torchrun each rank decodes its share of the slides
        dev = pick_device(options.device(device))
        model, recipe = load_run(run_dir, build_registries(get_plugin_manager()), fold=fold, device=str(dev))
        text = model.head.text_output
        if text is None:
            raise MilkitError(f"{run_dir} trained head '{recipe.head.name}', which does not generate text; "
                              "use a run of a report-generation head (one that sets Head.text_output)")
        files = collect_feature_files(features)
        store = BagStore({f.stem: f for f in files}, cache=False)
        ids = list(store.paths)
        mine = distributed.shard(ids)
        reports: list[tuple[str, str]] = []
        with Progress(disable=not distributed.is_main()) as bar, torch.no_grad():
            task = bar.add_task("generating reports", total=len(mine))
            for start in range(0, len(mine), batch_size):
                chunk = mine[start:start + batch_size]
                loaded = [store.load(s) for s in chunk]
                for s, (feats, _) in zip(chunk, loaded):
                    model.check_width(int(feats.shape[1]), store.paths[s])
                bags = collate_bags(loaded).to(dev)
                records = model.head.predict(model.encode(bags), [{"slide_id": s} for s in chunk])
                reports.extend((rec["slide_id"], rec[text]) for rec in records)
                bar.advance(task, len(chunk))
        reports = distributed.unshard(distributed.gather_objects(reports))  # back in slide order
        if distributed.is_main():
            from milkit.atomic import atomic_path

            with atomic_path(out) as tmp, tmp.open("w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["slide_id", "report"])
                writer.writerows(reports)
            typer.echo(f"wrote {len(reports)} reports to {out}")
