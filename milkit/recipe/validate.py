"""Check a recipe completely before any work, collecting every problem with its file and line."""

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic

from milkit.cohort_format import CohortFormat
from milkit.compare.config import CompareSection
from milkit.config import ComponentConfig, validation_messages
from milkit.errors import Issue, MilkitError, RecipeError
from milkit.recipe.load import Recipe
from milkit.recipe.locate import locate
from milkit.recipe.sections import ALL_TABLES, SECTIONS, CohortSection, EvalSection, RunSection, TrainSection
from milkit.registry import Registries

if TYPE_CHECKING:
    from milkit.data.cohort import Cohort

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
class CohortSource:
    """The ``[cohort]`` key that names the cohort, resolved to its format and value."""

    format: type[CohortFormat]
    key: str
    value: Path | bool

    def load(self, *, slides_dir: Path | None = None) -> "Cohort":
        return self.format().load(self.value, slides_dir=slides_dir)


@dataclass
class ResolvedRecipe:
    """A recipe that passed validation: typed sections plus resolved components."""

    source: Path
    run: RunSection
    cohort: CohortSection
    cohort_source: CohortSource
    train: TrainSection
    eval: EvalSection
    aggregator: Component
    head: Component
    extractor: Component | None
    compare: CompareSection | None

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe (every default filled in), for recipe.toml in the run dir."""
        out: dict[str, Any] = {}
        for name, section in (("run", self.run), ("cohort", self.cohort)):
            out[name] = {k: v for k, v in section.model_dump(mode="json").items() if v is not None}
        value = self.cohort_source.value
        out["cohort"] = {self.cohort_source.key: value if isinstance(value, bool) else str(value), **out["cohort"]}
        if self.extractor is not None:
            out["extractor"] = self.extractor.to_table()
        out["aggregator"] = self.aggregator.to_table()
        out["head"] = self.head.to_table()
        out["train"] = {k: v for k, v in self.train.model_dump(mode="json").items() if v is not None}
        out["eval"] = {k: v for k, v in self.eval.model_dump(mode="json").items() if v is not None}
        if self.compare is not None:
            out["compare"] = self.compare.model_dump(mode="json", exclude_none=True)
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
    sections = check_structure(col, recipe.data)
    source, cohort = check_cohort(col, recipe, registries, check_files=check_files)
    agg, head = check_model(col, registries, recipe.data, recipe.base_dir)
    extractor = check_extractor(col, registries, recipe.data, source)
    if extractor is not None:
        check_setting_paths(col, recipe, extractor, check_files=check_files)
    if agg is not None:
        check_transfer(col, recipe, agg, check_files=check_files)
    if cohort is not None and source is not None and check_files:
        check_cohort_files(col, cohort, source, head)
    compare = check_compare(col, registries, recipe.data, recipe.base_dir)
    if "run" in sections and check_files:
        check_run(col, recipe, sections["run"])
    if "run" in sections:
        check_loggers(col, sections["run"], check_packages=check_files)
    if col.issues:
        raise RecipeError(sorted(col.issues, key=lambda i: (i.file != str(recipe.path), i.line or 0)))
    assert agg is not None and head is not None and cohort is not None and source is not None
    run: RunSection = sections["run"]
    if run.output_dir is not None:
        run = run.model_copy(update={"output_dir": _resolve_path(recipe.base_dir, run.output_dir)})
    return ResolvedRecipe(source=recipe.path.resolve(), run=run, cohort=cohort, cohort_source=source,
                          train=sections["train"], eval=sections["eval"], aggregator=agg, head=head,
                          extractor=extractor, compare=compare)


def check_structure(col: _Collector, data: dict[str, Any]) -> dict[str, Any]:
    """Unknown or non-table tables; the fixed sections ([run], [train], [eval]) as typed models."""
    for table in data:
        if table not in ALL_TABLES:
            close = difflib.get_close_matches(table, ALL_TABLES, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            col.add(table, None, f"unknown table{hint} valid tables: {', '.join(ALL_TABLES)}")
        elif not isinstance(data[table], dict):
            col.add(table, None, "must be a table")
    sections: dict[str, Any] = {}
    for name, model in SECTIONS.items():
        if name == "cohort":  # its format keys first: see check_cohort
            continue
        raw = data.get(name, {})
        try:
            sections[name] = model.model_validate(raw if isinstance(raw, dict) else {})
        except pydantic.ValidationError as exc:
            col.pydantic(name, exc, model, f"[{name}]")
    return sections


def check_cohort(col: _Collector, recipe: Recipe, registries: Registries, *,
                 check_files: bool) -> tuple[CohortSource | None, CohortSection | None]:
    """``[cohort]``: exactly one key naming a registered cohort format, and the typed settings."""
    table = recipe.data.get("cohort")
    formats = [registries.cohort_formats.get(n) for n in registries.cohort_formats.names()]
    choices = " or ".join(f"{f.key} = true" if f.value == "flag" else f'{f.key} = "..."' for f in formats)
    if not isinstance(table, dict):
        if "cohort" not in recipe.data:
            col.add("cohort", None, f"missing [cohort] table (set {choices})")
        return None, None
    named = [k for k in table if registries.cohort_format_for(k) is not None]
    settings = {k: v for k, v in table.items() if k not in named}
    try:
        cohort = CohortSection.model_validate(settings)
    except pydantic.ValidationError as exc:
        col.pydantic("cohort", exc, CohortSection, "[cohort]")
        # keep checking the rest (columns, stratify) with what was given; nothing runs anyway
        cohort = CohortSection.model_construct(**{k: v for k, v in settings.items() if k in CohortSection.model_fields})
    cohort = cohort.model_copy(update={k: _resolve_path(recipe.base_dir, getattr(cohort, k))
                                       for k in ("slides_dir", "features_dir", "splits_file")})
    if len(named) != 1:
        what = f"names {len(named)} cohorts ({', '.join(named)})" if named else "names no cohort"
        col.add("cohort", named[1] if len(named) > 1 else None, f"{what}; set exactly one of {choices}")
        return None, cohort
    key = named[0]
    fmt = registries.cohort_format_for(key)
    assert fmt is not None
    value = table[key]
    if fmt.value == "flag":
        if value is not True:
            col.add("cohort", key, f"expected true (or remove the key), got {value!r}")
            return None, cohort
        return CohortSource(fmt, key, True), cohort
    if not isinstance(value, str) or not value.strip():
        col.add("cohort", key, f"expected the path of a {fmt.description or fmt.name} file, got {value!r}")
        return None, cohort
    path = _resolve_path(recipe.base_dir, Path(value))
    assert path is not None
    if check_files and not path.is_file():
        col.add("cohort", key, f"file not found: {path}")
    return CohortSource(fmt, key, path), cohort


def check_model(col: _Collector, registries: Registries, data: dict[str, Any],
                base_dir: Path) -> tuple[Component | None, Component | None]:
    """``[aggregator]`` and ``[head]``: registered names, valid configs (relative paths, e.g. a slide
    encoder's ``weights``, resolved against the recipe's folder), and compatible with each other."""
    components: dict[str, Component | None] = {}
    for kind, reserved in (("aggregator", AGGREGATOR_RESERVED), ("head", {"name"})):
        if not isinstance(data.get(kind), dict):
            col.add(kind, None, f"missing [{kind}] table with a 'name' ({', '.join(registries.of(kind).names())})")
            components[kind] = None
        else:
            comp = _component(col, registries, kind, data[kind], reserved)
            if comp is not None:
                paths = {k: _resolve_path(base_dir, v) for k, v in comp.config if isinstance(v, Path)}
                comp.config = comp.config.model_copy(update=paths) if paths else comp.config
            components[kind] = comp
    agg, head = components["aggregator"], components["head"]
    if agg is not None and head is not None and head.cls.requires_tokens and not agg.cls.provides_tokens:
        with_tokens = [n for n in registries.aggregators.names() if registries.aggregators.get(n).provides_tokens]
        col.add("aggregator", "name", f"head '{head.name}' needs a token sequence, which aggregator '{agg.name}' "
                f"does not provide; aggregators that do: {', '.join(with_tokens) or '(none)'}")
    return agg, head


def check_extractor(col: _Collector, registries: Registries, data: dict[str, Any],
                    source: CohortSource | None) -> Component | None:
    """``[extractor]``, or the cohort format's default extractor when the table is absent."""
    table = data.get("extractor")
    if table is None and source is not None and source.format.default_extractor:
        table = {"name": source.format.default_extractor}
    return _extractor(col, registries, table) if isinstance(table, dict) else None


