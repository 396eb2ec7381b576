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


def _check_local(**options) -> None:
    """The local explainer's options, and that its model can be found, before any model loads."""
    from unlearn_core import UsageError, check_model_spec

    from .explainers import LocalExplainer
    from .method import OptionError, accepts

    accepts(LocalExplainer, "explainer", "local")(**options)
    try:
        check_model_spec(options.get("model", "smollm2"))
    except UsageError as e:
        raise OptionError("model", str(e)) from None


def _check_sentence_transformers(**options) -> None:
    """The embedder's options, its device and that its model can be found, before any model loads."""
    from pathlib import Path

    import torch

    from unlearn_core import UsageError, check_device, hub_cached, hub_offline

    from .explainers import SentenceTransformerEmbedder
    from .method import OptionError, accepts

    accepts(SentenceTransformerEmbedder, "embedder", "sentence-transformers")(**options)
    device = options.get("device", "cpu")
    try:
        torch.device(device)
    except RuntimeError:
        raise OptionError("device", "not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
    try:
        check_device(device)
    except UsageError as e:  # its text speaks of the flag: "--device cuda:7: ...; use --device cpu"
        said = str(e).removeprefix(f"--device {device}: ").replace("--device ", "")
        raise OptionError("device", said) from None
    model = options.get("model")
    if model is None or Path(model).expanduser().exists():
        return
    if model.startswith((".", "/", "~")):
        raise OptionError("model", f"no folder '{model}'")
    ids = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
    if hub_offline() and not any(hub_cached(i, "config.json") for i in ids):
        raise OptionError("model", f"'{model}' is no folder here, and the Hugging Face hub cannot be reached "
                          "to fetch it")


@hookimpl
def register_components(register):
    from .explainers import LocalExplainer, SentenceTransformerEmbedder, TokensExplainer
    from .method import accepts

    register(ComponentSpec("explainer", "tokens", "no LLM: a neuron's strongest tokens (deterministic)",
                           TokensExplainer, accepts(TokensExplainer, "explainer", "tokens")))
    register(ComponentSpec("explainer", "local", "a transformers chat model, default the embedded SmolLM2",
                           LocalExplainer, _check_local))
    register(ComponentSpec("explainer", "openai",
                           "any OpenAI-compatible chat endpoint (OPENAI_API_KEY, OPENAI_BASE_URL)",
                           _openai_explainer, _check_openai("OpenAIExplainer", "explainer")))
    register(ComponentSpec("embedder", "sentence-transformers", "all-MiniLM-L6-v2 from its wheel (offline)",
                           SentenceTransformerEmbedder, _check_sentence_transformers))
    register(ComponentSpec("embedder", "openai", "OpenAI embeddings, text-embedding-3-small", _openai_embedder,
                           _check_openai("OpenAIEmbedder", "embedder")))


@hookimpl
def register_commands(register):
    from .command import EXPLAIN

    register(EXPLAIN)
