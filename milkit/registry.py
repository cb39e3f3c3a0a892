"""Name -> component class registries, filled from the plugin manager's hooks."""

import difflib
import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import pluggy

from milkit.aggregator import Aggregator
from milkit.config import ComponentConfig
from milkit.errors import DuplicateComponentError, PluginError, UnknownComponentError
from milkit.extractor import Extractor
from milkit.head import Head

T = TypeVar("T")
NAME_RE = re.compile(r"^[a-z][a-z0-9_\-]*$")


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
    """Name -> component class for one kind ("extractor", "aggregator", "head")."""

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
                f"(expected lowercase letters, digits, '_' or '-'); {fix}"
            )
        config = getattr(cls, "Config", None)
        if not (isinstance(config, type) and issubclass(config, ComponentConfig)):
            raise PluginError(
                f"{self.kind} '{name}' from plugin {provider} has no valid Config "
                f"(a subclass of milkit.ComponentConfig); {fix}"
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
        choices = self.names()
        close = difflib.get_close_matches(name, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return (
            f"unknown {self.kind} '{name}'{hint} available {self.kind}s: "
            f"{', '.join(choices) or '(none)'} (run `milkit plugins` for details)"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def names(self) -> list[str]:
        return sorted(self._classes)

    def provider(self, name: str) -> Provider:
        return self._providers[name]


@dataclass
class Registries:
    """The three registries plus every problem met while filling them."""

    extractors: Registry[Extractor] = field(default_factory=lambda: Registry("extractor", Extractor))
    aggregators: Registry[Aggregator] = field(default_factory=lambda: Registry("aggregator", Aggregator))
    heads: Registry[Head] = field(default_factory=lambda: Registry("head", Head))
    problems: list[str] = field(default_factory=list)

    def of(self, kind: str) -> Registry:
        return {"extractor": self.extractors, "aggregator": self.aggregators, "head": self.heads}[kind]


def build_registries(pm: pluggy.PluginManager) -> Registries:
    """Fill fresh registries from every registered plugin's ``milkit_register_*`` hooks.

    A plugin whose hook raises, or returns something invalid, is recorded in
    ``problems`` (and skipped); the other plugins' components are still registered.
    """
    from milkit.plugins import describe_plugin, load_problems

    regs = Registries()
    regs.problems.extend(load_problems(pm))
    hooks = (
        (pm.hook.milkit_register_extractors, regs.extractors),
        (pm.hook.milkit_register_aggregators, regs.aggregators),
        (pm.hook.milkit_register_heads, regs.heads),
    )
    for hook, registry in hooks:
        for impl in reversed(hook.get_hookimpls()):  # registration order: builtins first
            provider = describe_plugin(pm, impl.plugin_name)
            try:
                classes = impl.function()
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
                    registry.add(cls, provider=provider)
                except (PluginError, DuplicateComponentError) as exc:
                    regs.problems.append(str(exc))
    return regs
