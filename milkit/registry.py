"""Name -> component class registries, filled from the plugin manager's hooks."""

import difflib
import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pluggy
from pydantic import ValidationError

from milkit.aggregator import Aggregator
from milkit.cohort_format import CohortFormat
from milkit.config import ComponentConfig
from milkit.errors import DuplicateComponentError, PluginError, UnknownComponentError
from milkit.extractor import Extractor
from milkit.head import Head

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*(\.[a-z0-9_\-]+)*$")
MAX_CHOICES = 12  # unknown-name errors list at most this many valid names


@dataclass(frozen=True)
class Provider:
    """Who registered a component: the plugin name and, for installed ones, its distribution."""

    plugin: str
    distribution: str = "milkit"
    version: str = ""

    def __str__(self) -> str:
        dist = f"{self.distribution} {self.version}".strip()
        return f"'{self.plugin}' (distribution {dist})"


class Registry(Generic[T]):
    """Name -> class for one kind ("extractor", "aggregator", "head", "cohort_format")."""

    def __init__(self, kind: str, base: type) -> None:
        self.kind = kind
        self.base = base
        self._classes: dict[str, type[T]] = {}
        self._providers: dict[str, Provider] = {}

    def add(self, cls: object, *, provider: Provider) -> None:
        """Register ``cls``; raise if it is not a valid component or its name is taken."""
        fix = f"fix the plugin {provider}, or disable it with MILKIT_DISABLE_PLUGINS={provider.plugin}"
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {provider} returned {cls!r} from milkit_register_{self.kind}s, which is not a "
                f"subclass of milkit.{self.base.__name__}; {fix}"
            )
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise PluginError(
                f"{self.kind} class {cls.__qualname__} from plugin {provider} has invalid name {name!r} "
                f"(expected lowercase letters, digits, '_', '-' and inner '.', e.g. conch-v1.5); {fix}"
            )
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
            raise PluginError(
                f"{self.kind} '{name}' from plugin {provider} has no valid Config "
                f"(a subclass of milkit.ComponentConfig); {fix}"
            )
        bad_defaults = _invalid_defaults(config)
        if bad_defaults:
            raise PluginError(
                f"{self.kind} '{name}' from plugin {provider} has a Config whose defaults do not validate "
                f"({bad_defaults}); {fix}"
            )
        if name in self._classes:
            raise DuplicateComponentError(
                f"{self.kind} '{name}' is registered by both {self._providers[name]} and {provider}. "
                f"Rename one, or disable a plugin with MILKIT_DISABLE_PLUGINS={provider.plugin}"
            )
        self._classes[name] = cls  # type: ignore[assignment]
        self._providers[name] = provider

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; unknown names list the choices."""
        if name not in self._classes:
            raise UnknownComponentError(self.unknown_message(name))
        return self._classes[name]

    def unknown_message(self, name: str) -> str:
        """``unknown <kind> 'x'; did you mean 'y'? available <kind>s: a, b, ... (run `milkit plugins` ...)``."""
        choices = self.names()
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ";"
        shown = ", ".join(choices[:MAX_CHOICES]) or "(none)"
        if len(choices) > MAX_CHOICES:
            shown += f", ... and {len(choices) - MAX_CHOICES} more"
        return f"unknown {self.kind} '{name}'{hint} available {self.kind}s: {shown} (run `milkit plugins` for details)"

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def provider(self, name: str) -> Provider:
        return self._providers[name]


def _invalid_defaults(config: type[ComponentConfig]) -> str:
    """Why the Config's own default values fail validation ("" if they pass; required fields are fine)."""
    defaults = {
        key: f.get_default(call_default_factory=True) for key, f in config.model_fields.items() if not f.is_required()
    }
    try:
        config.model_validate(defaults)
    except ValidationError as exc:
        bad = [e for e in exc.errors() if e["type"] != "missing"]
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']} (default {e['input']!r})" for e in bad[:3])
    except Exception as exc:  # noqa: BLE001 - a validator that crashes is a broken Config too
        return f"{type(exc).__name__}: {exc}"
    return ""


