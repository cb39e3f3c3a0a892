"""Plugin loading: entry points, broken plugins reported with their distribution and the fix, env switches."""

import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from milkit import __version__
from milkit.components.aggregators.abmil import ABMIL
from milkit.hookspecs import hookimpl
from milkit.plugins import BUILTIN_PLUGINS, get_plugin_manager, load_problems
from milkit.registry import Registries, build_registries

REPO = Path(__file__).resolve().parents[1]
_counter = itertools.count()

GOOD_AGGREGATOR = """
from milkit import hookimpl
from milkit.components.aggregators.mean_pool import MeanPool

class Fake(MeanPool):
    name = "fake_pool"

@hookimpl
def milkit_register_aggregators():
    return [Fake]
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MILKIT_DISABLE_PLUGINS", "MILKIT_DISABLE_PLUGIN_AUTOLOAD", "MILKIT_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def fake_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., str]]:
    """Install a fake distribution (dist-info + module) on sys.path; returns the module name."""
    modules: list[str] = []

    def make(dist: str, entry_point: str, source: str, version: str = "0.3.1") -> str:
        module = f"milkit_fake_{next(_counter)}"
        site = tmp_path / f"site_{module}"
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[milkit]\n{entry_point} = {module}\n")
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(site))
        modules.append(module)
        return module

    yield make
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def pm_with() -> Callable[..., Registries]:
    """Registries from a fresh manager plus plugins registered for this test only (datasette's pattern)."""

    def make(*plugins: object) -> Registries:
        pm = get_plugin_manager(autoload=False)
        for plugin in plugins:
            pm.register(plugin)
        pm.check_pending()
        return build_registries(pm)

    return make


def builtin_names(regs: Registries) -> dict[str, list[str]]:
    return {kind: [n for n in regs.of(kind).names() if regs.of(kind).provider(n).distribution == "milkit"]
            for kind in ("extractor", "aggregator", "head")}


def only(problems: list[str], needle: str) -> str:
    hits = [p for p in problems if needle in p]
    assert len(hits) == 1, problems
    return hits[0]


def test_entry_point_plugin_is_registered_with_its_distribution(fake_dist: Callable[..., str]) -> None:
    fake_dist("milkit-fake", "fake", GOOD_AGGREGATOR)
    regs = build_registries(get_plugin_manager())
    provider = regs.aggregators.provider("fake_pool")
    assert (provider.plugin, provider.distribution, provider.version) == ("fake", "milkit-fake", "0.3.1")
    assert str(provider) == "'fake' (distribution milkit-fake 0.3.1)"
    assert regs.aggregators.provider("abmil").distribution == "milkit"


def test_plugin_that_fails_to_import_is_reported_and_the_builtins_survive(fake_dist: Callable[..., str]) -> None:
    fake_dist("milkit-broken", "broken", "raise RuntimeError('boom')")
    regs = build_registries(get_plugin_manager())
    assert only(regs.problems, "'broken'") == (
        "plugin 'broken' (distribution milkit-broken 0.3.1) failed to load: RuntimeError: boom; fix or uninstall it "
        "(`pip uninstall milkit-broken`), or disable it with MILKIT_DISABLE_PLUGINS=broken"
    )
    assert builtin_names(regs) == builtin_names(build_registries(get_plugin_manager(autoload=False)))


def test_duplicate_name_keeps_the_first_and_names_both_plugins(fake_dist: Callable[..., str]) -> None:
    fake_dist("milkit-dup", "dup", GOOD_AGGREGATOR.replace('"fake_pool"', '"abmil"'))
    regs = build_registries(get_plugin_manager())
    assert only(regs.problems, "'dup'") == (
        f"aggregator 'abmil' is registered by both 'milkit.components.aggregators' (distribution milkit {__version__}) "
        "and 'dup' (distribution milkit-dup 0.3.1). Rename one, or disable a plugin with MILKIT_DISABLE_PLUGINS=dup"
    )
    assert regs.aggregators.get("abmil") is ABMIL


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        ('["abmil"]', "plugin 'bad' (distribution milkit-bad 0.3.1) returned 'abmil' from milkit_register_aggregators, "
         "which is not a subclass of milkit.Aggregator; fix the plugin 'bad' (distribution milkit-bad 0.3.1), "
         "or disable it with MILKIT_DISABLE_PLUGINS=bad"),
        ("Fake", "plugin 'bad' (distribution milkit-bad 0.3.1): milkit_register_aggregators returned type, expected "
         "a list of classes; fix it or disable it with MILKIT_DISABLE_PLUGINS=bad"),
        ("None", "plugin 'bad' (distribution milkit-bad 0.3.1): milkit_register_aggregators returned NoneType, "
         "expected a list of classes; fix it or disable it with MILKIT_DISABLE_PLUGINS=bad"),
        ("1 / 0", "plugin 'bad' (distribution milkit-bad 0.3.1): milkit_register_aggregators raised "
         "ZeroDivisionError: division by zero; fix it or disable it with MILKIT_DISABLE_PLUGINS=bad"),
    ],
)
def test_invalid_return_values_are_reported(fake_dist: Callable[..., str], returned: str, message: str) -> None:
    fake_dist("milkit-bad", "bad", GOOD_AGGREGATOR.replace("return [Fake]", f"return {returned}"))
    regs = build_registries(get_plugin_manager())
    assert only(regs.problems, "'bad'") == message
    assert "abmil" in regs.aggregators and "fake_pool" not in regs.aggregators


