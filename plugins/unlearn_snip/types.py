"""Shared types of the SNIP plugin: activation records, explainers and embedders.

An explainer turns a neuron's top-activating contexts into one sentence, lists the concepts a
dataset needs, and rates explanations for relevance. An embedder turns texts into unit vectors.
Both are plugin seams: built-ins register under the names 'openai', 'local', 'tokens' (explainers)
and 'sentence-transformers', 'openai' (embedders).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from torch import Tensor

PROMPT_VERSION = "neuron-explainer-v1"  # bump when a prompt changes: the store keys on it


@dataclass(frozen=True, order=True)
class NeuronId:
    layer: int
    index: int


@dataclass
class ActivationRecord:
    """One context window: its tokens as strings and each token's activation."""

    tokens: list[str]
    activations: list[float]


@dataclass
class NeuronRecords:
    """A neuron's top-activating contexts, highest maximum activation first."""

    neuron: NeuronId
    records: list[ActivationRecord] = field(default_factory=list)

    @property
    def max_activation(self) -> float:
        return max((max(r.activations, default=0.0) for r in self.records), default=0.0)


@runtime_checkable
class Explainer(Protocol):
    name: str

    def explain(self, neurons: Sequence[NeuronRecords]) -> list[str]:
        """One explanation per neuron, in order (the text that follows
        'the main thing this neuron does is find')."""
        ...

    def concepts(self, samples: Sequence[str], n: int) -> list[str]:
        """Up to `n` short concepts a model needs to handle texts like `samples`."""
        ...

    def rate(self, explanations: Sequence[str], topic: str) -> list[float]:
        """Relevance of each explanation to `topic` on a 0-10 scale."""
        ...


@runtime_checkable
class Embedder(Protocol):
    name: str

    def embed(self, texts: Sequence[str]) -> Tensor:
        """float32 [len(texts), d], each row of unit length."""
        ...