@dataclass
class Registries:
    """The three registries plus every problem met while filling them."""

    extractors: Registry[Extractor] = field(default_factory=lambda: Registry("extractor", Extractor))
    aggregators: Registry[Aggregator] = field(default_factory=lambda: Registry("aggregator", Aggregator))
    heads: Registry[Head] = field(default_factory=lambda: Registry("head", Head))
    cohort_formats: Registry[CohortFormat] = field(default_factory=lambda: Registry("cohort_format", CohortFormat))
    problems: list[str] = field(default_factory=list)

    def of(self, kind: str) -> Registry:
        return {"extractor": self.extractors, "aggregator": self.aggregators, "head": self.heads,
                "cohort_format": self.cohort_formats}[kind]

    def cohort_format_for(self, key: str) -> type[CohortFormat] | None:
        """The cohort format selected by the ``[cohort]`` key ``key`` (None if no format has it)."""
        for name in self.cohort_formats.names():
            cls = self.cohort_formats.get(name)
            if cls.key == key:
                return cls
        return None


def build_registries(pm: pluggy.PluginManager) -> Registries:
    """Fill fresh registries from every registered plugin's ``milkit_register_*`` hooks.

    A plugin whose hook raises, or returns something invalid, is recorded in
    ``problems`` (and skipped); the other plugins' components are still registered.
    """
    from milkit.plugins import describe_plugin, in_call_order, load_problems

    regs = Registries()
    regs.problems.extend(load_problems(pm))
    hooks = (
        (pm.hook.milkit_register_extractors, regs.extractors),
        (pm.hook.milkit_register_aggregators, regs.aggregators),
        (pm.hook.milkit_register_heads, regs.heads),
        (pm.hook.milkit_register_cohort_formats, regs.cohort_formats),
    )
    for hook, registry in hooks:
        for impl in in_call_order(hook.get_hookimpls()):  # milkit's own first: a later duplicate is refused
            provider = describe_plugin(pm, impl.plugin_name)
            try:
                classes = _call_one(pm, hook.name, impl)
            except Exception as exc:  # a broken plugin must not take milkit down
                regs.problems.append(
                    f"plugin {provider}: milkit_register_{registry.kind}s raised {type(exc).__name__}: {exc}; "
                    f"fix it or disable it with MILKIT_DISABLE_PLUGINS={provider.plugin}"
                )
                continue
            if not isinstance(classes, (list, tuple)):
                regs.problems.append(
                    f"plugin {provider}: milkit_register_{registry.kind}s returned {type(classes).__name__}, "
                    f"expected a list of classes; fix it or disable it with MILKIT_DISABLE_PLUGINS={provider.plugin}"
                )
                continue
            for cls in classes:
                try:
                    if registry is regs.cohort_formats:
                        _check_cohort_key(regs, cls, provider)
                    registry.add(cls, provider=provider)
                except (PluginError, DuplicateComponentError) as exc:
                    regs.problems.append(str(exc))
    return regs


def _check_cohort_key(regs: Registries, cls: object, provider: Provider) -> None:
    """A cohort format's ``key`` must be a fresh ``[cohort]`` key (not a section field, not taken)."""
    from milkit.recipe.sections import CohortSection

    key = getattr(cls, "key", None)
    fix = f"fix the plugin {provider}, or disable it with MILKIT_DISABLE_PLUGINS={provider.plugin}"
    if not isinstance(key, str) or not re.match(r"^[a-z][a-z0-9_]*$", key):
        raise PluginError(f"cohort format {cls!r} from plugin {provider} has invalid key {key!r} "
                          f"(the [cohort] key that selects it: lowercase letters, digits, '_'); {fix}")
    if key in CohortSection.model_fields:
        raise PluginError(f"cohort format {cls!r} from plugin {provider} uses key '{key}', which is a [cohort] "
                          f"setting; {fix}")
    other = regs.cohort_format_for(key)
    if other is not None:
        raise DuplicateComponentError(f"[cohort] key '{key}' is claimed by cohort formats '{other.name}' "
                                      f"({regs.cohort_formats.provider(other.name)}) and {cls!r} ({provider}); "
                                      "disable one with MILKIT_DISABLE_PLUGINS")


def _call_one(pm: pluggy.PluginManager, hook_name: str, impl: pluggy.HookImpl) -> object:
    """Call one plugin's implementation through the manager (so MILKIT_TRACE_PLUGINS sees it).

    pluggy drops ``None`` results, so a hook that forgot to ``return`` gives ``None`` here.
    """
    others = [p for _, p in pm.list_name_plugin() if p is not impl.plugin and p is not None]
    results = pm.subset_hook_caller(hook_name, remove_plugins=others)()
    return results[0] if results else None
