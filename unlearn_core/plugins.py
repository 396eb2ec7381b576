"""The plugin manager: loads entry points of group 'unlearn' and collects what they register.

UNLEARN_PLUGINS=name1,name2 loads only those entry points ('' loads none); the core's built-in
corpora and adapters always load. A plugin that fails to import or to register is recorded by
name in `Registry.failed` and the others still work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import pluggy

from . import core_plugin, hookspecs
from .architectures import Architecture
from .components import ComponentSpec
from .corpora import CorpusSpec
from .errors import UsageError, is_safe_name, one_line, unknown_name
from .interfaces import CommandSpec, EvaluationSpec, MethodSpec

ENV_VAR = "UNLEARN_PLUGINS"
GROUP = "unlearn"
CORE = "unlearn_core"


@dataclass
class PluginInfo:
    name: str
    package: str
    version: str
    hooks: list[str]
    registered: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name, and who registered it."""

    methods: dict = field(default_factory=dict)
    corpora: dict = field(default_factory=dict)
    architectures: dict = field(default_factory=dict)
    # Swappable parts, by kind ("explainer", "embedder", "classifier", ...) and then name.
    components: dict[str, dict[str, ComponentSpec]] = field(default_factory=dict)
    commands: dict = field(default_factory=dict)
    evaluations: dict = field(default_factory=dict)
    # (table, name) -> plugin; a component's table is "components:KIND", e.g. "components:explainer".
    owner: dict[tuple[str, str], str] = field(default_factory=dict)
    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # plugin -> one-line reason

    def method(self, name: str) -> MethodSpec:
        if name not in self.methods:
            raise unknown_name("method", name, self.methods)
        return self.methods[name]

    def component(self, kind: str, name: str) -> ComponentSpec:
        """The registered component `name` of `kind`; UsageError naming the choices if none."""
        table = self.components.get(kind, {})
        if name not in table:
            raise unknown_name(kind, name, table)
        return table[name]

    def plugin_of(self, kind: str, name: str) -> PluginInfo:
        return self.plugins[self.owner[(kind, name)]]


_KINDS = {"register_methods": "methods", "register_corpora": "corpora",
          "register_architectures": "architectures", "register_components": "components",
          "register_commands": "commands", "register_evaluations": "evaluations"}
_TYPES = {"methods": MethodSpec, "corpora": CorpusSpec, "architectures": Architecture,
          "components": ComponentSpec, "commands": CommandSpec, "evaluations": EvaluationSpec}
_SINGULAR = {"methods": "method", "corpora": "corpus", "architectures": "architecture",
             "commands": "command", "evaluations": "evaluation"}
# A component kind is listed under its plural (`unlearn ls explainers`): not one of these.
_RESERVED_KINDS = {*_SINGULAR.values(), "component", "model", "preset", "plugin"}


def _selected(names: list[str], only: str | None) -> list[str]:
    if only is None:
        return names
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    for n in wanted:
        if n not in names:
            raise unknown_name("plugin", n, names)
    return wanted


def load_plugins(only: str | None = None, extra: list[tuple[str, object]] | None = None) -> Registry:
    """Load entry-point plugins (all, or the comma list `only`, default $UNLEARN_PLUGINS).

    `extra` registers (name, plugin object) pairs directly, the way a test registers an inline plugin.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    pm.register(core_plugin, name=CORE)
    registry.plugins[CORE] = PluginInfo(CORE, "unlearn", _version("unlearn"), [])

    eps = {ep.name: ep for ep in entry_points(group=GROUP)}
    only = os.environ.get(ENV_VAR) if only is None else only
    for name in _selected(sorted(eps), only):
        ep = eps[name]
        package = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        try:
            pm.register(ep.load(), name=name)
        except Exception as e:
            registry.failed[name] = f"cannot load: {one_line(e)}"
            continue
        registry.plugins[name] = PluginInfo(name, package, version, [])
    for name, obj in extra or []:
        pm.register(obj, name=name)
        module = getattr(obj, "__name__", type(obj).__name__)
        registry.plugins[name] = PluginInfo(name, module, "inline", [])
    try:
        pm.check_pending()  # a misspelled hook name is an error, not a silent no-op
    except pluggy.PluginValidationError as e:
        bad = pm.get_name(e.plugin) or "?"
        registry.failed[bad] = one_line(e)
        pm.unregister(name=bad)
        registry.plugins.pop(bad, None)

    for hook_name, kind in _KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            registry.plugins[plugin].hooks.append(hook_name)
            try:
                impl.function(register=_registrar(registry, kind, plugin))
            except UsageError:
                raise
            except Exception as e:
                registry.failed[plugin] = f"{hook_name} failed: {one_line(e)}"
    return registry


def _registrar(registry: Registry, kind: str, plugin: str):
    def register(item) -> None:
        expected = _TYPES[kind]
        if not isinstance(item, expected):
            raise TypeError(f"register() in {kind} expects {expected.__name__}, got {type(item).__name__}")
        # Names become parts of file names (records, plots) and of specs ('corpus:ARG'): a name
        # such as '../../x' would write outside --out.
        names = [item.name, *(f.key for f in getattr(item, "figures", ()) if kind == "evaluations")]
        for name in names:
            if not is_safe_name(name):
                raise TypeError(f"{_SINGULAR.get(kind, 'component')} name {name!r} is not allowed: use "
                                "letters, digits, '_', '-', '.' and '+' (at most 80, no '..')")
        if kind == "components":
            if not isinstance(item.kind, str) or not item.kind.isidentifier() or item.kind in _RESERVED_KINDS:
                raise TypeError(f"component '{item.name}' has kind {item.kind!r}; a kind is a word such as "
                                f"'explainer', not one of {', '.join(sorted(_RESERVED_KINDS))}")
            # One table per kind; `unlearn plugins` lists them under the plural, e.g. 'explainers'.
            table, key, what, listed = (registry.components.setdefault(item.kind, {}),
                                        f"components:{item.kind}", item.kind, f"{item.kind}s")
        else:
            table, key, what, listed = getattr(registry, kind), kind, _SINGULAR[kind], kind
        if item.name in table:
            raise UsageError(f"{what} '{item.name}' is registered twice: by "
                             f"'{registry.owner[(key, item.name)]}' and by '{plugin}'")
        if kind == "architectures":
            _check_model_types(registry, item, plugin)
        table[item.name] = item
        registry.owner[(key, item.name)] = plugin
        registry.plugins[plugin].registered.setdefault(listed, []).append(item.name)

    return register


def _check_model_types(registry: Registry, arch: Architecture, plugin: str) -> None:
    """A model type belongs to one architecture: a second claim would silently decide which
    adapter's sites a model gets."""
    for other in registry.architectures.values():
        for model_type in arch.model_types:
            if model_type in other.model_types:
                raise UsageError(
                    f"model type '{model_type}' is claimed twice: by architecture '{other.name}' of "
                    f"'{registry.owner[('architectures', other.name)]}' and by architecture "
                    f"'{arch.name}' of '{plugin}'")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"
