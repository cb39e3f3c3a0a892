"""Hook specs: each is documented in docs/hooks.md with its exact signature and docstring, and each is tested."""

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from milkit import hookspecs
from milkit.components.aggregators.abmil import ABMIL
from milkit.components.heads.classification import Classification
from milkit.extractor import Extractor
from milkit.hookspecs import hookimpl
from milkit.plugins import get_plugin_manager
from milkit.registry import Registries, build_registries

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"
PLUGIN_GUIDE = DOCS.with_name("plugins.md")
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("milkit_"))


def _section(name: str) -> str:
    """The docs/hooks.md section for one hook, exactly as it must appear."""
    fn: Callable[..., object] = getattr(hookspecs, name)
    sig = inspect.signature(fn)
    params = str(sig.replace(return_annotation=inspect.Signature.empty))
    ret = sig.return_annotation
    return f"## {name}\n\n```python\ndef {name}{params} -> {ret}\n```\n\n```text\n{inspect.getdoc(fn)}\n```\n"


def test_every_spec_is_a_pluggy_hookspec_with_a_docstring() -> None:
    assert HOOKS == ["milkit_register_aggregators", "milkit_register_cohort_formats", "milkit_register_commands",
                     "milkit_register_extractors", "milkit_register_heads"]
    pm = get_plugin_manager(autoload=False)
    for name in HOOKS:
        assert getattr(pm.hook, name).has_spec(), name
        fn = getattr(hookspecs, name)
        assert hasattr(fn, "milkit_spec") and inspect.getdoc(fn), name


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_exact_signature_and_docstring(name: str) -> None:
    expected = _section(name)
    assert expected in DOCS.read_text(encoding="utf-8"), f"update docs/hooks.md; the section must read:\n\n{expected}"


@pytest.mark.parametrize("name", HOOKS)
def test_plugin_guide_shows_the_signature(name: str) -> None:
    signature = _section(name).split("```python\n")[1].split("\n")[0]
    assert signature in PLUGIN_GUIDE.read_text(encoding="utf-8")


def test_docs_describe_no_hook_that_does_not_exist() -> None:
    documented = re.findall(r"^## (milkit_\w+)$", DOCS.read_text(encoding="utf-8"), flags=re.M)
    assert documented == HOOKS


def test_every_hook_has_a_test_here() -> None:
    module = sys.modules[__name__]
    assert [h for h in HOOKS if not hasattr(module, f"test_hook_{h}")] == []


def _with(plugin: object) -> Registries:
    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="inline")
    pm.check_pending()
    regs = build_registries(pm)
    assert regs.problems == []
    return regs


def test_hook_milkit_register_aggregators() -> None:
    class Wide(ABMIL):
        name = "wide_abmil"

    class Plugin:
        @hookimpl
        def milkit_register_aggregators(self) -> list[type]:
            return [Wide]

    regs = _with(Plugin())
    assert regs.aggregators.get("wide_abmil") is Wide and regs.aggregators.provider("wide_abmil").plugin == "inline"


def test_hook_milkit_register_heads() -> None:
    class Renamed(Classification):
        name = "subtyping_v2"

    class Plugin:
        @hookimpl
        def milkit_register_heads(self) -> list[type]:
            return [Renamed]

    assert _with(Plugin()).heads.get("subtyping_v2") is Renamed


def test_hook_milkit_register_extractors() -> None:
    class Blank(Extractor):
        name = "blank"
        Config = ABMIL.Config

    class Plugin:
        @hookimpl
        def milkit_register_extractors(self) -> list[type]:
            return [Blank]

    assert _with(Plugin()).extractors.get("blank") is Blank


def test_hook_milkit_register_cohort_formats(tmp_path: Path) -> None:
    from milkit.cohort_format import CohortFormat
    from milkit.data.cohort import Cohort

    class Listing(CohortFormat):
        name = "slide-listing"
        key = "listing"
        description = "a text file with one slide id per line"

        def load(self, value, *, slides_dir=None) -> Cohort:
            ids = Path(value).read_text().split()
            return Cohort([{"slide_id": s, "case_id": s} for s in ids], Path(value))

    class Plugin:
        @hookimpl
        def milkit_register_cohort_formats(self) -> list[type]:
            return [Listing]

    regs = _with(Plugin())
    assert regs.cohort_format_for("listing") is Listing and regs.cohort_formats.provider("slide-listing").plugin == "inline"
    (tmp_path / "ids.txt").write_text("a\nb\n")
    assert [r["slide_id"] for r in Listing().load(tmp_path / "ids.txt").rows] == ["a", "b"]


def test_hook_milkit_register_commands() -> None:
    import typer

    from milkit.cli import register_commands

    class Plugin:
        @hookimpl
        def milkit_register_commands(self, app: typer.Typer) -> None:
            @app.command("ping")
            def ping() -> None: ...

    pm = get_plugin_manager(autoload=False)
    pm.register(Plugin(), name="inline")
    app = typer.Typer()
    assert register_commands(pm, app) == []
    assert "ping" in [c.name for c in app.registered_commands]
