"""The recipe's ``[compare]`` table: which aggregators, folds and seeds to compare."""

from typing import Any, Literal

import pydantic
from pydantic import Field

from milkit.config import ComponentConfig


class CompareSection(ComponentConfig):
    aggregators: list[dict[str, Any]] = Field(
        ..., min_length=1, description="Aggregators to compare: {name = \"abmil\", <parameter overrides>}."
    )
    folds: int = Field(5, ge=2, le=20, description="Patient-disjoint stratified folds (test sets partition the cohort).")
    seeds: list[int] = Field([0], min_length=1, description="Training seeds per fold.")
    metric: str | None = Field(None, description="Primary metric (default: the head's monitor).")
    test: Literal["wilcoxon", "bootstrap"] = Field(
        "wilcoxon", description="Paired test of each aggregator against the best over fold×seed runs."
    )


def validate_compare_table(col: Any, registries: Any, table: Any) -> CompareSection | None:
    """Add issues for a bad ``[compare]`` table to ``col`` (the validator's collector)."""
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
        params = {k: v for k, v in entry.items() if k not in ("name", "label")}
        try:
            cls.Config.model_validate(params)
        except pydantic.ValidationError as exc:
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                col.add("compare", "aggregators", f"entry {i + 1} ({name}): {key}: {err['msg']}")
        label = str(entry.get("label", name))
        if label in labels:
            col.add("compare", "aggregators", f"entry {i + 1}: '{label}' appears twice; give one a distinct "
                    "label = \"...\"")
        labels.add(label)
    return section
