"""Swappable parts and the types a third party implements to provide one.

A plugin registers every swappable part the same way, through the `register_components` hook:
`register(ComponentSpec(kind, name, description, build, check))`. The core keeps them in one table,
`Registry.components[kind][name]`, and whoever uses a part builds it by name. Kinds in use:

- "explainer" (SNIP and its baselines): builds an `Explainer`;
- "embedder" (SNIP): builds an `Embedder`;
- "classifier" (the toxicity evaluation and the offline toxic corpus): builds a `Classifier`.

This module imports nothing else of the core, so anything may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@dataclass(frozen=True)
class ComponentSpec:
    """A swappable part of kind `kind` (e.g. "explainer", "embedder", "classifier"):
    `build(**options)` makes one, `check(**options)` validates the options cheaply before any model
    loads (a bad option or a missing key or file raises UsageError)."""

    kind: str
    name: str
    description: str
    build: Callable[..., Any]
    check: Callable[..., None] | None = None


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
    """Turns a neuron's top-activating contexts into one sentence, lists the concepts a dataset
    needs, and rates explanations for relevance (kind "explainer")."""

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
    """Turns texts into unit vectors (kind "embedder")."""

    name: str

    def embed(self, texts: Sequence[str]) -> Tensor:
        """float32 [len(texts), d], each row of unit length."""
        ...


@runtime_checkable
class Classifier(Protocol):
    """Maps texts to probabilities of being toxic in [0, 1] (kind "classifier"). Its component is
    built as `build(device=..., **options)`."""

    name: str

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text is toxic."""
        ...

    def describe(self) -> dict:
        """What a record needs to say which classifier this was."""
        ...
