"""SNIP (Li & Weng, UCSD 2024) and the baselines that need neuron explanations.

Registers the methods `snip`, `keyword` and `llm-scored`, the components of kind "explainer" `tokens`,
`local` and `openai` and of kind "embedder" `sentence-transformers` and `openai` (they implement
`unlearn_core.Explainer` and `unlearn_core.Embedder`), and the command `unlearn explain`.
See method.py for the pipeline.
"""

from __future__ import annotations

from unlearn_core import ComponentSpec, MethodSpec, hookimpl

from .method import (
    ExplanationOptions,
    KeywordOptions,
    KeywordScorer,
    RatedScorer,
    SnipOptions,
    SnipScorer,
    component_check,
)


@hookimpl
def register_methods(register):
    register(MethodSpec("snip", "explanation-to-concept cosine similarity (Li & Weng 2024)",
                        SnipScorer, SnipOptions, check=component_check("snip")))
    register(MethodSpec("keyword", "explanations that contain a forget keyword", KeywordScorer,
                        KeywordOptions, check=component_check("keyword")))
    register(MethodSpec("llm-scored", "the explainer rates each explanation 0-10 for the forget data",
                        RatedScorer, ExplanationOptions, check=component_check("llm-scored")))


# `progress` is named so that a quiet run can turn it off (method.build_component).
def _openai_explainer(progress: bool = True, **options):
    from .openai_backend import OpenAIExplainer

    return OpenAIExplainer(progress=progress, **options)


def _openai_embedder(progress: bool = True, **options):
    from .openai_backend import OpenAIEmbedder

    return OpenAIEmbedder(progress=progress, **options)


def _check_openai(class_name: str, kind: str):
    """Constructing an OpenAI client is cheap and checks key and settings: do it before models load."""

    def check(**options) -> None:
        from . import openai_backend
        from .method import accepts

        cls = getattr(openai_backend, class_name)
        accepts(cls, kind, "openai")(**options)
        cls(**options)

    return check


@hookimpl
def register_components(register):
    from .explainers import LocalExplainer, SentenceTransformerEmbedder, TokensExplainer
    from .method import accepts

    register(ComponentSpec("explainer", "tokens", "no LLM: a neuron's strongest tokens (deterministic)",
                           TokensExplainer, accepts(TokensExplainer, "explainer", "tokens")))
    register(ComponentSpec("explainer", "local", "a transformers chat model, default the embedded SmolLM2",
                           LocalExplainer, accepts(LocalExplainer, "explainer", "local")))
    register(ComponentSpec("explainer", "openai",
                           "any OpenAI-compatible chat endpoint (OPENAI_API_KEY, OPENAI_BASE_URL)",
                           _openai_explainer, _check_openai("OpenAIExplainer", "explainer")))
    register(ComponentSpec("embedder", "sentence-transformers", "all-MiniLM-L6-v2 from its wheel (offline)",
                           SentenceTransformerEmbedder,
                           accepts(SentenceTransformerEmbedder, "embedder", "sentence-transformers")))
    register(ComponentSpec("embedder", "openai", "OpenAI embeddings, text-embedding-3-small", _openai_embedder,
                           _check_openai("OpenAIEmbedder", "embedder")))


@hookimpl
def register_commands(register):
    from .command import EXPLAIN

    register(EXPLAIN)