def check_transfer(col: _Collector, recipe: Recipe, agg: Component, *, check_files: bool) -> None:
    """``[aggregator] init / init_recipe / freeze``: a run dir to copy weights from (or a recipe that makes it)."""
    table = recipe.data["aggregator"]
    init, init_recipe, freeze = table.get("init"), table.get("init_recipe"), table.get("freeze", False)
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
    elif freeze and init is None and agg.cls.pretrained_weights(agg.config) is None:
        col.add("aggregator", "freeze", "freeze = true needs init = \"<run dir>\" or, for a slide foundation "
                "encoder, weights = \"<file>\" (nothing to freeze)")
    elif freeze:
        agg.extra["freeze"] = True


def check_cohort_files(col: _Collector, cohort: CohortSection, source: CohortSource, head: Component | None) -> None:
    """The splits file, the given-splits rule, and the columns the head needs."""
    if cohort.splits_file is not None and not cohort.splits_file.is_file():
        col.add("cohort", "splits_file", f"file not found: {cohort.splits_file}")
    if cohort.splits == "given" and not source.format.has_splits and cohort.splits_file is None:
        col.add("cohort", "splits", "splits = 'given' needs splits_file = \"<run>/splits.json\" or a cohort "
                "format that carries its split (e.g. annotations)")
    if head is None or (isinstance(source.value, Path) and not source.value.is_file()):
        return
    try:
        header = source.format().columns(source.value)
    except MilkitError as exc:
        col.add("cohort", source.key, str(exc))
        return
    if header is None:
        return
    where = source.value if isinstance(source.value, Path) else f"the {source.format.name} cohort"
    for column in ["slide_id", *head.cls.required_columns(head.config)]:
        if column not in header:
            col.add("cohort", source.key, f"column '{column}' (needed by head '{head.name}') is missing from "
                    f"{where}; columns present: {', '.join(header)}")
    if cohort.stratify not in (None, "", "auto", "none") and cohort.stratify not in header:
        col.add("cohort", "stratify", f"column '{cohort.stratify}' is not in {where}; columns present: "
                f"{', '.join(header)} (or \"auto\": the head's, \"none\": no stratification)")


