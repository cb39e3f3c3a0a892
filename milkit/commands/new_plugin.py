"""``milkit new-plugin NAME --kind KIND``: write a ready-to-install plugin distribution skeleton."""

import re
from enum import Enum
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated

import typer

from milkit.errors import MilkitError

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_BASES = {"aggregator": "Aggregator", "head": "Head", "extractor": "Extractor"}


class Kind(str, Enum):
    """The component kind the skeleton provides."""

    aggregator = "aggregator"
    head = "head"
    extractor = "extractor"


def plugin_names(name: str, kind: str) -> dict[str, str]:
    """Template values: ``name`` (registered + entry-point name), ``module``, ``dist``, ``cls``...

    ``"my-pool"`` -> name ``my_pool``, module ``milkit_my_pool``, dist ``milkit-my-pool``, cls ``MyPool``.
    """
    from milkit import __version__

    raw = name.strip().lower()
    for prefix in ("milkit-", "milkit_"):
        raw = raw.removeprefix(prefix)
    if not _NAME_RE.match(raw):
        raise MilkitError(
            f"invalid plugin name {name!r}: use lowercase letters, digits, '_' or '-', starting with a letter "
            "(e.g. 'my-pool' or 'attnmil')"
        )
    snake = raw.replace("-", "_")
    return {
        "name": snake,
        "module": f"milkit_{snake}",
        "dist": f"milkit-{snake.replace('_', '-')}",
        "cls": "".join(part.capitalize() for part in snake.split("_")),
        "kind": kind,
        "base": _BASES[kind],
        "milkit_version": __version__,
    }


def write_plugin(name: str, kind: str, out: Path | None = None) -> list[Path]:
    """Write the skeleton into ``out`` (default ``./milkit-<name>``); return the files written.

    Raises:
        MilkitError: the name is invalid or ``out`` exists and is not empty.
    """
    values = plugin_names(name, kind)
    root = out if out is not None else Path(values["dist"])
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise MilkitError(f"{root} already exists and is not empty; choose another --out or remove it")
    src = Path("src") / values["module"]
    layout = {
        "pyproject.toml.txt": Path("pyproject.toml"),
        "README.md.txt": Path("README.md"),
        "__init__.py.txt": src / "__init__.py",
        f"{kind}.py.txt": src / f"{values['name']}.py",
        "test_component.py.txt": Path("tests") / f"test_{values['name']}.py",
    }
    templates = resources.files("milkit") / "templates" / "plugin"
    written = []
    for template, target in layout.items():
        path = root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        text = Template((templates / template).read_text(encoding="utf-8")).substitute(values)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def register(app: typer.Typer) -> None:
    """Add ``new-plugin`` to the app."""

    @app.command("new-plugin")
    def new_plugin(
        name: Annotated[str, typer.Argument(help="Plugin name, e.g. 'my-pool' -> distribution milkit-my-pool.")],
        kind: Annotated[Kind, typer.Option("--kind", help="What the plugin provides.", case_sensitive=False)],
        out: Annotated[Path | None, typer.Option("--out", help="Target folder (default ./milkit-NAME).")] = None,
    ) -> None:
        """Write a plugin distribution (pyproject, hookimpl, working component, README, kit test)."""
        if out is not None:
            from milkit import cli_options

            out = cli_options.out_dir(out)
        files = write_plugin(name, kind.value, out)
        root = files[0].parent
        typer.echo(f"wrote {root}/")
        for path in files:
            typer.echo(f"  {path.relative_to(root)}")
        typer.echo(f"next: pip install -e {root} && pytest {root / 'tests'} && milkit plugins")
