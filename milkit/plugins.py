"""Build the plugin manager: entry-point plugins, then milkit's built-in plugins.

Environment variables:
    MILKIT_DISABLE_PLUGIN_AUTOLOAD=1  do not load entry-point plugins at all
    MILKIT_DISABLE_PLUGINS=a,b        block the named plugins (entry-point names)
    MILKIT_TRACE_PLUGINS=1            print every hook call, its implementations and results
"""

import importlib
import importlib.metadata
import os
import sys
from typing import TYPE_CHECKING, Any

import pluggy

from milkit import hookspecs
from milkit.hookspecs import PROJECT

if TYPE_CHECKING:
    from milkit.registry import Provider

BUILTIN_PLUGINS = (
    "milkit.commands",
    "milkit.data.csv_format",
    "milkit.components.extractors",
    "milkit.components.aggregators",
    "milkit.components.heads",
    "milkit.histgen",
    "milkit.demo",
)
"""milkit's own plugins, registered after the entry-point plugins under these names."""

BUILTIN_MODULES = {"milkit.histgen": "milkit.histgen.plugin", "milkit.demo": "milkit.demo.plugin"}
"""Plugin name -> module, where they differ (a package whose hooks live in its ``plugin`` module)."""

RENAMED_PLUGINS = {
    "milkit.builtin.extractors": "milkit.components.extractors",
    "milkit.builtin.aggregators": "milkit.components.aggregators",
    "milkit.builtin.heads": "milkit.components.heads",
    "milkit.histgen.plugin": "milkit.histgen",
}
"""Names of milkit 0.1's built-in plugins, still accepted by MILKIT_DISABLE_PLUGINS (0.2 only)."""

_PROBLEMS_ATTR = "_milkit_load_problems"


def _env_list(name: str) -> list[str]:
    return [s.strip() for s in os.environ.get(name, "").split(",") if s.strip()]


def get_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager (never a global): entry points first, then builtins.

    A plugin that fails to import is recorded (see :func:`load_problems`) instead of
    raising, so every other plugin keeps working.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    problems: list[str] = []
    for name in _env_list("MILKIT_DISABLE_PLUGINS"):
        if name in RENAMED_PLUGINS:
            problems.append(f"MILKIT_DISABLE_PLUGINS: plugin '{name}' is now called '{RENAMED_PLUGINS[name]}'; "
                            "the old name works in milkit 0.2 only (see CHANGELOG.md)")
            name = RENAMED_PLUGINS[name]
        pm.set_blocked(name)
    if autoload is None:
        autoload = not os.environ.get("MILKIT_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        _load_entrypoints(pm, problems)
    for name in BUILTIN_PLUGINS:
        if not pm.is_blocked(name):
            pm.register(importlib.import_module(BUILTIN_MODULES.get(name, name)), name=name)
    _drop_unknown_hooks(pm, problems)
    if os.environ.get("MILKIT_TRACE_PLUGINS"):
        pm.add_hookcall_monitoring(_trace_before, _trace_after)
    setattr(pm, _PROBLEMS_ATTR, problems)
    return pm


def _load_entrypoints(pm: pluggy.PluginManager, problems: list[str]) -> None:
    seen: dict[str, str] = {}  # entry-point name -> distribution that claimed it first
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != PROJECT or pm.is_blocked(ep.name):
                continue
            dist_name = dist.metadata["name"]
            if ep.name in seen or pm.get_plugin(ep.name):
                if seen.get(ep.name, dist_name) != dist_name:  # the same dist twice on sys.path is fine
                    problems.append(
                        f"plugin name '{ep.name}' is declared by both distributions {seen[ep.name]} and "
                        f"{dist_name}; {dist_name}'s was ignored. Uninstall one of them (`pip uninstall {dist_name}`)"
                    )
                continue
            seen[ep.name] = dist_name
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                problems.append(
                    f"plugin '{ep.name}' (distribution {dist.metadata['name']} {dist.version}) failed to load: "
                    f"{type(exc).__name__}: {exc}; fix or uninstall it (`pip uninstall {dist.metadata['name']}`), "
                    f"or disable it with MILKIT_DISABLE_PLUGINS={ep.name}"
                )
                continue
            pm._plugin_distinfo.append((plugin, dist))  # what pluggy's own loader records


def _drop_unknown_hooks(pm: pluggy.PluginManager, problems: list[str]) -> None:
    """Unregister every plugin implementing a hook milkit has no spec for (a misspelt hook name)."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            unknown = sorted(h.name for h in pm.get_hookcallers(exc.plugin) or [] if not h.has_spec())
            known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("milkit_")))
            problems.append(
                f"plugin {describe_plugin(pm, name)} implements unknown hook(s) {', '.join(unknown)} "
                f"and was not loaded; milkit's hooks are: {known}. Fix the hook name, or disable it "
                f"with MILKIT_DISABLE_PLUGINS={name}"
            )
            pm._plugin_distinfo = [(p, d) for p, d in pm._plugin_distinfo if p is not exc.plugin]
            pm.unregister(exc.plugin)


def in_call_order(impls: list[pluggy.HookImpl]) -> list[pluggy.HookImpl]:
    """A hook's implementations in the order milkit calls them one by one: its built-in plugins
    first, in ``BUILTIN_PLUGINS`` order, then entry-point plugins in the order they were loaded."""
    builtin = sorted((i for i in impls if i.plugin_name in BUILTIN_PLUGINS),
                     key=lambda i: BUILTIN_PLUGINS.index(i.plugin_name))
    others = [i for i in impls if i.plugin_name not in BUILTIN_PLUGINS]
    return builtin + others


def load_problems(pm: pluggy.PluginManager) -> list[str]:
    """Problems met while loading plugins into ``pm`` (failed imports, unknown hooks)."""
    return list(getattr(pm, _PROBLEMS_ATTR, []))


def describe_plugin(pm: pluggy.PluginManager, plugin_name: str) -> "Provider":
    """The plugin's name plus the distribution that installed it (``milkit`` for builtins)."""
    from milkit.registry import Provider

    plugin = pm.get_plugin(plugin_name)
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return Provider(plugin_name, dist.metadata["name"], dist.version)
    if plugin_name in BUILTIN_PLUGINS:
        from milkit import __version__

        return Provider(plugin_name, "milkit", __version__)
    return Provider(plugin_name, "(not installed: registered at run time)", "")


def _trace_before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
    names = ", ".join(impl.plugin_name for impl in hook_impls)
    print(f"[milkit trace] {hook_name}({kwargs}) -> implementations: {names}", file=sys.stderr)


def _trace_after(outcome: Any, hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
    try:
        result = outcome.get_result()
    except BaseException as exc:  # noqa: BLE001 - report, do not swallow
        print(f"[milkit trace] {hook_name} raised {exc!r}", file=sys.stderr)
        return
    print(f"[milkit trace] {hook_name} returned {result!r}", file=sys.stderr)
