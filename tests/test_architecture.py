"""The layers of docs/architecture.md, enforced: a test walks every import in milkit/ (function-level
imports included) and fails on an import that crosses a layer the wrong way."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "milkit"

COMPONENT_FAMILIES = ("milkit.components", "milkit.histgen", "milkit.demo")
"""Built-in components and bundled plugins: registered only through the hooks."""
COMMANDS = ("milkit.commands", "milkit.cli", "milkit.__main__")
"""The CLI layer."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _family(module: str) -> str | None:
    """``milkit.components.heads``, ``milkit.histgen``, ... for component modules; None for the rest."""
    if module.startswith("milkit.components."):
        return ".".join(module.split(".")[:3])
    return next((f for f in COMPONENT_FAMILIES[1:] if module == f or module.startswith(f + ".")), None)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _layer(module: str) -> str:
    if _within(module, COMPONENT_FAMILIES):
        return "component"
    if _within(module, COMMANDS):
        return "commands"
    return "core"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
            out.append((node.lineno, node.module))
    return [(line, name) for line, name in out if name == "milkit" or name.startswith("milkit.")]


def _violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported`` (None if it may)."""
    src, dst = _layer(importer), _layer(imported)
    if src == "core" and dst != "core":
        return f"core imports a {dst} module"
    if src == "component" and dst == "commands":
        return "a component imports milkit's CLI commands"
    if src == "component" and dst == "component" and _family(importer) != _family(imported):
        return f"component family {_family(importer)} imports another family's module"
    if src == "commands" and dst == "component":
        return "milkit's own commands import a component (reach components through the registries)"
    return None


def test_no_import_crosses_a_layer_the_wrong_way():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = _module_name(path)
        for line, imported in _imports(path):
            why = _violation(importer, imported)
            if why:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} -> {imported}: {why}")
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(("importer", "imported", "allowed"), [
    ("milkit.runner", "milkit.components.heads.cox", False),
    ("milkit.recipe.validate", "milkit.demo.cache", False),
    ("milkit.viz.run_plots", "milkit.histgen.report_head", False),
    ("milkit.trainer", "milkit.commands.run", False),
    ("milkit.components.heads.cox", "milkit.viz.task_plots", True),
    ("milkit.histgen.report_head", "milkit.components.heads.classification", False),
    ("milkit.histgen.plugin", "milkit.histgen.command", True),
    ("milkit.components.aggregators.abmil", "milkit.cli", False),
    ("milkit.commands.generate", "milkit.runner", True),
    ("milkit.commands.demo", "milkit.demo", False),
])
def test_the_rules_themselves(importer: str, imported: str, allowed: bool):
    assert (_violation(importer, imported) is None) == allowed


def test_every_module_is_seen():
    names = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    assert {"milkit.runner", "milkit.components.heads.cox", "milkit.histgen.plugin", "milkit.commands.run"} <= names
