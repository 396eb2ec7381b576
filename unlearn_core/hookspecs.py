"""Hook specifications. A plugin implements any of these with `@unlearn_core.hookimpl`.

Each hook receives a `register` callback; call it once per thing the plugin provides.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("unlearn")
hookimpl = pluggy.HookimplMarker("unlearn")


@hookspec
def register_methods(register):
    """Register unlearning methods: register(MethodSpec(...))."""


@hookspec
def register_corpora(register):
    """Register corpora: register(CorpusSpec(...))."""


@hookspec
def register_architectures(register):
    """Register architecture adapters: register(Architecture(...))."""


@hookspec
def register_components(register):
    """Register swappable parts of any kind, built by name by whoever uses them:
    register(ComponentSpec(kind, name, description, build, check)), e.g. kind "explainer" or
    "embedder" (SNIP) or "classifier" (toxicity)."""


@hookspec
def register_commands(register):
    """Register CLI subcommands: register(CommandSpec(...))."""


@hookspec
def register_evaluations(register):
    """Register evaluation harnesses (cloze, toxicity, ...): register(EvaluationSpec(...))."""
