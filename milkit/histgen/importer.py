"""Turn an official HistGen checkpoint + its annotation JSON into a milkit run directory."""

import json
from pathlib import Path
from typing import Any

from milkit.errors import CheckpointError, DataError
from milkit.histgen.aggregator import HistGen, HistGenConfig
from milkit.histgen.convert import convert_state_dict, infer_sizes, load_upstream_state_dict
from milkit.histgen.report_head import Report, ReportConfig
from milkit.histgen.tokenizer import Tokenizer
from milkit.model import MILModel

# HistGen's train_wsi_report.sh (spec §3.2, §3.4): what `milkit run` needs to retrain it.
HISTGEN_TRAIN = {"epochs": 40, "batch_size": 1, "optimizer": "adam", "lr": 1e-4, "weight_decay": 5e-5,
                 "amsgrad": True, "scheduler": "step", "step_size": 1, "gamma": 0.8, "grad_clip_value": 0.1,
                 "bf16": False}


def train_reports(annotations: Path) -> list[str]:
    """Reports of the annotation JSON's train split (the vocabulary source)."""
    try:
        data = json.loads(Path(annotations).read_text(encoding="utf-8"))
        return [str(item["report"]) for item in data["train"]]
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {annotations}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{annotations} is not a HistGen annotation JSON ({{'train': [{{'id', 'report'}}, ...], "
                        f"'val': ..., 'test': ...}}): {exc!r}") from None


def build_faithful(sizes: dict[str, int], tokenizer: Tokenizer, *, num_heads: int = 8, topk: int = 512,
                   prototype_num: int = 512, max_seq_length: int = 100,
                   beam_size: int = 3) -> tuple[MILModel, HistGenConfig, ReportConfig, dict[str, Any]]:
    """The faithful milkit model with the checkpoint's sizes (weights left at init)."""
    agg_cfg = HistGenConfig(variant="faithful", d_vf=sizes["d_vf"], d_model=sizes["d_model"], num_heads=num_heads,
                            d_ff=sizes["d_ff"], region_size=sizes["region_size"], prototype_num=prototype_num,
                            cmm_size=sizes["cmm_size"], cmm_dim=sizes["cmm_dim"], topk=min(topk, sizes["cmm_size"]))
    head_cfg = ReportConfig(max_seq_length=max_seq_length, threshold=tokenizer.threshold or 10, keep_eos=False,
                            beam_size=beam_size, decoding="beam", val_decoding="beam", d_model=sizes["d_model"],
                            num_heads=num_heads, d_ff=sizes["d_ff"], num_layers=sizes["num_layers"],
                            cmm_size=sizes["cmm_size"], topk=min(topk, sizes["cmm_size"]))
    state = {"tokenizer": tokenizer.to_dict(), "max_seq_length": max_seq_length}
    agg = HistGen(agg_cfg, in_dim=sizes["in_dim"])
    model = MILModel(agg, Report(head_cfg, in_dim=agg.out_dim, target_state=state))
    return model, agg_cfg, head_cfg, state


def _toml(tables: dict[str, dict[str, Any]], header: str) -> str:
    """A flat TOML document (scalars and lists of scalars only)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))
    lines = [f"# {line}" for line in header.splitlines()]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def import_histgen(checkpoint: Path, annotations: Path, out_dir: Path, *, threshold: int = 10,
                   max_seq_length: int = 100, num_heads: int = 8, topk: int = 512, prototype_num: int = 512,
                   region_size: int | None = None, features_dir: Path | None = None) -> Path:
    """Convert ``checkpoint`` and write ``out_dir`` (recipe.toml, fold_0/{target_state.json, checkpoints/}).

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit (names the key/shape).
        DataError: the annotation file is unusable.
    """
    from safetensors.torch import save_model

    upstream = load_upstream_state_dict(checkpoint)
    sizes = infer_sizes(upstream)
    if region_size is not None:
        sizes["region_size"] = region_size
    tok = Tokenizer.build(train_reports(annotations), threshold=threshold)
    if sizes["outputs"] != tok.vocab_size + 1:
        raise CheckpointError(
            f"vocabulary mismatch: the train split of {annotations} (threshold {threshold}) gives V = "
            f"{tok.vocab_size} tokens, so the model needs V + 1 = {tok.vocab_size + 1} outputs, but the checkpoint's "
            f"'encoder_decoder.logit.weight' has {sizes['outputs']} rows. Use the annotation file and --threshold "
            "the checkpoint was trained with (HistGen's scripts: threshold 10)."
        )
    model, agg_cfg, head_cfg, state = build_faithful(sizes, tok, num_heads=num_heads, topk=topk,
                                                     prototype_num=prototype_num, max_seq_length=max_seq_length)
    model.load_state_dict(convert_state_dict(upstream, model.state_dict()), strict=True)

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "fold_0" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, str(ckpt_dir / "best.safetensors"))
    (ckpt_dir / "best.json").write_text(json.dumps(
        {"epoch": None, "source": "import-histgen", "checkpoint": str(Path(checkpoint).resolve())}, indent=2))
    (out_dir / "fold_0" / "target_state.json").write_text(json.dumps(state, indent=2))
    (out_dir / "fold_0" / "model.json").write_text(json.dumps(
        {"in_dim": sizes["in_dim"], "aggregator": "histgen", "head": "report"}, indent=2))
    cohort = {"annotations": str(Path(annotations).resolve()), "splits": "given",
              "features_dir": str(Path(features_dir).resolve()) if features_dir else None}
    recipe = {"run": {"name": out_dir.name, "seed": 456789}, "cohort": cohort, "train": HISTGEN_TRAIN,
              "aggregator": {"name": "histgen", **agg_cfg.model_dump(mode="json")},
              "head": {"name": "report", **head_cfg.model_dump(mode="json")}}
    header = (f"HistGen imported by `milkit import-histgen` from {checkpoint}\n"
              "(variant 'faithful': the published function; weights in fold_0/checkpoints/best.safetensors).\n"
              "The [train] table repeats HistGen's training script, for retraining with `milkit run`.")
    (out_dir / "recipe.toml").write_text(_toml(recipe, header), encoding="utf-8")
    return out_dir