@pytest.mark.parametrize(
    ("config", "detail"),
    [
        ("class Config(pydantic.BaseModel):\n        x: int = 1",
         "has no valid Config (a subclass of milkit.ComponentConfig)"),
        ("class Config(ComponentConfig):\n        width: int = pydantic.Field(-1, gt=0)",
         "has a Config whose defaults do not validate (width: Input should be greater than 0 (default -1))"),
    ],
)
def test_invalid_configs_are_reported(fake_dist: Callable[..., str], config: str, detail: str) -> None:
    source = GOOD_AGGREGATOR.replace('    name = "fake_pool"', f'    name = "fake_pool"\n    {config}')
    fake_dist("milkit-badcfg", "badcfg", "import pydantic\nfrom milkit import ComponentConfig\n" + source)
    regs = build_registries(get_plugin_manager())
    assert only(regs.problems, "'badcfg'") == (
        f"aggregator 'fake_pool' from plugin 'badcfg' (distribution milkit-badcfg 0.3.1) {detail}; fix the plugin "
        "'badcfg' (distribution milkit-badcfg 0.3.1), or disable it with MILKIT_DISABLE_PLUGINS=badcfg"
    )
    assert "fake_pool" not in regs.aggregators


def test_misspelt_hook_unloads_the_plugin_and_names_the_valid_hooks(fake_dist: Callable[..., str]) -> None:
    fake_dist("milkit-typo", "typo", GOOD_AGGREGATOR.replace("def milkit_register_aggregators", "def milkit_register_aggregator"))
    pm = get_plugin_manager()
    assert pm.get_plugin("typo") is None
    assert only(load_problems(pm), "'typo'") == (
        "plugin 'typo' (distribution milkit-typo 0.3.1) implements unknown hook(s) milkit_register_aggregator and was "
        "not loaded; milkit's hooks are: milkit_register_aggregators, milkit_register_cohort_formats, "
            "milkit_register_commands, milkit_register_extractors, milkit_register_heads. "
        "Fix the hook name, or disable it with MILKIT_DISABLE_PLUGINS=typo"
    )


