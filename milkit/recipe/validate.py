"""Check a recipe completely before any work, collecting every problem with its file and line."""

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from milkit.config import ComponentConfig, validation_messages
from milkit.errors import Issue, RecipeError
from milkit.recipe.load import Recipe
from milkit.recipe.locate import locate
from milkit.recipe.sections import ALL_TABLES, SECTIONS, CohortSection, EvalSection, RunSection, TrainSection
from milkit.registry import Registries

DEMO_EXTRACTOR = "color-texture"
AGGREGATOR_RESERVED = {"name", "init", "init_recipe", "freeze"}


@dataclass
class Component:
    """A component table resolved to its class and validated config."""

    kind: str
    name: str
    cls: type
    config: ComponentConfig
    extra: dict[str, Any] = field(default_factory=dict)  # init/freeze, extraction settings

    def to_table(self) -> dict[str, Any]:
        table: dict[str, Any] = {"name": self.name}
        for key, value in self.extra.items():
            table[key] = value.model_dump(mode="json") if isinstance(value, pydantic.BaseModel) else value
        if "settings" in table:
            table.update(table.pop("settings"))
        table.update(self.config.model_dump(mode="json"))
        return {k: v for k, v in table.items() if v is not None}


@dataclass
class ResolvedRecipe:
    """A recipe that passed validation: typed sections plus resolved components."""

    source: Path
    run: RunSection
    cohort: CohortSection
    train: TrainSection
    eval: EvalSection
    aggregator: Component
    head: Component
    extractor: Component | None
    compare: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe (every default filled in), for recipe.toml in the run dir."""
        out: dict[str, Any] = {}
        for name, section in (("run", self.run), ("cohort", self.cohort)):
            out[name] = {k: v for k, v in section.model_dump(mode="json").items() if v is not None}
        if self.extractor is not None:
            out["extractor"] = self.extractor.to_table()
        out["aggregator"] = self.aggregator.to_table()
        out["head"] = self.head.to_table()
        out["train"] = {k: v for k, v in self.train.model_dump(mode="json").items() if v is not None}
        out["eval"] = self.eval.model_dump(mode="json")
        if self.compare is not None:
            out["compare"] = self.compare
        return out

    @property
    def output_dir(self) -> Path:
        return self.run.output_dir or Path("runs") / self.run.name


class _Collector:
    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.issues: list[Issue] = []

    def add(self, table: str, key: str | None, message: str) -> None:
        dotted = f"{table}.{key}" if key else table
        if dotted in self.recipe.overrides:
            self.issues.append(Issue(f"--set {self.recipe.overrides[dotted]}", None, dotted, message))
            return
        line = locate(self.recipe.text, table, key) if table in self.recipe.data or key else None
        self.issues.append(Issue(str(self.recipe.path), line, f"[{table}] {key}" if key else f"[{table}]", message))

    def pydantic(self, table: str, exc: pydantic.ValidationError, model: type, what: str) -> None:
        for key, msg in validation_messages(exc, sorted(model.model_fields), what):
            self.add(table, key, msg)


def _resolve_path(base: Path, value: Path | None) -> Path | None:
    if value is None:
        return None
    value = Path(value).expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def _component(col: _Collector, registries: Registries, kind: str, table: dict[str, Any], reserved: set[str]) -> Component | None:
    name = table.get("name")
    if not isinstance(name, str):
        col.add(kind, "name" if "name" in table else None, f"missing 'name' (a registered {kind}: "
                f"{', '.join(registries.of(kind).names())})")
        return None
    registry = registries.of(kind)
    if name not in registry:
        col.add(kind, "name", registry.unknown_message(name))
        return None
    cls = registry.get(name)
    params = {k: v for k, v in table.items() if k not in reserved}
    for wired in ("in_dim", "out_dim"):
        if wired in params:
            col.add(kind, wired, "set automatically from the data; remove this key")
            params.pop(wired)
    try:
        config = cls.Config.model_validate(params)
    except pydantic.ValidationError as exc:
        col.pydantic(kind, exc, cls.Config, f"{kind} '{name}'")
        return None
    return Component(kind, name, cls, config)


def _extractor(col: _Collector, registries: Registries, table: dict[str, Any]) -> Component | None:
    from milkit.extract.settings import ExtractionSettings

    settings_keys = set(ExtractionSettings.model_fields)
    comp = _component(col, registries, "extractor", table, {"name"} | settings_keys)
    try:
        settings = ExtractionSettings.model_validate({k: v for k, v in table.items() if k in settings_keys})
    except pydantic.ValidationError as exc:
        col.pydantic("extractor", exc, ExtractionSettings, "extraction")
        return None
    if comp is not None:
        comp.extra["settings"] = settings
    return comp


def validate_recipe(recipe: Recipe, registries: Registries, *, check_files: bool = True) -> ResolvedRecipe:
    """Validate everything a run would use; raise RecipeError listing every problem."""
    col = _Collector(recipe)
    data = recipe.data
    for table in data:
        if table not in ALL_TABLES:
            close = difflib.get_close_matches(table, ALL_TABLES, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            col.add(table, None, f"unknown table{hint} valid tables: {', '.join(ALL_TABLES)}")
        elif not isinstance(data[table], dict):
            col.add(table, None, "must be a table")
    sections: dict[str, Any] = {}
    for name, model in SECTIONS.items():
        raw = data.get(name, {})
        if name == "cohort" and name not in data:
            col.add("cohort", None, "missing [cohort] table (set demo = true, csv = ... or annotations = ...)")
            continue
        try:
            sections[name] = model.model_validate(raw if isinstance(raw, dict) else {})
        except pydantic.ValidationError as exc:
            col.pydantic(name, exc, model, f"[{name}]")

    components: dict[str, Component | None] = {}
    for kind, reserved in (("aggregator", AGGREGATOR_RESERVED), ("head", {"name"})):
        if not isinstance(data.get(kind), dict):
            col.add(kind, None, f"missing [{kind}] table with a 'name' ({', '.join(registries.of(kind).names())})")
            components[kind] = None
        else:
            components[kind] = _component(col, registries, kind, data[kind], reserved)
    cohort: CohortSection | None = sections.get("cohort")
    ext_table = data.get("extractor")
    if ext_table is None and cohort is not None and cohort.demo:
        ext_table = {"name": DEMO_EXTRACTOR}
    components["extractor"] = _extractor(col, registries, ext_table) if isinstance(ext_table, dict) else None

    agg, head = components["aggregator"], components["head"]
    if agg is not None:
        agg_table = data["aggregator"]
        init = agg_table.get("init")
        init_recipe = agg_table.get("init_recipe")
        freeze = agg_table.get("freeze", False)
        if init is not None and not isinstance(init, str):
            col.add("aggregator", "init", f"expected the path of a run dir (a string), got {init!r}")
        elif init is not None:
            init_path = Path(init).expanduser().resolve()  # run dirs are relative to the working dir, as output_dir
            agg.extra["init"] = str(init_path)
            if init_recipe is not None:
                recipe_path = _resolve_path(recipe.base_dir, Path(str(init_recipe)))
                agg.extra["init_recipe"] = str(recipe_path)
                if check_files and not recipe_path.is_file():
                    col.add("aggregator", "init_recipe", f"file not found: {recipe_path}")
            elif check_files and not (init_path / "recipe.toml").is_file():
                col.add("aggregator", "init", f"not a milkit run dir (no recipe.toml in {init_path}); train it "
                        "first (e.g. `milkit run recipes/histgen_report.toml`) or set init_recipe = \"<recipe>\"")
        elif init_recipe is not None:
            col.add("aggregator", "init_recipe", "init_recipe needs init = \"<run dir>\" (where it writes its run)")
        if not isinstance(freeze, bool):
            col.add("aggregator", "freeze", f"expected true or false, got {freeze!r}")
        elif freeze and init is None:
            col.add("aggregator", "freeze", "freeze = true needs init = \"<run dir>\" (nothing to freeze)")
        elif freeze:
            agg.extra["freeze"] = True
    if agg is not None and head is not None and head.cls.requires_tokens and not agg.cls.provides_tokens:
        with_tokens = [n for n in registries.aggregators.names() if registries.aggregators.get(n).provides_tokens]
        col.add("aggregator", "name", f"head '{head.name}' needs a token sequence, which aggregator '{agg.name}' "
                f"does not provide; aggregators that do: {', '.join(with_tokens) or '(none)'}")

    if cohort is not None:
        cohort = cohort.model_copy(update={
            k: _resolve_path(recipe.base_dir, getattr(cohort, k))
            for k in ("csv", "annotations", "slides_dir", "features_dir", "splits_file")
        })
        sections["cohort"] = cohort
        if check_files:
            _check_cohort_files(col, cohort, head)
    run: RunSection | None = sections.get("run")
    if run is not None and run.output_dir is not None:
        sections["run"] = run.model_copy(update={"output_dir": _resolve_path(recipe.base_dir, run.output_dir)})
    if "compare" in data:
        from milkit.compare.config import validate_compare_table

        validate_compare_table(col, registries, data["compare"])
    if col.issues:
        raise RecipeError(sorted(col.issues, key=lambda i: (i.file != str(recipe.path), i.line or 0)))
    assert agg is not None and head is not None
    return ResolvedRecipe(
        source=recipe.path.resolve(), run=sections["run"], cohort=sections["cohort"], train=sections["train"],
        eval=sections["eval"], aggregator=agg, head=head, extractor=components["extractor"],
        compare=data.get("compare"),
    )


def _check_cohort_files(col: _Collector, cohort: CohortSection, head: Component | None) -> None:
    for key in ("csv", "annotations", "splits_file"):
        path = getattr(cohort, key)
        if path is not None and not path.is_file():
            col.add("cohort", key, f"file not found: {path}")
    if cohort.splits == "given" and cohort.annotations is None and cohort.splits_file is None:
        col.add("cohort", "splits", "splits = 'given' needs splits_file = \"<run>/splits.json\" or annotations")
    if cohort.csv is not None and cohort.csv.is_file() and head is not None:
        with cohort.csv.open(newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        needed = ["slide_id", *head.cls.target_columns]
        label_col = getattr(head.config, "label_column", None)
        if label_col:
            needed = ["slide_id", label_col]
        for column in needed:
            if column not in header:
                col.add("cohort", "csv", f"column '{column}' (needed by head '{head.name}') is missing from "
                        f"{cohort.csv}; columns present: {', '.join(header)}")
