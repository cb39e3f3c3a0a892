"""Experiment trackers for ``milkit run`` (``[run] loggers = ["tensorboard", "mlflow"]``).

A tracker mirrors what the run dir records: each epoch's ``metrics.jsonl`` entry, the resolved
recipe, and the final metrics of each fold and of the run. The run dir's files stay the record: a
tracker that raises is switched off with a warning and the run goes on.

Each tracker is a :class:`RunLogger` subclass in its own module, named in :data:`LOGGERS`; its
package is imported only when a recipe names it, and a missing package is a recipe error
(``milkit validate``), not a failure after training.

Names, shared by every tracker (``metrics.jsonl`` key -> tracker key): ``train_loss`` ->
``train/loss``, ``val_<metric>`` -> ``val/<metric>``, others as they are (``lr``, ``seconds``), with the
epoch as the step; the fold's final metrics (``metrics.json`` ``folds[k].metrics``) ->
``final/<split>/<metric>`` at the fold's last epoch (so a resumed fold's new values are the latest);
the run's mean over folds (``summary``) -> ``final/<split>/<metric>`` and ``final/<split>/<metric>_std``
on the run as a whole.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from milkit.recipe.validate import ResolvedRecipe

log = logging.getLogger("milkit")


@dataclass(frozen=True)
class LoggerEntry:
    """Where a tracker lives and what it needs installed."""

    module: str
    cls: str
    package: str
    extra: str

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


LOGGERS: dict[str, LoggerEntry] = {
    "tensorboard": LoggerEntry("milkit.loggers.tensorboard", "TensorBoardLogger", "tensorboard", "tensorboard"),
    "mlflow": LoggerEntry("milkit.loggers.mlflow", "MLflowLogger", "mlflow", "mlflow"),
}
"""Tracker name (as written in ``[run] loggers``) -> its class and package."""


class RunLogger:
    """One experiment tracker for one ``milkit run``.

    Core calls, on the main process only: :meth:`start_run` once, then per trained fold
    :meth:`start_fold`, :meth:`log_metrics` per epoch and once with the final metrics,
    :meth:`end_fold`; then :meth:`log_metrics` with ``fold=None`` (the mean over folds) and
    :meth:`close`. Metrics arrive already named (module docstring) and finite-or-NaN floats.
    """

    name: str = ""

    def __init__(self, run_dir: Path, recipe: ResolvedRecipe, *, resume: bool) -> None:
        self.run_dir, self.recipe, self.resume = run_dir, recipe, resume

    def start_run(self, recipe_toml: str, params: dict[str, str]) -> None:
        """The resolved recipe, as TOML text and as flat ``table.key`` -> value params."""

    def start_fold(self, fold: int, *, first_epoch: int) -> None:
        """Fold ``fold`` starts training at ``first_epoch`` (> 1 when resumed from a checkpoint)."""

    def log_metrics(self, fold: int | None, step: int, metrics: dict[str, float]) -> None:
        """Scalars of fold ``fold`` at ``step`` (an epoch); ``fold=None``: the run as a whole."""

    def end_fold(self, fold: int) -> None:
        """Fold ``fold`` is trained and evaluated."""

    def close(self, *, failed: bool) -> None:
        """The run ended (``failed``: with an exception); release files and connections."""


def logger_problems(names: list[str], *, check_packages: bool = True) -> list[tuple[int | None, str]]:
    """``(index in names, message)`` for unknown or repeated tracker names and, when
    ``check_packages``, trackers whose package is not installed."""
    problems: list[tuple[int | None, str]] = []
    for i, name in enumerate(names):
        entry = LOGGERS.get(name)
        if entry is None:
            problems.append((i, f"unknown logger {name!r}; valid loggers: {', '.join(LOGGERS)}"))
        elif name in names[:i]:
            problems.append((i, f"logger {name!r} is named twice"))
        elif check_packages and not entry.installed():
            problems.append((i, f"logger {name!r} needs the {entry.package} package, which is not installed: "
                                f"pip install 'milkit[{entry.extra}]' (or remove {name!r} from [run] loggers)"))
    return problems


def open_loggers(recipe: ResolvedRecipe, run_dir: Path, *, resume: bool) -> RunLoggers:
    """The recipe's trackers, started; one that cannot start is left out with a warning."""
    loggers: list[RunLogger] = []
    for name in recipe.run.loggers:
        entry = LOGGERS[name]
        try:
            cls = getattr(importlib.import_module(entry.module), entry.cls)
            loggers.append(cls(run_dir, recipe, resume=resume))
        except Exception as exc:  # noqa: BLE001 - a tracker never costs the run
            log.warning("logger %r could not start (%s: %s); the run goes on without it (the run dir's "
                        "metrics.jsonl and metrics.json are complete)", name, type(exc).__name__, exc)
    return RunLoggers(loggers)


