"""Core reads from a component only what the base classes declare (no duck typing, no getattr probing).

The test walks every core and command module and looks at each attribute read, and each
``getattr``/``hasattr`` with a literal name, whose object is a component (a head, aggregator,
extractor or cohort format: ``model.head``, ``recipe.head.cls``, ``registries.heads.get(n)``...)
or a component's config. Each name read must be declared on ``milkit.Head``, ``milkit.Aggregator``,
``milkit.Extractor`` or ``milkit.CohortFormat`` (or be ``nn.Module``'s / pydantic's own)."""

import ast
import dataclasses
import re
from pathlib import Path

import pydantic
from torch import nn

from milkit import Aggregator, CohortFormat, ComponentConfig, Extractor, Head
from milkit.recipe.validate import Component

PACKAGE = Path(__file__).resolve().parents[1] / "milkit"
NOT_CORE = ("components", "histgen", "demo")

COMPONENT = re.compile(
    r"(^|\.)(head|head_cls|aggregator|agg|extractor|encoder|fmt|format)(\.cls)?$"
    r"|\.(heads|aggregators|extractors|cohort_formats)\.get\(.*\)$|(^|\.)format\(\)$"
)
"""Source text of an expression that is a component (instance or class), as core names them."""
CONFIG = re.compile(r"(^|\.)(head|aggregator|agg|extractor|encoder)(\.cls)?\.[Cc]onfig$")
"""... or a component's config."""

DECLARED = set().union(*(vars(c) for c in (Head, Aggregator, Extractor, CohortFormat)),
                       *(c.__annotations__ for c in (Head, Aggregator, Extractor, CohortFormat)),
                       dir(nn.Module), {f.name for f in dataclasses.fields(Component)}, dir(Component))
CONFIG_DECLARED = set(dir(ComponentConfig)) | set(dir(pydantic.BaseModel))


def undeclared_reads(source: str) -> list[tuple[int, str, str]]:
    """(line, object, name) for every read of an undeclared member of a component in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            base, name = ast.unparse(node.value), node.attr
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            base, name = ast.unparse(node.args[0]), node.args[1].value
        else:
            continue
        if COMPONENT.search(base) and name not in DECLARED:
            found.append((node.lineno, base, name))
        elif CONFIG.search(base) and name not in CONFIG_DECLARED:
            found.append((node.lineno, base, name))
    return found


def _core_files() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in NOT_CORE]


def test_core_reads_only_declared_members():
    problems = [f"{path.relative_to(PACKAGE.parent)}:{line}: {base}.{name} is not declared on the base classes"
                for path in _core_files() for line, base, name in undeclared_reads(path.read_text(encoding="utf-8"))]
    assert problems == [], "declare it (with a default and a docstring) or stop reading it:\n" + "\n".join(problems)


def test_the_check_catches_probing_and_duck_typing():
    probing = '''
global_loss = getattr(self.model.head, "loss_is_global_v2", False)
label = getattr(recipe.head.config, "label_column", None)
if registries.heads.get(name).wants_plots: pass
cols = recipe.head.cls.csv_columns
'''
    assert [n for _, _, n in undeclared_reads(probing)] == ["loss_is_global_v2", "label_column", "wants_plots",
                                                           "csv_columns"]
    declared = '''
ok = self.model.head.loss_is_global and recipe.head.cls.required_columns(recipe.head.config)
recipe.head.config.model_dump()
'''
    assert undeclared_reads(declared) == []


def test_core_is_actually_walked():
    names = {p.name for p in _core_files()}
    assert {"trainer.py", "runner.py", "validate.py", "run_plots.py"} <= names and "cox.py" not in names
