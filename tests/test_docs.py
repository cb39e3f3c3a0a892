"""docs/recipes.md is kept honest: every key it documents exists in the config models, every config
field is documented, and each literal default it states is the model's default."""

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from milkit.compare.config import CompareSection
from milkit.extract.settings import ExtractionSettings
from milkit.plugins import get_plugin_manager
from milkit.recipe.sections import SECTIONS
from milkit.recipe.validate import AGGREGATOR_RESERVED
from milkit.registry import build_registries

RECIPES_MD = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
HISTGEN_KEY = "annotations"
"""The cohort-format key of the HistGen plugin, absent when MILKIT_DISABLE_PLUGINS=milkit.histgen."""

_KEY = re.compile(r"`([^`]+)`")


# --- the parser -----------------------------------------------------------------------------------

def _cells(line: str) -> list[str]:
    """The cells of a markdown table row (``\\|`` inside a cell is not a separator)."""
    body = line.strip().removeprefix("|").removesuffix("|")
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", body)]


def parse_sections(text: str) -> dict[str, list[dict[str, Any]]]:
    """Rows of the markdown tables under each ``## `` heading.

    Returns ``{heading: [{"table": (header cells), "keys": [backticked keys of the first cell],
    "cells": [cells]}]}``; the heading is the text after ``## ``.
    """
    sections: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] | None = None
    header: tuple[str, ...] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
            header = None
            continue
        if current is None or not line.lstrip().startswith("|"):
            header = None  # a table ends at the first line that is not a row
            continue
        cells = _cells(line)
        if header is None:
            header = tuple(c.lower() for c in cells)
            continue
        if all(set(c) <= set("-: ") for c in cells):  # the |---|---| separator
            continue
        current.append({"table": header, "keys": _KEY.findall(cells[0]), "cells": cells})
    return sections


