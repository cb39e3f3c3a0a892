"""Registry: what it accepts, and the full text of its errors (duplicate, unknown, invalid class)."""

import pytest
from pydantic import BaseModel, Field

from milkit.aggregator import Aggregator
from milkit.components.aggregators.abmil import ABMIL
from milkit.components.heads.classification import Classification
from milkit.components.aggregators.max_pool import MaxPool
from milkit.components.aggregators.mean_pool import MeanPool
from milkit.config import ComponentConfig
from milkit.errors import DuplicateComponentError, MilkitError, PluginError, UnknownComponentError
from milkit.head import Head
from milkit.registry import NAME_RE, Provider, Registries, Registry

BUILTIN = Provider("milkit.components.aggregators", "milkit", "0.1.0")
FAST = Provider("fastmil", "milkit-fastmil", "0.3.1")


@pytest.fixture
def aggregators() -> Registry[Aggregator]:
    reg: Registry[Aggregator] = Registry("aggregator", Aggregator)
    for cls in (MeanPool, MaxPool, ABMIL):
        reg.add(cls, provider=BUILTIN)
    return reg


def test_get_names_and_providers(aggregators: Registry[Aggregator]) -> None:
    assert aggregators.get("abmil") is ABMIL
    assert aggregators.names() == ["abmil", "max", "mean"]
    assert aggregators.provider("max") == BUILTIN and "mean" in aggregators and "nope" not in aggregators


def test_unknown_name_suggests_the_closest_and_lists_the_choices(aggregators: Registry[Aggregator]) -> None:
    with pytest.raises(UnknownComponentError) as info:
        aggregators.get("abmill")
    assert str(info.value) == (
        "unknown aggregator 'abmill'; did you mean 'abmil'? available aggregators: abmil, max, mean "
        "(run `milkit plugins` for details)"
    )
    assert isinstance(info.value, MilkitError)


def test_unknown_name_without_a_close_match(aggregators: Registry[Aggregator]) -> None:
    assert aggregators.unknown_message("zzz") == (
        "unknown aggregator 'zzz'; available aggregators: abmil, max, mean (run `milkit plugins` for details)"
    )


def test_long_choice_lists_are_cut_after_twelve() -> None:
    reg: Registry[Aggregator] = Registry("aggregator", Aggregator)
    for i in range(15):
        reg.add(type(f"Pool{i}", (MeanPool,), {"name": f"pool_{i:02d}"}), provider=BUILTIN)
    assert reg.unknown_message("zzz").endswith("pool_10, pool_11, ... and 3 more (run `milkit plugins` for details)")


def test_empty_registry_says_none() -> None:
    assert "available heads: (none)" in Registry("head", Head).unknown_message("x")


def test_duplicate_names_both_providers_and_the_fix(aggregators: Registry[Aggregator]) -> None:
    clone = type("OtherABMIL", (ABMIL,), {})
    with pytest.raises(DuplicateComponentError) as info:
        aggregators.add(clone, provider=FAST)
    assert str(info.value) == (
        "aggregator 'abmil' is registered by both 'milkit.components.aggregators' (distribution milkit 0.1.0) and "
        "'fastmil' (distribution milkit-fastmil 0.3.1). Rename one, or disable a plugin with "
        "MILKIT_DISABLE_PLUGINS=fastmil"
    )
    assert aggregators.get("abmil") is ABMIL


FIX = "fix the plugin 'fastmil' (distribution milkit-fastmil 0.3.1), or disable it with MILKIT_DISABLE_PLUGINS=fastmil"


class NotPydantic(BaseModel):
    x: int = 1


class BadDefault(ComponentConfig):
    width: int = Field(0, gt=0)


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (Classification, "plugin 'fastmil' (distribution milkit-fastmil 0.3.1) returned <class "
         "'milkit.components.heads.classification.Classification'> from milkit_register_aggregators, which is not a subclass "
         f"of milkit.Aggregator; {FIX}"),
        (type("Camel", (MeanPool,), {"name": "MeanPool"}), "aggregator class Camel from plugin 'fastmil' (distribution "
         f"milkit-fastmil 0.3.1) has invalid name 'MeanPool' (expected lowercase letters, digits, '_', '-' and "
         f"inner '.', e.g. conch-v1.5); {FIX}"),
        (type("NoName", (Aggregator,), {}), "aggregator class NoName from plugin 'fastmil' (distribution milkit-fastmil "
         f"0.3.1) has invalid name None (expected lowercase letters, digits, '_', '-' and inner '.', "
         f"e.g. conch-v1.5); {FIX}"),
        (type("NoConfig", (Aggregator,), {"name": "no_config"}), "aggregator 'no_config' from plugin 'fastmil' "
         f"(distribution milkit-fastmil 0.3.1) has no valid Config (a subclass of milkit.ComponentConfig); {FIX}"),
        (type("Plain", (MeanPool,), {"name": "plain", "Config": NotPydantic}), "aggregator 'plain' from plugin "
         f"'fastmil' (distribution milkit-fastmil 0.3.1) has no valid Config (a subclass of milkit.ComponentConfig); {FIX}"),
        (type("Bad", (MeanPool,), {"name": "bad", "Config": BadDefault}), "aggregator 'bad' from plugin 'fastmil' "
         "(distribution milkit-fastmil 0.3.1) has a Config whose defaults do not validate (width: Input should be "
         f"greater than 0 (default 0)); {FIX}"),
    ],
)
def test_invalid_components_are_refused_with_the_plugin_and_the_fix(cls: type, message: str) -> None:
    reg: Registry[Aggregator] = Registry("aggregator", Aggregator)
    with pytest.raises(PluginError) as info:
        reg.add(cls, provider=FAST)
    assert str(info.value) == message
    assert reg.names() == []


def test_required_config_fields_are_allowed() -> None:
    class NeedsPath(ComponentConfig):
        path: str
        width: int = Field(4, gt=0)

    reg: Registry[Aggregator] = Registry("aggregator", Aggregator)
    reg.add(type("P", (MeanPool,), {"name": "p", "Config": NeedsPath}), provider=FAST)
    assert reg.names() == ["p"]


def test_registries_of_kind() -> None:
    regs = Registries()
    assert [regs.of(k).kind for k in ("extractor", "aggregator", "head")] == ["extractor", "aggregator", "head"]


def test_provider_str_for_runtime_plugins() -> None:
    assert str(Provider("inline", "(not installed: registered at run time)", "")) == (
        "'inline' (distribution (not installed: registered at run time))"
    )


@pytest.mark.parametrize(("name", "valid"), [("conch-v1.5", True), ("uni2-h", True), ("clam_sb", True),
                                             ("a.b.c", True), ("conch-v1.", False), (".5", False), ("a..b", False),
                                             ("Uni", False), ("1uni", False), ("a b", False)])
def test_names_allow_inner_dots_only(name: str, valid: bool) -> None:
    assert bool(NAME_RE.match(name)) is valid
