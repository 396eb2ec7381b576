"""SNIP (Li & Weng, UCSD 2024) and the baselines that need neuron explanations.

Registers the methods `snip`, `keyword` and `llm-scored`, the explainers `tokens`, `local` and
`openai`, the embedders `sentence-transformers` and `openai`, and the command `unlearn explain`.
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
    check_components,
)


@hookimpl
def register_methods(register):
    register(MethodSpec("snip", "explanation-to-concept cosine similarity (Li & Weng 2024)",
                        SnipScorer, SnipOptions, check=check_components))
    register(MethodSpec("keyword", "explanations that contain a forget keyword", KeywordScorer,
                        KeywordOptions, check=check_components))
    register(MethodSpec("llm-scored", "the explainer rates each explanation 0-10 for the forget data",
                        RatedScorer, ExplanationOptions, check=check_components))


def _openai_explainer(**options):
    from .openai_backend import OpenAIExplainer

    return OpenAIExplainer(**options)


def _openai_embedder(**options):
    from .openai_backend import OpenAIEmbedder

    return OpenAIEmbedder(**options)


def _tokens(**options):
    from .explainers import TokensExplainer

    return TokensExplainer(**options)


def _local(**options):
    from .explainers import LocalExplainer

    return LocalExplainer(**options)


def _sentence_transformers(**options):
    from .explainers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(**options)


@hookimpl
def register_explainers(register):
    register(ComponentSpec("tokens", "no LLM: a neuron's strongest tokens (deterministic)", _tokens))
    register(ComponentSpec("local", "a transformers chat model, default the embedded SmolLM2", _local))
    register(ComponentSpec("openai", "any OpenAI-compatible chat endpoint (OPENAI_API_KEY, "
                                     "OPENAI_BASE_URL)", _openai_explainer))


@hookimpl
def register_commands(register):
    from .command import EXPLAIN

    register(EXPLAIN)


@hookimpl
def register_embedders(register):
    register(ComponentSpec("sentence-transformers", "all-MiniLM-L6-v2 from its wheel (offline)",
                           _sentence_transformers))
    register(ComponentSpec("openai", "OpenAI embeddings, text-embedding-3-small", _openai_embedder))