class RunLoggers:
    """The run's trackers behind one object: names the metrics, and turns a tracker's failure into a
    warning (the tracker is switched off for the rest of the run)."""

    def __init__(self, loggers: list[RunLogger] | None = None) -> None:
        self.loggers = list(loggers or [])

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, what: str, call: Callable[[RunLogger], None]) -> None:
        for lg in list(self.loggers):
            try:
                call(lg)
            except Exception as exc:  # noqa: BLE001 - the run dir's files are the record
                log.warning("logger %r failed (%s: %s: %s); it is switched off for the rest of this run, whose "
                            "metrics.jsonl and metrics.json stay complete", lg.name, what, type(exc).__name__, exc)
                self.loggers.remove(lg)

    def start_run(self, recipe: ResolvedRecipe) -> None:
        import tomli_w

        table = recipe.to_dict()
        text, params = tomli_w.dumps(table), recipe_params(table)
        self._each("start_run", lambda lg: lg.start_run(text, params))

    def start_fold(self, fold: int, *, first_epoch: int) -> None:
        self._each("start_fold", lambda lg: lg.start_fold(fold, first_epoch=first_epoch))

    def log_epoch(self, entry: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` entry (``fold``, ``epoch`` and the scalars)."""
        scalars = epoch_scalars(entry)
        self._each("log_metrics", lambda lg: lg.log_metrics(int(entry["fold"]), int(entry["epoch"]), scalars))

    def end_fold(self, fold: int, result: dict[str, Any]) -> None:
        """A fold's ``result.json``: its final metrics (of the selected checkpoint), at its last epoch."""
        scalars = final_scalars(result["metrics"])
        step = int(result["cost"]["epochs"])
        self._each("log_metrics", lambda lg: lg.log_metrics(fold, step, scalars))
        self._each("end_fold", lambda lg: lg.end_fold(fold))

    def end_run(self, summary: dict[str, dict[str, dict[str, float | None]]]) -> None:
        """``metrics.json`` ``summary``: mean and std over folds."""
        scalars = summary_scalars(summary)
        self._each("log_metrics", lambda lg: lg.log_metrics(None, 0, scalars))

    def close(self, *, failed: bool = False) -> None:
        self._each("close", lambda lg: lg.close(failed=failed))
        self.loggers.clear()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) or math.isnan(value) else None


def epoch_scalars(entry: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` entry in tracker names (``train_loss`` -> ``train/loss``), without fold and epoch."""
    out: dict[str, float] = {}
    for key, value in entry.items():
        number = _number(value)
        if key in ("fold", "epoch") or number is None:
            continue
        split, _, rest = key.partition("_")
        out[f"{split}/{rest}" if split in ("train", "val") and rest else key] = number
    return out


def final_scalars(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """``{split: {metric: value}}`` -> ``final/<split>/<metric>``, scalars only."""
    return {f"final/{split}/{key}": number for split, values in metrics.items() for key, value in values.items()
            if (number := _number(value)) is not None}


def summary_scalars(summary: dict[str, dict[str, dict[str, float | None]]]) -> dict[str, float]:
    """``{split: {metric: {mean, std}}}`` -> ``final/<split>/<metric>`` (mean) and ``..._std``."""
    out: dict[str, float] = {}
    for split, values in summary.items():
        for key, stats in values.items():
            for suffix, stat in (("", "mean"), ("_std", "std")):
                if (number := _number(stats.get(stat))) is not None:
                    out[f"final/{split}/{key}{suffix}"] = number
    return out


def recipe_params(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """The resolved recipe as flat ``table.key`` -> value text (lists and booleans as TOML writes them)."""
    import json

    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(recipe_params(value, f"{prefix}{key}."))
        elif isinstance(value, bool):
            out[f"{prefix}{key}"] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[f"{prefix}{key}"] = json.dumps(value, default=str)
        else:
            out[f"{prefix}{key}"] = str(value)
    return out
