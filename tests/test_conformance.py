"""Every registered method, and the example plugin, passes the conformance kit on every tiny model.

The table is built from the registry, so a new built-in method is checked without touching this
file; methods that need more than their defaults to run offline get them in OPTIONS.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from unlearn_core import MethodSpec, hookimpl, load_plugins
from unlearn_core.plugins import Registry
from unlearn_core.testing import TINY_ARCHITECTURES, ConformanceError, check_method, check_options

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "unlearn-magnitude" / "src"


def _explained(tmp_path: Path) -> dict:
    """Explanation methods offline: a private store and the deterministic `tokens` explainer."""
    return {"store": str(tmp_path / "explanations.sqlite"), "explainer": "tokens",
            "max_neurons": 12, "n_concepts": 4}


OPTIONS = {"snip": _explained, "keyword": _explained, "llm-scored": _explained}


def _registry() -> Registry:
    """The installed plugins, plus the example plugin from its source folder."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import unlearn_magnitude
    finally:
        sys.path.remove(str(EXAMPLE))
    return load_plugins(extra=[("magnitude", unlearn_magnitude)])


REGISTRY = _registry()
METHODS = sorted(REGISTRY.methods)


def test_the_table_covers_the_builtins_and_the_example():
    assert {"selective", "random", "snip", "keyword", "llm-scored", "magnitude"} <= set(METHODS)
    assert REGISTRY.failed == {}


@pytest.mark.parametrize("architecture", TINY_ARCHITECTURES)
@pytest.mark.parametrize("method", METHODS)
def test_method_conforms(method: str, architecture: str, tmp_path: Path):
    options = OPTIONS[method](tmp_path) if method in OPTIONS else None
    check_method(method, architecture, options, REGISTRY)


@pytest.mark.parametrize("site", ["attn-pre-out", "attn-value", "attn-head"])
@pytest.mark.parametrize("method", METHODS)
def test_method_conforms_on_every_attention_site(method: str, site: str, tmp_path: Path):
    """Every method on every site through the same interfaces (llama: grouped-query attention)."""
    options = OPTIONS[method](tmp_path) if method in OPTIONS else None
    check_method(method, "llama", options, REGISTRY, site=site)


# The kit must catch what it promises to catch: one broken method per check.

class _Scorer:
    def __init__(self, options, fn):
        self.fn = fn

    def score(self, ctx):
        return self.fn(ctx)


def _broken(name: str, fn, pruner=None, options=None) -> MethodSpec:
    extra = {} if options is None else {"options": options}
    return MethodSpec(name, "broken on purpose", lambda o: _Scorer(o, fn), pruner=pruner, **extra)


def _ones(ctx):
    import torch

    return torch.ones(ctx.site.shape)


class _NoDelete:
    """Marks neurons as pruned without deleting their weights."""

    def __init__(self, options):
        pass

    def prune(self, ctx, scores, count):
        flat = (~ctx.pruned).flatten().nonzero().flatten()[:count]
        mask = ctx.pruned.clone().flatten()
        mask[flat] = True
        return mask.view_as(ctx.pruned)


class _OneTooMany(_NoDelete):
    def prune(self, ctx, scores, count):
        from unlearn_core.topk import GlobalTopK

        return GlobalTopK().prune(ctx, scores, count + 1)


def _loose_options():
    from pydantic import BaseModel

    class Loose(BaseModel):  # extra keys silently ignored: a typo in -O would go unnoticed
        power: float = 1.0

    return Loose


@pytest.mark.parametrize(("spec", "message"), [
    (_broken("shape", lambda ctx: __import__("torch").ones(3)), "scores: shape"),
    (_broken("nan", lambda ctx: _ones(ctx) * float("nan")), "not finite"),
    (_broken("ints", lambda ctx: _ones(ctx).long()), "not floating point"),
    (_broken("unseeded", lambda ctx: __import__("torch").rand(ctx.site.shape)), "deterministic"),
    (_broken("lazy", _ones, pruner=_NoDelete), "inert: a deleted neuron still activates"),
    (_broken("greedy", _ones, pruner=_OneTooMany), "deleted 11 new neurons, 10 were requested"),
    (_broken("loose", _ones, options=_loose_options()), "an unknown key is accepted"),
    (_broken("bad name", _ones), "a method name must match"),
])
def test_the_kit_catches_broken_methods(spec: MethodSpec, message: str):
    with pytest.raises(ConformanceError, match=message):
        check_method(spec, "llama", registry=REGISTRY)


def test_scorer_that_deletes_is_caught():
    def deleting(ctx):
        import torch

        ctx.site.delete(0, torch.tensor([0]))
        return _ones(ctx)

    with pytest.raises(ConformanceError, match="only the pruner may delete"):
        check_method(_broken("deleting", deleting), "gpt2", registry=REGISTRY)


def test_unknown_method_names_the_failed_plugins():
    class Broken:
        @hookimpl
        def register_methods(self, register):
            raise RuntimeError("no weights")

    registry = load_plugins(extra=[("broken", Broken())])
    with pytest.raises(ConformanceError, match="broken: register_methods failed: RuntimeError: no weights"):
        check_options("nope", registry=registry)
