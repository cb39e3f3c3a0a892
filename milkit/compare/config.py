"""The recipe's ``[compare]`` table: which aggregators, folds and seeds to compare."""

from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import Field

from milkit.config import ComponentConfig


class CompareSection(ComponentConfig):
    aggregators: list[dict[str, Any]] = Field(
        ..., min_length=1, description="Aggregators to compare: {name = \"abmil\", <parameter overrides>}, "
        "optionally head = {name = \"...\", <keys>} to pair it with another head than [head], and train = {...} "
        "to override [train] keys for this entry."
    )
    folds: int = Field(5, ge=2, le=20, description="Patient-disjoint stratified folds (test sets partition the cohort).")
    seeds: list[int] = Field([0], min_length=1, description="Training seeds per fold.")
    metric: str | None = Field(None, description="Primary metric (default: the head's monitor).")
    test: Literal["wilcoxon", "bootstrap"] = Field(
        "wilcoxon", description="Paired test of each aggregator against the best over fold×seed runs."
    )


ENTRY_KEYS = ("name", "label", "head", "freeze", "train")
"""Keys of a ``[compare] aggregators`` entry that are not the aggregator's own."""


def entry_label(entry: dict[str, Any]) -> str:
    """An entry's row label: ``label``, else ``<aggregator>`` or ``<aggregator>+<head>``."""
    if "label" in entry:
        return str(entry["label"])
    table = entry.get("head")
    return f"{entry['name']}+{table['name']}" if isinstance(table, dict) and "name" in table else str(entry["name"])


def _check_train(col: Any, i: int, name: str, table: Any) -> None:
    """An entry's ``train = {...}``: keys of ``[train]`` that override the recipe's for this entry."""
    from milkit.recipe.sections import TrainSection

    if not isinstance(table, dict):
        col.add("compare", "aggregators", f"entry {i + 1} ({name}): train must be a table of [train] keys")
        return
    unknown = sorted(set(table) - set(TrainSection.model_fields))
    if unknown:
        col.add("compare", "aggregators", f"entry {i + 1} ({name}): train: unknown [train] key(s) "
                f"{', '.join(unknown)}")
        return
    try:
        TrainSection.model_validate(table)
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            col.add("compare", "aggregators", f"entry {i + 1} ({name}): train.{'.'.join(map(str, err['loc']))}: "
                    f"{err['msg']}")


def _check_head(col: Any, registries: Any, i: int, aggregator: Any, table: Any) -> None:
    where = f"entry {i + 1} ({aggregator.name})"
    if not isinstance(table, dict) or not isinstance(table.get("name"), str):
        col.add("compare", "aggregators", f"{where}: head must be a table with a name, e.g. head = "
                "{name = \"retrieval\"}")
        return
    if table["name"] not in registries.heads:
        col.add("compare", "aggregators", f"{where}: {registries.heads.unknown_message(table['name'])}")
        return
    cls = registries.heads.get(table["name"])
    try:
        cls.Config.model_validate({k: v for k, v in table.items() if k != "name"})
    except pydantic.ValidationError as exc:
        for err in exc.errors():
            col.add("compare", "aggregators", f"{where}: head.{'.'.join(map(str, err['loc']))}: {err['msg']}")
    if cls.requires_tokens and not aggregator.provides_tokens:
        col.add("compare", "aggregators", f"{where}: head '{cls.name}' needs a token sequence, which aggregator "
                f"'{aggregator.name}' does not provide")


def _resolved(config: Any, entry: dict[str, Any], base_dir: Path) -> None:
    """Relative paths of a validated entry (a slide encoder's ``weights``) made absolute against the recipe's folder."""
    for key, value in config:
        if isinstance(value, Path) and key in entry and not value.expanduser().is_absolute():
            entry[key] = str((base_dir / value.expanduser()).resolve())


def validate_compare_table(col: Any, registries: Any, table: Any,
                           base_dir: Path | None = None) -> CompareSection | None:
    """Add issues for a bad ``[compare]`` table to ``col`` (the validator's collector); relative paths in
    entries resolve against ``base_dir`` (the recipe's folder)."""
    if not isinstance(table, dict):
        col.add("compare", None, "must be a table")
        return None
    try:
        section = CompareSection.model_validate(table)
    except pydantic.ValidationError as exc:
        col.pydantic("compare", exc, CompareSection, "[compare]")
        return None
    labels: set[str] = set()
    for i, entry in enumerate(section.aggregators):
        name = entry.get("name")
        if not isinstance(name, str):
            col.add("compare", "aggregators", f"entry {i + 1} has no name; registered aggregators: "
                    f"{', '.join(registries.aggregators.names())}")
            continue
        if name not in registries.aggregators:
            col.add("compare", "aggregators", f"entry {i + 1}: {registries.aggregators.unknown_message(name)}")
            continue
        cls = registries.aggregators.get(name)
        params = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        try:
            config = cls.Config.model_validate(params)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                col.add("compare", "aggregators", f"entry {i + 1} ({name}): {key}: {err['msg']}")
        else:
            if base_dir is not None:
                _resolved(config, entry, base_dir)
            freeze = entry.get("freeze", False)
            if not isinstance(freeze, bool):
                col.add("compare", "aggregators", f"entry {i + 1} ({name}): freeze: expected true or false")
            elif freeze and cls.pretrained_weights(config) is None:
                col.add("compare", "aggregators", f"entry {i + 1} ({name}): freeze = true needs a slide encoder's "
                        "weights = \"<file>\" (nothing to freeze)")
        if entry.get("head") is not None:
            _check_head(col, registries, i, cls, entry["head"])
        if entry.get("train") is not None:
            _check_train(col, i, name, entry["train"])
        label = entry_label(entry)
        if label in labels:
            col.add("compare", "aggregators", f"entry {i + 1}: '{label}' appears twice; give one a distinct "
                    "label = \"...\"")
        labels.add(label)
    return section