def test_one_entry_point_name_in_two_distributions_is_reported(fake_dist: Callable[..., str]) -> None:
    fake_dist("milkit-first", "twin", GOOD_AGGREGATOR)
    fake_dist("milkit-second", "twin", GOOD_AGGREGATOR)
    problem = only(load_problems(get_plugin_manager()), "'twin'")
    assert problem.startswith("plugin name 'twin' is declared by both distributions milkit-")
    assert "was ignored. Uninstall one of them" in problem


def test_disable_autoload_skips_entry_points(fake_dist: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    module = fake_dist("milkit-broken", "broken", "raise RuntimeError('boom')")
    monkeypatch.setenv("MILKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    regs = build_registries(get_plugin_manager())
    assert regs.problems == [] and module not in sys.modules
    assert all(regs.aggregators.provider(n).distribution == "milkit" for n in regs.aggregators.names())


def test_disable_plugins_blocks_named_entry_points_and_builtins(fake_dist: Callable[..., str], monkeypatch: pytest.MonkeyPatch) -> None:
    broken = fake_dist("milkit-broken", "broken", "raise RuntimeError('boom')")
    fake_dist("milkit-fake", "fake", GOOD_AGGREGATOR)
    monkeypatch.setenv("MILKIT_DISABLE_PLUGINS", "broken, milkit.components.heads")
    regs = build_registries(get_plugin_manager())
    assert not any("'broken'" in p for p in regs.problems) and broken not in sys.modules
    assert "fake_pool" in regs.aggregators and "classification" not in regs.heads
    assert all(regs.heads.provider(n).plugin != "milkit.components.heads" for n in regs.heads.names())


def test_trace_prints_each_hook_call_with_its_plugin_and_result(
    fake_dist: Callable[..., str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_dist("milkit-fake", "fake", GOOD_AGGREGATOR)
    monkeypatch.setenv("MILKIT_TRACE_PLUGINS", "1")
    build_registries(get_plugin_manager())
    err = capsys.readouterr().err
    assert "[milkit trace] milkit_register_aggregators({}) -> implementations: fake\n" in err
    assert "[milkit trace] milkit_register_aggregators returned [[<class 'milkit_fake_" in err
    assert "[milkit trace] milkit_register_heads({}) -> implementations: milkit.components.heads\n" in err


def test_plugins_registered_at_run_time_are_attributed(pm_with: Callable[..., Registries]) -> None:
    class Inline:
        @hookimpl
        def milkit_register_aggregators(self) -> list[type]:
            class InlinePool(ABMIL):
                name = "inline_pool"

            return [InlinePool]

    regs = pm_with(Inline())
    assert regs.aggregators.provider("inline_pool").distribution == "(not installed: registered at run time)"
    assert regs.problems == []


def test_builtins_are_plugins_listed_once() -> None:
    pm = get_plugin_manager(autoload=False)
    assert [name for name, _ in pm.list_name_plugin()] == list(BUILTIN_PLUGINS)


def test_a_recipe_that_does_not_use_the_broken_plugin_still_validates(fake_dist: Callable[..., str]) -> None:
    recipe = pytest.importorskip("milkit.recipe")
    fake_dist("milkit-broken", "broken", "raise RuntimeError('boom')")
    fake_dist("milkit-dup", "dup", GOOD_AGGREGATOR.replace('"fake_pool"', '"abmil"'))
    path = REPO / "recipes" / "subtyping_abmil.toml"

    def outcome(regs: Registries) -> str:
        try:
            resolved = recipe.validate_recipe(recipe.load_recipe(path), regs, check_files=False)
        except Exception as exc:  # noqa: BLE001 - compare whatever happens
            return f"{type(exc).__name__}: {exc}"
        return f"ok: {resolved.aggregator.name} + {resolved.head.name}"

    broken = build_registries(get_plugin_manager())
    assert len([p for p in broken.problems if "'broken'" in p or "'dup'" in p]) == 2
    assert outcome(broken) == outcome(build_registries(get_plugin_manager(autoload=False)))
    assert outcome(broken).startswith("ok: abmil")
