"""Build (extractor, extraction settings) from an ``[extractor]`` table, reporting every problem at once."""

from pathlib import Path
from typing import Any

import pydantic

from milkit.config import validation_messages
from milkit.errors import Issue, RecipeError
from milkit.extract.settings import ExtractionSettings, split_extractor_table
from milkit.extractor import Extractor
from milkit.registry import Registries


def _issues(exc: pydantic.ValidationError, valid: list[str], source: str, what: str) -> list[Issue]:
    return [Issue(source, None, f"[extractor] {key}" if key else "[extractor]", msg)
            for key, msg in validation_messages(exc, valid, what)]


def build_extraction(table: dict[str, Any], registries: Registries, *, base_dir: Path | None = None,
                     source: str = "[extractor]") -> tuple[Extractor, ExtractionSettings]:
    """The encoder named by ``table['name']`` (its config from the table's other non-settings keys)
    and the :class:`ExtractionSettings`; relative ``weights``, ``annotations`` and ``stain_target``
    paths resolve against ``base_dir``."""
    name = table.get("name")
    if not isinstance(name, str):
        raise RecipeError([Issue(source, None, "[extractor] name", "missing extractor name; available: "
                                 f"{', '.join(registries.extractors.names())} (or pass --extractor NAME)")])
    if name not in registries.extractors:
        raise RecipeError([Issue(source, None, "[extractor] name", registries.extractors.unknown_message(name))])
    cls = registries.extractors.get(name)
    settings_kw, encoder_kw = split_extractor_table(table)
    weights = encoder_kw.get("weights")
    if isinstance(weights, str) and base_dir is not None and not Path(weights).expanduser().is_absolute():
        encoder_kw["weights"] = str((base_dir / weights).resolve())
    for key in ("annotations", "stain_target"):
        given = settings_kw.get(key)
        if isinstance(given, str) and base_dir is not None and not Path(given).expanduser().is_absolute():
            settings_kw[key] = str((base_dir / given).resolve())
    issues: list[Issue] = []
    settings = config = None
    try:
        settings = ExtractionSettings.model_validate(settings_kw)
    except pydantic.ValidationError as exc:
        issues += _issues(exc, sorted(ExtractionSettings.model_fields), source, "extraction")
    try:
        config = cls.Config.model_validate(encoder_kw)
    except pydantic.ValidationError as exc:
        valid = sorted(set(cls.Config.model_fields) | set(ExtractionSettings.model_fields))
        issues += _issues(exc, valid, source, f"extractor '{name}'")
    if issues:
        raise RecipeError(issues)
    assert settings is not None and config is not None
    return cls(config), settings