def section_tables(sections: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Rows per recipe table name: ``## `[aggregator]` and `[head]``` -> ``"aggregator"`` and ``"head"``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for heading, rows in sections.items():
        for name in re.findall(r"`\[([a-z_]+)\]`", heading):
            out[name] = rows
    return out


def documented_keys(rows: list[dict[str, Any]], header: tuple[str, ...] | None = None) -> list[str]:
    """Every key in the first column, in page order (duplicates kept), of tables with ``header``
    (all tables when None)."""
    return [k for row in rows if header is None or row["table"] == header for k in row["keys"]]


def literal(cell: str) -> tuple[bool, Any]:
    """``(True, value)`` when a default cell is one TOML literal (or, for a row of several keys, a
    comma-separated list of them); ``(False, None)`` for prose, ``–`` and the like."""
    text = cell.strip().strip("`").strip()
    if not text:
        return False, None
    for candidate in (text, f"[{text}]"):
        try:
            return True, tomllib.loads(f"v = {candidate}")["v"]
        except tomllib.TOMLDecodeError:
            continue
    return False, None


# --- what the code says ---------------------------------------------------------------------------

DEFAULT_TABLE = ("key", "default", "meaning")
FORMAT_TABLE = ("key", "format", "value")


@pytest.fixture(scope="module")
def page() -> dict[str, list[dict[str, Any]]]:
    return section_tables(parse_sections(RECIPES_MD.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def cohort_formats() -> tuple[dict[str, str], bool]:
    """Registered cohort-format keys -> format names, and whether the HistGen plugin is loaded."""
    pm = get_plugin_manager(autoload=False)
    regs = build_registries(pm)
    formats = {regs.cohort_formats.get(n).key: n for n in regs.cohort_formats.names()}
    return formats, pm.get_plugin("milkit.histgen") is not None


MODELS: dict[str, type[BaseModel]] = {**SECTIONS, "extractor": ExtractionSettings, "compare": CompareSection}
"""The model whose fields (and defaults) each section documents."""


def expected_keys(section: str, formats: dict[str, str]) -> set[str]:
    if section == "cohort":
        return set(SECTIONS["cohort"].model_fields) | set(formats)
    if section == "extractor":
        return {"name"} | set(ExtractionSettings.model_fields)
    if section in ("aggregator", "head"):
        return set(AGGREGATOR_RESERVED)
    return set(MODELS[section].model_fields)


def compare_keys(section: str, documented: list[str], expected: set[str], optional: set[str] = frozenset()) -> list[str]:
    """Problems, each naming the section and the keys: duplicates, undocumented fields, unknown keys."""
    problems = []
    dupes = sorted({k for k in documented if documented.count(k) > 1})
    if dupes:
        problems.append(f"docs/recipes.md [{section}] documents these keys more than once: {dupes}")
    missing = sorted(expected - set(documented))
    if missing:
        problems.append(f"docs/recipes.md [{section}] does not document these config fields: {missing}")
    extra = sorted(set(documented) - expected - set(optional))
    if extra:
        problems.append(f"docs/recipes.md [{section}] documents keys the config does not have: {extra}")
    return problems


SECTION_NAMES = ("run", "cohort", "extractor", "aggregator", "head", "train", "eval", "compare")


# --- the checks -----------------------------------------------------------------------------------

def test_every_recipe_table_has_a_section(page):
    from milkit.recipe.sections import ALL_TABLES

    assert set(SECTION_NAMES) == set(ALL_TABLES), "a recipe table was added or removed: update SECTION_NAMES"
    missing = [s for s in SECTION_NAMES if s not in page]
    assert not missing, f"docs/recipes.md has no '## `[...]`' heading for: {missing}"
    empty = [s for s in SECTION_NAMES if not documented_keys(page[s], DEFAULT_TABLE)]
    assert not empty, f"docs/recipes.md sections without a '| key | default | meaning |' table: {empty}"


@pytest.mark.parametrize("section", SECTION_NAMES)
def test_documented_keys_match_the_config(page, cohort_formats, section):
    formats, histgen_loaded = cohort_formats
    optional = {HISTGEN_KEY} if section == "cohort" and not histgen_loaded else set()
    problems = compare_keys(section, documented_keys(page[section]), expected_keys(section, formats), optional)
    assert not problems, "\n".join(problems)


def test_cohort_format_table_names_each_format(page, cohort_formats):
    """The ``| key | format | value |`` table lists exactly the format keys, each with its format's name."""
    formats, histgen_loaded = cohort_formats
    rows = [r for r in page["cohort"] if r["table"] == FORMAT_TABLE]
    documented = documented_keys(rows)
    optional = set() if histgen_loaded else {HISTGEN_KEY}
    problems = compare_keys("cohort (format keys)", documented, set(formats), optional)
    settings = documented_keys(page["cohort"], DEFAULT_TABLE)
    misplaced = sorted(set(settings) & set(formats))
    if misplaced:
        problems.append(f"docs/recipes.md [cohort]: format keys {misplaced} belong in the format table")
    for row in rows:
        for key in row["keys"]:
            named = row["cells"][1].strip("` ") if len(row["cells"]) > 1 else ""
            if key in formats and named != formats[key]:
                problems.append(f"docs/recipes.md [cohort] `{key}`: format '{named}', registered as '{formats[key]}'")
    assert not problems, "\n".join(problems)


def _same(documented: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(documented, bool):
        return type(documented) is type(default) and documented == default
    if isinstance(default, (int, float)) and isinstance(documented, (int, float)):
        return float(documented) == float(default)
    return documented == default


@pytest.mark.parametrize("section", [s for s in SECTION_NAMES if s in MODELS])
def test_literal_defaults_match_the_config(page, section):
    model = MODELS[section]
    problems = []
    checked = 0
    for row in page[section]:
        if row["table"] != DEFAULT_TABLE or len(row["cells"]) < 2:
            continue
        keys = [k for k in row["keys"] if k in model.model_fields]
        if not keys or len(keys) != len(row["keys"]):
            continue  # not a model field (e.g. [extractor] name): nothing to compare with
        ok, value = literal(row["cells"][1])
        if not ok:
            continue  # prose, "–", "required", ...
        if len(keys) == 1:
            values = [value]
        elif isinstance(value, list) and len(value) == len(keys):
            values = value
        else:
            continue  # one shared cell for several keys
        for key, documented in zip(keys, values):
            field = model.model_fields[key]
            if field.is_required():
                problems.append(f"[{section}] `{key}`: documented default {documented!r}, but the key is required")
                continue
            checked += 1
            if not _same(documented, field.default):
                problems.append(f"[{section}] `{key}`: documented default {documented!r}, model default {field.default!r}")
    assert not problems, "docs/recipes.md defaults differ from the config:\n" + "\n".join(problems)
    assert checked, f"no literal default of [{section}] was checked: is the table still parsed?"


# --- the parser can fail ---------------------------------------------------------------------------

FAKE_PAGE = """\
# Recipes

## `[run]`
| key | default | meaning |
|---|---|---|
| `name` | "run" | run name |
| `seed`, `shiny_new_key` | 0, 1 | seeds |

Prose with `not_a_key` | and a pipe.

## `[aggregator]` and `[head]`
| key | default | meaning |
|---|---|---|
| `name` | required | component |
"""


def test_parser_sees_an_added_key():
    page = section_tables(parse_sections(FAKE_PAGE))
    assert documented_keys(page["run"]) == ["name", "seed", "shiny_new_key"]
    assert page["aggregator"] is page["head"] and documented_keys(page["head"]) == ["name"]
    problems = compare_keys("run", documented_keys(page["run"]), {"name", "seed"})
    assert problems == ["docs/recipes.md [run] documents keys the config does not have: ['shiny_new_key']"]
    problems = compare_keys("run", ["name"], {"name", "seed"})
    assert problems == ["docs/recipes.md [run] does not document these config fields: ['seed']"]


def test_literal_reads_defaults():
    assert literal('"run"') == (True, "run")
    assert literal("`1e-4`") == (True, 1e-4)
    assert literal("1e-4, 0.0, false") == (True, [1e-4, 0.0, False])
    assert literal('["val", "test"]') == (True, ["val", "test"])
    for prose in ("–", "required", "the head's", "`runs/<name>`", "= `tile_size_px`", "– (auto)"):
        assert literal(prose) == (False, None), prose
    assert not _same(1, True) and not _same(0.5, 0.25) and _same(0, 0.0) and _same([0], [0])


def test_the_plugin_guide_lists_every_member_core_reads():
    """docs/plugins.md has a row (or a mention in backticks) for every member the four interfaces declare."""
    import inspect

    from milkit import Aggregator, CohortFormat, Extractor, Head

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    missing = []
    for base in (Aggregator, Head, Extractor, CohortFormat):
        members = {n for n in (*vars(base), *base.__annotations__) if not n.startswith("_")}
        for name in sorted(members):
            if not re.search(rf"`{re.escape(name)}\b", guide):
                missing.append(f"{base.__name__}.{name}")
    assert missing == [], f"docs/plugins.md does not document: {missing}"
    assert inspect.getdoc(Head.plots) and inspect.getdoc(Aggregator.auxiliary_losses)
