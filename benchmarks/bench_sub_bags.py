"""Sub-bag training (``[train] max_patches``) on the demo: test balanced accuracy and s/epoch per size.

Runs ``recipes/subtyping_abmil.toml`` once per ``max_patches`` (none = whole bags) and seed (the seed
also draws the split), evaluation on whole bags as by default, and prints the demo's bag sizes and a
Markdown table. Same as ``milkit run recipes/subtyping_abmil.toml --set train.max_patches=K --set
run.seed=S`` except that plots and report.html are skipped (they change no number).

``--synthetic SLIDES,PATCHES,DIM`` runs the same recipe on a synthetic cohort of large bags instead
(class c adds 3 to feature c of a random half of the patches; ``--set``-style ``--epochs``), where a
sub-bag changes the cost of a step.

    .venv/bin/python benchmarks/bench_sub_bags.py [--sizes none,512,128,32] [--seeds 0,1,2] [--out DIR]
    .venv/bin/python benchmarks/bench_sub_bags.py --synthetic 48,8000,1024 --epochs 3 --seeds 0
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "subtyping_abmil.toml"


def bag_sizes(recipe) -> np.ndarray:
    """Patches per slide of the recipe's cohort (its feature files)."""
    import h5py

    from milkit.runner import ensure_features, load_cohort

    paths, _ = ensure_features(recipe, load_cohort(recipe), progress=False)
    sizes = []
    for path in paths.values():
        with h5py.File(path, "r") as f:
            sizes.append(f["features"].shape[0])
    return np.array(sizes)


def synthetic_recipe(root: Path, slides: int, patches: int, dim: int) -> Path:
    """``subtyping_abmil.toml`` with its demo cohort replaced by ``slides`` HDF5 bags of ``patches`` x ``dim``."""
    import csv
    import re

    import h5py

    rng = np.random.default_rng(0)
    (root / "features").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(slides):
        label = i % 3
        feats = rng.normal(size=(patches, dim)).astype("float32")
        feats[rng.random(patches) < 0.5, label] += 3.0
        side = int(np.ceil(np.sqrt(patches)))
        coords = np.stack(np.divmod(np.arange(patches), side), -1) * 224
        with h5py.File(root / "features" / f"s{i:03d}.h5", "w") as f:
            f["features"], f["coords"] = feats, coords
        rows.append({"slide_id": f"s{i:03d}", "case_id": f"c{i:03d}", "label": f"class{label}"})
    with (root / "cohort.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = RECIPE.read_text()
    text = re.sub(r"\[extractor\].*?(?=\[aggregator\])", "", text, flags=re.S)
    text = re.sub(r"^demo = true.*$", f'csv = "{root / "cohort.csv"}"\nfeatures_dir = "{root / "features"}"', text,
                  flags=re.M)
    path = root / "recipe.toml"
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="none,512,128,32")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=None, help="where the run dirs go (default: a temp dir)")
    parser.add_argument("--synthetic", default=None, help="SLIDES,PATCHES,DIM: large synthetic bags, not the demo")
    parser.add_argument("--epochs", type=int, default=None, help="override [train] epochs")
    args = parser.parse_args()

    from milkit.plugins import get_plugin_manager
    from milkit.recipe import load_recipe, validate_recipe
    from milkit.registry import build_registries
    from milkit.runner import run_recipe

    registries = build_registries(get_plugin_manager())
    out = args.out or Path(tempfile.mkdtemp(prefix="milkit-sub-bags-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    recipe_path = RECIPE
    if args.synthetic:
        slides, patches, dim = map(int, args.synthetic.split(","))
        recipe_path = synthetic_recipe(out / "cohort", slides, patches, dim)
    common = [f"train.epochs={args.epochs}"] if args.epochs else []
    rows = []
    for size in args.sizes.split(","):
        overrides = [f"run.seed={seeds[0]}"] + ([] if size == "none" else [f"train.max_patches={size}"])
        if size == args.sizes.split(",")[0]:
            sizes = bag_sizes(validate_recipe(load_recipe(recipe_path, overrides=overrides), registries))
            q = np.percentile(sizes, [0, 25, 50, 75, 100]).astype(int)
            print(f"bag sizes ({len(sizes)} slides): min {q[0]}, quartiles {q[1]}/{q[2]}/{q[3]}, max {q[4]}, "
                  f"mean {sizes.mean():.0f}; slides over 512/128/32 patches: "
                  f"{(sizes > 512).sum()}/{(sizes > 128).sum()}/{(sizes > 32).sum()}")
        accs, secs, epochs, mems = [], [], [], []
        for seed in seeds:
            overrides = [*common, f"run.seed={seed}"] + ([] if size == "none" else [f"train.max_patches={size}"])
            recipe = validate_recipe(load_recipe(recipe_path, overrides=overrides), registries)
            with mock.patch("milkit.runner.write_visuals"):
                run_dir = run_recipe(recipe, registries, out=out / f"k{size}-s{seed}", progress=False)
            metrics = json.loads((run_dir / "metrics.json").read_text())
            fold = metrics["folds"][0]
            accs.append(fold["metrics"]["test"]["balanced_accuracy"])
            secs.append(fold["cost"]["seconds_per_epoch"])
            epochs.append(fold["cost"]["epochs"])
            mems.append(fold["cost"]["peak_memory_mb"])
            print(f"max_patches={size} seed={seed}: test balanced accuracy {accs[-1]:.3f}, "
                  f"{secs[-1]:.2f} s/epoch, {epochs[-1]} epochs, peak memory {fold['cost']['peak_memory_mb']:.1f} MiB")
        rows.append((size, accs, secs, epochs, mems))
    print("\n| `max_patches` | test balanced accuracy, mean ± std (per seed) | s/epoch, mean (per seed) | epochs run "
          "| training-step peak memory (MiB, largest bag) |")
    print("|---|---|---|---|---|")
    for size, accs, secs, epochs, mems in rows:
        sd = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        print(f"| {size} | {statistics.mean(accs):.3f} ± {sd:.3f} ({', '.join(f'{a:.3f}' for a in accs)}) | "
              f"{statistics.mean(secs):.2f} ({', '.join(f'{s:.2f}' for s in secs)}) | "
              f"{', '.join(map(str, epochs))} | {max(mems):.2f} |")


if __name__ == "__main__":
    main()
