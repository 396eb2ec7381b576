"""Evaluation harnesses: Children's-Book-Test cloze and toxicity rate, plus the corpora a toxicity
bench needs (the model's own toxic/clean generations offline; Civil Comments online) and the
toxicity classifiers `detoxify` and `profanity` (components of kind "classifier").

    unlearn bench --method selective,random --eval tokens,cloze,toxicity -O cloze.items=80
"""

from __future__ import annotations

from unlearn_core import EvaluationSpec, Figure, hookimpl

from .classifiers import CLASSIFIER_COMPONENTS, load_classifier
from .cloze import ClozeItem, ClozeOptions, build_items, candidate_losses, encode, prepare_cloze, score_items
from .generated import CORPORA, scored_generations
from .toxicity import (
    ToxicityOptions,
    check_toxicity,
    generate,
    measure_toxicity,
    prepare_toxicity,
    toxicity_summary,
)

__all__ = [
    "CLASSIFIER_COMPONENTS", "ClozeItem", "ClozeOptions", "ToxicityOptions", "build_items",
    "candidate_losses", "encode", "generate", "load_classifier", "measure_toxicity", "prepare_cloze",
    "prepare_toxicity", "score_items", "scored_generations", "toxicity_summary",
]


@hookimpl
def register_evaluations(register):
    register(EvaluationSpec(
        "cloze", "CBT-format cloze accuracy per word class (NE, CN, V, P; chance 10%)",
        prepare_cloze, ClozeOptions,
        figures=(Figure(key="accuracy", title="cloze accuracy", higher_is_better=True),)))
    register(EvaluationSpec(
        "toxicity", "share of sampled generations a classifier scores above a threshold, and mean score",
        prepare_toxicity, ToxicityOptions, check=check_toxicity,
        figures=(Figure(key="rate", title="toxicity rate", higher_is_better=False),)))


@hookimpl
def register_components(register):
    for classifier in CLASSIFIER_COMPONENTS:  # kind "classifier": detoxify, profanity
        register(classifier)


@hookimpl
def register_corpora(register):
    for corpus in CORPORA:
        register(corpus)
