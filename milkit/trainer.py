"""Train one fold: plain PyTorch loop, model selection on validation only, resumable checkpoints."""

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from milkit.aggregator import AggregatorOutput
from milkit.checkpoint import load_training_state, load_weights, save_training_state, save_weights
from milkit.data.bags import BagSource, collate_bags
from milkit.errors import DataError
from milkit.head import SAMPLE_WEIGHT
from milkit import distributed, threads
from milkit.loggers import RunLoggers
from milkit.model import Bags, MILModel
from milkit.recipe.validate import ResolvedRecipe

log = logging.getLogger("milkit")
Row = dict[str, Any]


@dataclass
class FoldData:
    """The rows of each split of one fold, and the bags they refer to."""

    rows: dict[str, list[Row]]
    store: BagSource


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
    """Trains ``model`` on one fold and writes ``fold_dir`` (checkpoints, metrics.jsonl); ``loggers``
    mirror each epoch's entry to the recipe's experiment trackers."""

    def __init__(self, recipe: ResolvedRecipe, model: MILModel, data: FoldData, fold_dir: Path,
                 *, fold: int, device: torch.device, progress: bool = True, loggers: RunLoggers | None = None) -> None:
        self.recipe, self.model, self.data, self.fold_dir, self.fold = recipe, model, data, fold_dir, fold
        self.device = device
        self.progress = progress
        self.loggers = loggers or RunLoggers()
        self.ckpt_dir = fold_dir / "checkpoints"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        head = model.head
        self.monitor = recipe.train.monitor or head.monitor
        self.mode = recipe.train.monitor_mode or head.metric_mode(self.monitor)
        self.optimizer, self.scheduler = build_optimizer(model, recipe)
        self.model.to(device)
        self.ddp = None
        if distributed.active():
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                               find_unused_parameters=True)

    def forward_model(self, bags: Bags, targets: dict[str, torch.Tensor]):
        """Training forward: through DistributedDataParallel when running under torchrun."""
        return (self.ddp or self.model)(bags, targets)

    def _autocast(self):
        if self.device.type == "cuda" and self.recipe.train.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _load(self, batch_rows: list[Row], subsample_seed: int | None) -> Bags:
        """Pad the rows' bags into a batch. Training (``subsample_seed`` = the epoch's seed) draws
        ``[train] max_patches`` per slide anew each epoch; evaluation (None) uses whole bags, or a fixed
        draw of ``[eval] max_patches`` (the same every epoch and split). Draws come from a generator
        keyed on (seed, slide), so they depend neither on rank nor on order."""
        if subsample_seed is not None:
            max_patches, seed = self.recipe.train.max_patches, str(subsample_seed)
        else:
            max_patches, seed = self.recipe.eval.max_patches, f"eval:{self.recipe.run.seed}"
        items = []
        for r in batch_rows:
            feats, coords = self.data.store.load(r["slide_id"])
            if max_patches and feats.shape[0] > max_patches:
                keep = sub_bag(feats.shape[0], max_patches, f"{seed}:{r['slide_id']}")
                feats, coords = feats[keep], coords[keep]
            items.append((feats, coords))
        return collate_bags(items).to(self.device)

    def _targets(self, rows: list[Row]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.model.head.collate_targets(rows).items()}

    def train_epoch(self, epoch: int, bar: Progress | None) -> tuple[float, dict[str, float]]:
        """One epoch over the training rows in a seeded order; under torchrun each rank takes its
        share of every global batch and gradients are averaged, so the update equals a single
        process with the same global batch.

        Returns the mean training loss (task loss plus auxiliary terms) and the mean of each
        auxiliary term over this rank's steps."""
        t = self.recipe.train
        self.model.train()
        if not any(p.requires_grad for p in self.model.aggregator.parameters()):
            self.model.aggregator.eval()  # frozen encoder: no dropout, a fixed feature map for the head
        epoch_seed = self.recipe.run.seed * 1000 + self.fold * 100 + epoch
        rows = self.data.rows["train"]
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(epoch_seed)).tolist()
        n_steps = math.ceil(len(rows) / t.batch_size)
        task = bar.add_task(f"epoch {epoch}", total=n_steps) if bar else None
        world, global_loss = distributed.world_size(), self.model.head.loss_is_global
        total = 0.0
        aux_sums: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        for step in range(1, n_steps + 1):
            global_rows = [rows[i] for i in order[(step - 1) * t.batch_size: step * t.batch_size]]
            upcoming = [rows[i] for i in order[step * t.batch_size: (step + 1) * t.batch_size]]
            self.data.store.prefetch([r["slide_id"] for r in distributed.shard(upcoming)])  # overlap I/O
            local_rows = distributed.shard(global_rows)
            weight = len(local_rows) * world / len(global_rows)  # share of the global mean this rank holds
            if not local_rows:  # every rank must join each all-reduce: run one row with zero weight
                local_rows, weight = global_rows[:1], 0.0
            threads.tick()  # fewer torch threads while other processes hold cores (milkit.threads)
            bags, targets = self._load(local_rows, epoch_seed), self._targets(local_rows)
            if global_loss and distributed.active():
                targets[SAMPLE_WEIGHT] = torch.full((len(local_rows),), float(weight > 0), device=self.device)
            with self._autocast():
                out = self.forward_model(bags, targets)
                loss = self.model.training_loss(out, targets)
            for key, term in out.aux_losses.items():
                aux_sums[key] = aux_sums.get(key, 0.0) + float(term.detach())
            scale = 1.0 if global_loss else weight
            (loss * scale / t.accumulate_steps).backward()
            if step % t.accumulate_steps == 0 or step == n_steps:
                if t.grad_clip_value:
                    torch.nn.utils.clip_grad_value_(self.model.parameters(), t.grad_clip_value)
                if t.grad_clip_norm:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += float(loss.detach()) * (len(global_rows) if global_loss else weight * len(global_rows) / world)
            if bar is not None:
                bar.advance(task)
        if bar is not None:
            bar.remove_task(task)
        log.debug("epoch %d: feature reads %.1f MiB/s", epoch, self.data.store.read_rate_mb_s)
        aux = {k: v / n_steps for k, v in aux_sums.items()}
        if global_loss:
            return total / max(len(rows), 1), aux
        return sum(distributed.gather_objects(total)) / max(len(rows), 1), aux

    @torch.no_grad()
    def predict(self, split: str) -> tuple[list[Row], float, float]:
        """Records for ``split`` (in the split's slide order), its mean loss, inference s/slide.

        Under torchrun each rank predicts its share of the slides and the records are merged.
        """
        self.model.eval()
        rows = self.data.rows[split]
        local = distributed.shard(rows)
        records: list[Row] = []
        total, start = 0.0, time.perf_counter()
        batch_size = max(self.recipe.train.batch_size, 8)
        for i in range(0, len(local), batch_size):
            batch_rows = local[i:i + batch_size]
            threads.tick()
            bags, targets = self._load(batch_rows, None), self._targets(batch_rows)
            with self._autocast():
                x = self.model.encode(bags)
                total += float(self.model.head.loss(self.model.head(x, targets), targets)) * len(batch_rows)
                records.extend(self.model.head.predict(x, batch_rows))
        per_slide = (time.perf_counter() - start) / max(len(local), 1)
        if distributed.active():
            records = distributed.unshard(distributed.gather_objects(records))
            total = sum(distributed.gather_objects(total))
        return records, total / max(len(rows), 1), per_slide

    def encoded(self, split: str) -> Iterator[tuple[AggregatorOutput, list[Row]]]:
        """``(x, rows)`` for every slide of ``split`` (all ranks; whole bags unless ``[eval] max_patches``),
        encoded as it is pulled; the caller sets eval mode and ``no_grad``."""
        rows = self.data.rows[split]
        batch_size = max(self.recipe.train.batch_size, 8)
        for i in range(0, len(rows), batch_size):
            batch_rows = rows[i:i + batch_size]
            threads.tick()
            bags = self._load(batch_rows, None)
            with self._autocast():
                x = self.model.encode(bags)
            yield x, batch_rows

    def index_train_split(self) -> None:
        """Show the head the training split under the current weights (:meth:`Head.index_train_split`)."""
        self.model.eval()
        with torch.no_grad():
            self.model.head.index_train_split(self.encoded("train"))

    def fit(self, *, resume: bool) -> dict[str, Any]:
        t, ev = self.recipe.train, self.recipe.eval
        metrics_path = self.fold_dir / "metrics.jsonl"
        last = self.ckpt_dir / "last.safetensors"
        state = {"epoch": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "epoch_seconds": []}
        if resume and last.with_suffix(".json").is_file():
            meta = load_training_state(last, self.model, self.optimizer, self.scheduler)
            state.update({k: meta[k] for k in state if k in meta})
            if self.recipe.run.deterministic and meta.get("threads"):
                threads.govern(int(meta["threads"]))  # the same float results as the run it continues
            log.info("fold %d: resumed after epoch %d", self.fold, state["epoch"])
        main = distributed.is_main()
        self.loggers.start_fold(self.fold, first_epoch=state["epoch"] + 1)
        if main:
            lines = metrics_path.read_text().splitlines() if metrics_path.is_file() else []
            kept = [ln for ln in lines if json.loads(ln)["epoch"] <= state["epoch"]]
            metrics_path.write_text("".join(ln + "\n" for ln in kept))
        has_val = bool(self.data.rows.get("val"))
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, disable=not (self.progress and main), transient=True) as bar:
            epochs = bar.add_task(f"fold {self.fold}: training", total=t.epochs, completed=state["epoch"])
            for epoch in range(state["epoch"] + 1, t.epochs + 1):
                start = time.perf_counter()
                train_loss, aux = self.train_epoch(epoch, bar)
                seconds = time.perf_counter() - start
                entry: dict[str, Any] = {"fold": self.fold, "epoch": epoch, "train_loss": train_loss,
                                         **{f"train_aux_{k}": v for k, v in aux.items()},
                                         "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3)}
                validate = has_val and (epoch % ev.every_n_epochs == 0 or epoch == t.epochs)
                if validate or epoch == t.epochs:  # before validation and before the checkpoints are written
                    self.index_train_split()
                if validate:
                    with self.model.head.validation():
                        records, val_loss, _ = self.predict("val")
                        val_metrics = _scalars(self.model.head.validation_metrics(records))
                    entry.update({"val_loss": val_loss, **{f"val_{k}": v for k, v in val_metrics.items()}})
                    value = val_loss if self.monitor == "loss" else val_metrics.get(self.monitor)
                    if _better(value, state["best"], self.mode):
                        state.update(best=value, best_epoch=epoch, bad_epochs=0)
                        if main:
                            save_weights(self.model, self.ckpt_dir / "best.safetensors")
                    else:
                        state["bad_epochs"] += 1
                if self.scheduler is not None:
                    self.scheduler.step()
                state["epoch"] = epoch
                state["epoch_seconds"].append(seconds)
                if main:
                    with metrics_path.open("a") as f:
                        f.write(json.dumps(entry) + "\n")
                    self.loggers.log_epoch(entry)
                    save_training_state(last, self.model, self.optimizer, self.scheduler,
                                        {**state, "threads": torch.get_num_threads()})
                distributed.barrier()
                bar.advance(epochs)
                log.info("fold %d epoch %d: %s", self.fold, epoch, _fmt(entry))
                if t.early_stopping_patience and state["bad_epochs"] >= t.early_stopping_patience:
                    log.info("fold %d: early stop at epoch %d (no %s improvement for %d epochs)",
                             self.fold, epoch, self.monitor, state["bad_epochs"])
                    break
        return state

    def evaluate(self, state: dict[str, Any]) -> dict[str, Any]:
        """Load the selected checkpoint and compute metrics and records for the eval splits."""
        distributed.barrier()
        best = self.ckpt_dir / "best.safetensors"
        use_best = self.recipe.eval.checkpoint == "best" and best.is_file()
        if use_best:
            load_weights(self.model, best)
        head = self.model.head
        splits = [s for s in self.recipe.eval.splits if self.data.rows.get(s)]
        need_train = head.uses_train_records
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
                          else "live tensors of forward+backward + params + Adam moments (largest training bag)",
                          "inference_seconds_per_slide": result.pop("inference_seconds_per_slide", None),
                          "threads": torch.get_num_threads()}
        return result

    def step_memory_mb(self) -> float:
        """Peak memory of a training step on the largest training bag (see milkit.profiling)."""
        from milkit.profiling import training_step_memory_mb

        rows = self.data.rows["train"]
        biggest = max(rows, key=lambda r: self.data.store.load(r["slide_id"])[0].shape[0])
        bags, targets = self._load([biggest], 0), self._targets([biggest])  # a training step: [train] max_patches
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

        def step() -> torch.Tensor:
            with self._autocast():
                loss = self.model.training_loss(self.model(bags, targets), targets)
            loss.backward()
            return loss

        if self.device.type == "cuda":
            step()
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            peak = training_step_memory_mb(self.model, step)
        self.model.zero_grad(set_to_none=True)
        return peak


def sub_bag(n: int, k: int, key: str) -> torch.Tensor:
    """``k`` of ``n`` patch indices, in scan order, drawn by a generator seeded from ``key``."""
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest())
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


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
