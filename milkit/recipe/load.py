"""Read a recipe file and apply ``--set section.key=value`` overrides."""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from milkit.errors import Issue, RecipeError


@dataclass
class Recipe:
    """A parsed recipe: its file, its text, the data after overrides, and the overrides."""

    path: Path
    text: str
    data: dict[str, Any]
    overrides: dict[str, str] = field(default_factory=dict)  # "section.key" -> raw text

    @property
    def base_dir(self) -> Path:
        """Relative paths in the recipe resolve against the recipe file's folder."""
        return self.path.resolve().parent


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'aggregator.dropout=0.1'`` -> (['aggregator', 'dropout'], 0.1). VALUE is a TOML value;
    anything that does not parse as one is taken as a plain string."""
    if "=" not in text:
        raise RecipeError([Issue("--set", None, text, "expected section.key=value")])
    key, raw = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if len(parts) < 2 or not all(parts):
        raise RecipeError([Issue("--set", None, key, "expected section.key=value, e.g. train.epochs=5")])
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Parse ``path`` (TOML) and apply overrides; a syntax error is a RecipeError with its line."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError([Issue(str(path), None, "", "recipe file not found")])
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line = int(m.group(1)) if m else getattr(exc, "lineno", None)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise RecipeError([Issue(str(path), line, "", f"TOML syntax error: {msg}")]) from None
    applied: dict[str, str] = {}
    for item in overrides or []:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise RecipeError([Issue("--set", None, item, f"'{p}' is not a table")])
        node[parts[-1]] = value
        applied[".".join(parts)] = item
    return Recipe(path=path, text=text, data=data, overrides=applied)
