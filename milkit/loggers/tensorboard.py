"""``[run] loggers = ["tensorboard"]``: one TensorBoard run per fold, ``<run dir>/tensorboard/fold_<k>``
(``tensorboard --logdir <run dir>/tensorboard`` shows the folds side by side)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from milkit.loggers import RunLogger
from milkit.recipe.validate import ResolvedRecipe

RECIPE_TAG = "recipe"


class TensorBoardLogger(RunLogger):
    """Scalars per epoch and the fold's final metrics; the resolved recipe as text at step 0. The
    mean over folds (``fold=None``) is not written: it is in ``metrics.json`` (and MLflow's parent run)."""

    name = "tensorboard"

    def __init__(self, run_dir: Path, recipe: ResolvedRecipe, *, resume: bool) -> None:
        super().__init__(run_dir, recipe, resume=resume)
        self.root = run_dir / "tensorboard"
        self.recipe_toml = ""
        self.writers: dict[int, SummaryWriter] = {}

    def start_run(self, recipe_toml: str, params: dict[str, str]) -> None:
        self.recipe_toml = recipe_toml

    def start_fold(self, fold: int, *, first_epoch: int) -> None:
        # purge_step: a resumed fold drops what an interrupted run logged after its last checkpoint
        writer = SummaryWriter(log_dir=str(self.root / f"fold_{fold}"),
                               purge_step=first_epoch if first_epoch > 1 else None)
        if first_epoch == 1:
            body = "\n".join("    " + line for line in self.recipe_toml.splitlines())  # markdown code block
            writer.add_text(RECIPE_TAG, body, global_step=0)
        self.writers[fold] = writer

    def log_metrics(self, fold: int | None, step: int, metrics: dict[str, float]) -> None:
        writer = self.writers.get(fold) if fold is not None else None
        if writer is None:
            return
        for key, value in metrics.items():
            writer.add_scalar(key, value, global_step=step)
        writer.flush()

    def end_fold(self, fold: int) -> None:
        writer = self.writers.pop(fold, None)
        if writer is not None:
            writer.close()

    def close(self, *, failed: bool) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
