"""Train one fold: plain PyTorch loop, model selection on validation only, resumable checkpoints."""

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from milkit.checkpoint import load_training_state, load_weights, save_json, save_training_state, save_weights
from milkit.data.bags import BagStore, collate_bags
from milkit.errors import DataError
from milkit.model import MILModel
from milkit.recipe.validate import ResolvedRecipe

log = logging.getLogger("milkit")
Row = dict[str, Any]


@dataclass
class FoldData:
    """The rows of each split of one fold, and the bags they refer to."""

    rows: dict[str, list[Row]]
    store: BagStore


def seed_everything(seed: int, deterministic: bool = True) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(model: torch.nn.Module, recipe: ResolvedRecipe) -> tuple[torch.optim.Optimizer, Any]:
    t = recipe.train
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    opt = cls(params, lr=t.lr, weight_decay=t.weight_decay, amsgrad=t.amsgrad)
    if t.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_size, gamma=t.gamma)
    elif t.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    else:
        sched = None
    return opt, sched


def _better(value: float, best: float | None, mode: str) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if mode == "max" else value < best)


class Trainer:
    """Trains ``model`` on one fold and writes ``fold_dir`` (checkpoints, metrics.jsonl)."""

    def __init__(self, recipe: ResolvedRecipe, model: MILModel, data: FoldData, fold_dir: Path,
                 *, fold: int, device: torch.device, progress: bool = True) -> None:
        self.recipe, self.model, self.data, self.fold_dir, self.fold = recipe, model, data, fold_dir, fold
        self.device = device
        self.progress = progress
        self.ckpt_dir = fold_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        head = model.head
        self.monitor = recipe.train.monitor or head.monitor
        self.mode = recipe.train.monitor_mode or (head.monitor_mode if self.monitor == head.monitor else
                                                  ("min" if "loss" in self.monitor else "max"))
        self.optimizer, self.scheduler = build_optimizer(model, recipe)
        self.model.to(device)

    def _autocast(self):
        if self.device.type == "cuda" and self.recipe.train.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _batches(self, rows: list[Row], batch_size: int, generator: torch.Generator | None):
        order = torch.randperm(len(rows), generator=generator).tolist() if generator is not None else range(len(rows))
        order = list(order)
        max_patches = self.recipe.train.max_patches if generator is not None else None
        for start in range(0, len(order), batch_size):
            batch_rows = [rows[i] for i in order[start:start + batch_size]]
            items = []
            for r in batch_rows:
                feats, coords = self.data.store.load(r["slide_id"])
                if max_patches and feats.shape[0] > max_patches:
                    keep = torch.randperm(feats.shape[0], generator=generator)[:max_patches].sort().values
                    feats, coords = feats[keep], coords[keep]
                items.append((feats, coords))
            yield batch_rows, collate_bags(items).to(self.device)

    def train_epoch(self, epoch: int, bar: Progress | None) -> float:
        t = self.recipe.train
        self.model.train()
        if not any(p.requires_grad for p in self.model.aggregator.parameters()):
            self.model.aggregator.eval()  # frozen encoder: no dropout, a fixed feature map for the head
        gen = torch.Generator().manual_seed(self.recipe.run.seed * 1000 + self.fold * 100 + epoch)
        rows = self.data.rows["train"]
        task = bar.add_task(f"epoch {epoch}", total=math.ceil(len(rows) / t.batch_size)) if bar else None
        total, count = 0.0, 0
        self.optimizer.zero_grad(set_to_none=True)
        for step, (batch_rows, bags) in enumerate(self._batches(rows, t.batch_size, gen), start=1):
            targets = {k: v.to(self.device) for k, v in self.model.head.collate_targets(batch_rows).items()}
            with self._autocast():
                out = self.model(bags, targets)
                loss = self.model.head.loss(out, targets)
            (loss / t.accumulate_steps).backward()
            if step % t.accumulate_steps == 0 or step * t.batch_size >= len(rows):
                if t.grad_clip_value:
                    torch.nn.utils.clip_grad_value_(self.model.parameters(), t.grad_clip_value)
                if t.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(batch_rows)
            count += len(batch_rows)
            if bar is not None:
                bar.advance(task)
        if bar is not None:
            bar.remove_task(task)
        return total / max(count, 1)

    @torch.no_grad()
    def predict(self, split: str) -> tuple[list[Row], float, float]:
        """Records for ``split``, its mean loss, and the inference seconds per slide."""
        self.model.eval()
        rows = self.data.rows[split]
        records: list[Row] = []
        total, start = 0.0, time.perf_counter()
        for batch_rows, bags in self._batches(rows, max(self.recipe.train.batch_size, 8), None):
            with self._autocast():
                x = self.model.encode(bags)
                targets = {k: v.to(self.device) for k, v in self.model.head.collate_targets(batch_rows).items()}
                total += float(self.model.head.loss(self.model.head(x, targets), targets)) * len(batch_rows)
                records.extend(self.model.head.predict(x, batch_rows))
        per_slide = (time.perf_counter() - start) / max(len(rows), 1)
        return records, total / max(len(rows), 1), per_slide

    def fit(self, *, resume: bool) -> dict[str, Any]:
        t, ev = self.recipe.train, self.recipe.eval
        metrics_path = self.fold_dir / "metrics.jsonl"
        last = self.ckpt_dir / "last.safetensors"
        state = {"epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "epoch_seconds": []}
        if resume and last.with_suffix(".json").is_file():
            meta = load_training_state(last, self.model, self.optimizer, self.scheduler)
            state.update({k: meta[k] for k in state if k in meta})
            log.info("fold %d: resumed after epoch %d", self.fold, state["epoch"])
        lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
        kept = [ln for ln in lines if json.loads(ln)["epoch"] <= state["epoch"]]
        metrics_path.write_text("".join(ln + "\n" for ln in kept))
        has_val = bool(self.data.rows.get("val"))
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not self.progress, transient=True) as bar:
            epochs = bar.add_task(f"fold {self.fold}: training", total=t.epochs, completed=state["epoch"])
            for epoch in range(state["epoch"] + 1, t.epochs + 1):
                start = time.perf_counter()
                train_loss = self.train_epoch(epoch, bar)
                seconds = time.perf_counter() - start
                entry: dict[str, Any] = {"fold": self.fold, "epoch": epoch, "train_loss": train_loss,
                                         "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3)}
                if has_val and (epoch % ev.every_n_epochs == 0 or epoch == t.epochs):
                    records, val_loss, _ = self.predict("val")
                    val_metrics = _scalars(self.model.head.metrics(records))
                    entry.update({"val_loss": val_loss, **{f"val_{k}": v for k, v in val_metrics.items()}})
                    value = val_loss if self.monitor == "loss" else val_metrics.get(self.monitor)
                    if _better(value, state["best"], self.mode):
                        state.update(best=value, best_epoch=epoch, bad_epochs=0)
                        save_weights(self.model, self.ckpt_dir / "best.safetensors")
                    else:
                        state["bad_epochs"] += 1
                if self.scheduler is not None:
                    self.scheduler.step()
                state["epoch"] = epoch
                state["epoch_seconds"].append(seconds)
                with metrics_path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
                save_training_state(last, self.model, self.optimizer, self.scheduler, dict(state))
                bar.advance(epochs)
                log.info("fold %d epoch %d: %s", self.fold, epoch, _fmt(entry))
                if t.early_stopping_patience and state["bad_epochs"] >= t.early_stopping_patience:
                    log.info("fold %d: early stop at epoch %d (no %s improvement for %d epochs)",
                             self.fold, epoch, self.monitor, state["bad_epochs"])
                    break
        return state

    def evaluate(self, state: dict[str, Any]) -> dict[str, Any]:
        """Load the selected checkpoint and compute metrics and records for the eval splits."""
        best = self.ckpt_dir / "best.safetensors"
        use_best = self.recipe.eval.checkpoint == "best" and best.is_file()
        if use_best:
            load_weights(self.model, best)
        head = self.model.head
        splits = [s for s in self.recipe.eval.splits if self.data.rows.get(s)]
        need_train = getattr(head, "uses_train_records", False)
        if need_train and "train" not in splits:
            splits = ["train", *splits]
        result: dict[str, Any] = {"fold": self.fold, "checkpoint": "best" if use_best else "last",
                                  "best_epoch": state["best_epoch"] if use_best else state["epoch"],
                                  "monitor": self.monitor, "monitor_mode": self.mode, "metrics": {}, "records": {}}
        for split in splits:
            records, loss, per_slide = self.predict(split)
            result["records"][split] = records
            result.setdefault("inference_seconds_per_slide", per_slide)
        train_records = result["records"].get("train")
        for split in splits:
            if split == "train" and "train" not in self.recipe.eval.splits:
                continue
            m = head.metrics(result["records"][split], train_records=train_records)
            result["metrics"][split] = m
        seconds = state["epoch_seconds"]
        result["cost"] = {"epochs": state["epoch"], "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
                          "peak_memory_mb": self.step_memory_mb(),
                          "peak_memory_kind": "cuda max allocated" if self.device.type == "cuda"
                          else "saved activations + params/grads/Adam (largest training bag)",
                          "inference_seconds_per_slide": result.pop("inference_seconds_per_slide", None)}
        return result


    def step_memory_mb(self) -> float:
        """Peak memory of a training step on the largest training bag (see milkit.profiling)."""
        from milkit.profiling import training_step_memory_mb

        rows = self.data.rows["train"]
        biggest = max(rows, key=lambda r: self.data.store.load(r["slide_id"])[0].shape[0])
        _, bags = next(self._batches([biggest], 1, None))
        targets = {k: v.to(self.device) for k, v in self.model.head.collate_targets([biggest]).items()}
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        def step() -> torch.Tensor:
            with self._autocast():
                loss = self.model.head.loss(self.model(bags, targets), targets)
            loss.backward()
            return loss

        estimate = training_step_memory_mb(self.model, step)
        self.model.zero_grad(set_to_none=True)
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else estimate


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _fmt(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()
                     if k not in ("fold", "epoch"))


def check_rows(recipe: ResolvedRecipe, rows: list[Row]) -> None:
    """Run the head's target checks over the cohort; raise one DataError with every problem."""
    problems = recipe.head.cls.check_rows(recipe.head.config, rows)
    if problems:
        raise DataError(f"cohort targets unusable for head '{recipe.head.name}':\n  " + "\n  ".join(problems))
