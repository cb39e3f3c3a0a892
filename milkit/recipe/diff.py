"""What differs between a recipe and the one a run dir was made with (for ``--resume`` and ``compare``)."""

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from milkit.errors import UsageError
from milkit.recipe.validate import ResolvedRecipe


def recipe_changes(run_dir: Path, recipe: ResolvedRecipe) -> list[str]:
    """``[table] key: old -> new`` for every value of ``recipe`` that differs from the run dir's
    ``recipe.toml`` ([] when the folder holds no run, or the same recipe)."""
    path = Path(run_dir) / "recipe.toml"
    if not path.is_file():
        return []
    try:
        old = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return [f"{path} is unreadable ({exc})"]
    new = tomllib.loads(tomli_w.dumps(recipe.to_dict()))
    flat_old, flat_new = _flatten(old), _flatten(new)
    return [f"[{k.split('.', 1)[0]}] {k.split('.', 1)[1]}: {flat_old.get(k, '(unset)')!r} -> {flat_new.get(k, '(unset)')!r}"
            for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k) and "." in k]


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


RESUMABLE_CHANGES = ("[train] epochs:", "[run] loggers:", "[run] mlflow_tracking_uri:")
"""What a resumed run may change: more (or fewer) epochs continue the same model and optimiser, and
the experiment trackers only mirror the run dir."""


def check_resumable(run_dir: Path, recipe: ResolvedRecipe, *, command: str = "milkit run") -> None:
    """Refuse to resume ``run_dir`` with a recipe other than the one it was started with (apart from
    ``[train] epochs``, which extends or shortens the run)."""
    changes = [c for c in recipe_changes(run_dir, recipe) if not c.startswith(RESUMABLE_CHANGES)]
    if changes:
        shown = changes[:12] + ([f"... and {len(changes) - 12} more"] if len(changes) > 12 else [])
        raise UsageError("--resume", f"{run_dir} was started with another recipe; its checkpoints would not match. "
                         "What differs (run dir -> now):\n  " + "\n  ".join(shown) + f"\nRevert the recipe, or start "
                         f"the run again in this folder with `{command} ... --force-new` (its results are replaced)")
