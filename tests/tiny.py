"""Test-suite helpers: a BOS-adding copy of the tiny tokenizer and inline method plugins.

Tiny random models, the tiny tokenizer and `save_tiny` (a model folder) are the conformance kit's,
in `unlearn_core.testing`; they are imported here so tests keep `from tiny import ...`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from unlearn_core import MethodSpec, hookimpl
from unlearn_core.testing import TINY_CONFIGS, VOCAB, save_tiny, tiny_model, tiny_tokenizer

__all__ = ["TINY_CONFIGS", "VOCAB", "bos_tokenizer", "method_plugin", "save_tiny", "tiny_model",
           "tiny_tokenizer"]


def bos_tokenizer():
    """The tiny tokenizer putting its first special token before every text, as Llama's and Gemma's
    put a BOS (a copy: the shared tiny tokenizer stays as it is)."""
    from tokenizers import processors

    tok = copy.deepcopy(tiny_tokenizer())
    tok.bos_token = "<eos>"
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<eos> $A",
                                                                  special_tokens=[("<eos>", 0)])
    return tok


def method_plugin(name: str, score: Callable, prepare: Callable | None = None):
    """An inline plugin object registering method `name`, whose scorer calls `score(ctx)` (and
    `prepare(ctx)` when given); register it with `load_plugins(extra=[(name, plugin)])`."""

    class Scorer:
        def __init__(self, options):
            pass

        def score(self, ctx):
            return score(ctx)

    if prepare is not None:
        Scorer.prepare = lambda self, ctx: prepare(ctx)

    class Plugin:
        @hookimpl
        def register_methods(self, register):
            register(MethodSpec(name=name, description=f"test method {name}", scorer=Scorer))

    return Plugin()
