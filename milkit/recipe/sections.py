"""The recipe's fixed tables other than the component tables, as pydantic models."""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from milkit.config import ComponentConfig


class RunSection(ComponentConfig):
    name: str = Field("run", description="Run name; the default output dir is runs/<name>.")
    output_dir: Path | None = Field(None, description="Where the run dir is written (default runs/<name>).")
    seed: int = Field(0, description="Seed for splits, initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' picks CUDA when available.")
    deterministic: bool = Field(
        True, description="Deterministic torch algorithms and one thread count per run: bit-identical CPU runs "
                          "with the same thread count (metrics.json cost.threads).")
    threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (default: MILKIT_THREADS, else one per available core).")
    loggers: list[str] = Field(
        [], description="Experiment trackers that mirror metrics.jsonl, the recipe and the final metrics: "
                        "'tensorboard', 'mlflow' (pip install milkit[tensorboard] / milkit[mlflow]).")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default: a file store in <run dir>/mlruns); needs 'mlflow' in loggers.")


class CohortSection(ComponentConfig):
    """``[cohort]`` settings. The cohort itself is named by one key of a registered cohort format
    (``csv = "cohort.csv"``, ``annotations = "annotation.json"``, ``demo = true``; see ``milkit plugins``)."""

    slides_dir: Path | None = Field(None, description="Folder of slides, for rows without a slide_path.")
    features_dir: Path | None = Field(
        None, description="Folder of per-slide feature files (<slide_id>.h5 or .pt); default <cohort dir>/features/<extractor>."
    )
    splits: Literal["holdout", "kfold", "given"] = Field(
        "holdout", description="holdout: one train/val/test split; kfold: K patient-disjoint folds; given: from file."
    )
    folds: int = Field(5, ge=2, le=50, description="Number of folds for splits = 'kfold'.")
    val_fraction: float = Field(0.15, ge=0.0, lt=0.9, description="Share of patients for validation.")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9, description="Share of patients for test (holdout).")
    splits_file: Path | None = Field(None, description="splits.json of an earlier run, for splits = 'given'.")
    stratify: str | None = Field(
        "auto", description="Column to stratify on; 'auto' asks the head (its label, the Cox event); 'none': no strata.")
    cache_in_memory: bool = Field(True, description="Keep loaded bags in memory across epochs.")
    cache_mb: float | None = Field(None, gt=0, description="Bound the in-memory bag cache (MiB, LRU); None = unbounded.")
    storage: Literal["as_is", "float16"] = Field(
        "as_is", description="float16: convert each feature file once to a half-precision copy (half the disk and I/O)."
    )
    prefetch: bool = Field(True, description="Read the next batch's bags in background threads while training.")
    strict: bool = Field(
        False, description="Abort on the first unusable bag (NaN, empty, unreadable); default: leave it out and say so.")
    bag: Literal["slide", "case"] = Field(
        "slide", description="slide: one bag per slide; case: all slides of a case_id in one bag (patient-level "
                             "targets, predictions and metrics).")

    @model_validator(mode="after")
    def _fractions(self) -> "CohortSection":
        if self.splits == "holdout" and self.val_fraction + self.test_fraction >= 0.95:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} leaves "
                             "(almost) no patients for training; keep their sum below 0.95 (e.g. 0.15 + 0.2)")
        return self


class TrainSection(ComponentConfig):
    epochs: int = Field(20, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(1, ge=1, description="Bags per step (padded); Cox needs several.")
    optimizer: Literal["adam", "adamw"] = Field("adam", description="adam (coupled L2) or adamw (decoupled).")
    lr: float = Field(1e-4, gt=0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    amsgrad: bool = Field(False, description="AMSGrad variant of Adam/AdamW.")
    scheduler: Literal["none", "step", "cosine"] = Field("none", description="Per-epoch LR schedule.")
    step_size: int = Field(1, ge=1, description="StepLR: epochs between decays.")
    gamma: float = Field(0.8, gt=0, le=1, description="StepLR: decay factor.")
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    grad_clip_value: float | None = Field(None, gt=0, description="Clip each gradient element to ±value (HistGen).")
    accumulate_steps: int = Field(1, ge=1, description="Gradient accumulation steps.")
    early_stopping_patience: int | None = Field(None, ge=1, description="Stop after this many epochs without improvement.")
    monitor: str | None = Field(None, description="Validation metric for model selection (default: the head's).")
    monitor_mode: Literal["max", "min"] | None = Field(None, description="Whether the monitor is maximised.")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU).")
    max_patches: int | None = Field(
        None, ge=1, description="Train on a random sub-bag of at most this many patches per slide, drawn anew each "
                                "epoch (evaluation: [eval] max_patches).")


class EvalSection(ComponentConfig):
    splits: list[Literal["train", "val", "test"]] = Field(["val", "test"], description="Splits evaluated at the end.")
    checkpoint: Literal["best", "last"] = Field("best", description="Which checkpoint is evaluated.")
    every_n_epochs: int = Field(1, ge=1, description="Validate every n epochs (model selection granularity).")
    max_patches: int | None = Field(
        None, ge=1, description="Evaluate on a fixed random sub-bag of at most this many patches per slide (the same "
                                "every epoch); default: whole bags.")


SECTIONS: dict[str, type[ComponentConfig]] = {
    "run": RunSection,
    "cohort": CohortSection,
    "train": TrainSection,
    "eval": EvalSection,
}
COMPONENT_TABLES = ("extractor", "aggregator", "head")
OPTIONAL_TABLES = ("compare",)
ALL_TABLES = ("run", "cohort", "extractor", "aggregator", "head", "train", "eval", "compare")