def check_run(col: _Collector, recipe: Recipe, run: RunSection) -> None:
    """``[run]``: the output folder is not a file; ``device = "cuda"`` needs a usable CUDA device."""
    out = _resolve_path(recipe.base_dir, run.output_dir)
    if out is not None and out.is_file():
        col.add("run", "output_dir", f"{out} is an existing file; give a folder")
    if run.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        col.add("run", "device", f"'cuda' was asked for but this machine has no usable CUDA device (torch "
                f"{torch.__version__}); use device = \"auto\" (CUDA when present) or \"cpu\"")


def check_loggers(col: _Collector, run: RunSection, *, check_packages: bool) -> None:
    """``[run] loggers``: known trackers whose package is installed (checked before any work, not after
    training); ``mlflow_tracking_uri`` only with ``"mlflow"``."""
    from milkit.loggers import logger_problems

    for _, message in logger_problems(run.loggers, check_packages=check_packages):
        col.add("run", "loggers", message)
    if run.mlflow_tracking_uri is not None and "mlflow" not in run.loggers:
        col.add("run", "mlflow_tracking_uri", "set, but [run] loggers does not name \"mlflow\"; add it "
                "(loggers = [\"mlflow\"]) or remove this key")


SETTING_PATHS = {
    "annotations": ("folder", "QuPath GeoJSON exports, one per slide, named <slide_id>.geojson"),
    "stain_target": ("file", "an H&E tile, PNG/JPEG/TIFF, whose stain the tiles are normalised to"),
}
"""Extraction settings that name a path: what it must be, and what belongs there (for the message)."""


def check_setting_paths(col: _Collector, recipe: Recipe, extractor: Component, *, check_files: bool) -> None:
    """``[extractor] annotations`` / ``stain_target``: resolved against the recipe's folder, and
    (``check_files``) an existing folder / file."""
    settings = extractor.extra.get("settings")
    if settings is None:
        return
    for key, (kind, what) in SETTING_PATHS.items():
        value = getattr(settings, key)
        if value is None:
            continue
        path = _resolve_path(recipe.base_dir, value)
        settings = settings.model_copy(update={key: path})
        if check_files and not (path.is_dir() if kind == "folder" else path.is_file()):
            col.add("extractor", key, f"{kind} not found: {path} ({what}; relative paths start at the recipe's folder)")
    extractor.extra["settings"] = settings


def check_compare(col: _Collector, registries: Registries, data: dict[str, Any],
                  base_dir: Path | None = None) -> CompareSection | None:
    """``[compare]``, typed (None when the recipe has none)."""
    if "compare" not in data:
        return None
    from milkit.compare.config import validate_compare_table

    return validate_compare_table(col, registries, data["compare"], base_dir)
