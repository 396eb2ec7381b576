"""The seams a method or evaluation plugin codes against: contexts, scorers, pruners and specs.

Shapes: L = layers of a site, N = neurons per layer, W = windows, T = tokens per window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from .components import ComponentSpec
from .corpora import CorpusWindows, parse_spec, texts
from .records import Figure
from .sites import NeuronSite
from .stats import NeuronStatistics, collect_statistics


@dataclass
class PruneContext:
    """What a scorer or pruner may look at during one pruning step."""

    model: nn.Module
    site: NeuronSite
    forget_windows: Tensor  # long [W, T]: the forget corpus' statistics windows
    retain_windows: Tensor  # long [W, T]: the retain corpus' statistics windows
    pruned: Tensor  # bool [L, N]: neurons deleted by earlier steps
    step: int  # 1-based; 0 while a scorer prepares on the unpruned weights
    seed: int
    batch_size: int = 8
    progress: bool = False
    tokenizer: Any = None
    model_fingerprint: str = ""
    forget_spec: str = ""  # e.g. 'python', as given to --forget
    retain_spec: str = ""
    components: Mapping[str, Mapping[str, ComponentSpec]] = field(default_factory=dict)  # kind -> name -> spec
    bos: bool = False  # every window starts with the tokenizer's BOS token (no corpus information)
    # Masked LMs: the positions that count in each corpus' statistics windows, bool [W, T] (the
    # masked tokens, masking.py); None: every token (a causal LM).
    forget_counted: Tensor | None = None
    retain_counted: Tensor | None = None

    def generator(self) -> torch.Generator:
        """A generator seeded by (seed, step): the same seed gives the same draws."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)

    def statistics(self, corpus: str) -> NeuronStatistics:
        """freq/abs/rms/std of every neuron on 'forget' or 'retain', on the current weights."""
        windows = {"forget": self.forget_windows, "retain": self.retain_windows}[corpus]
        counted = {"forget": self.forget_counted, "retain": self.retain_counted}[corpus]
        return collect_statistics(
            self.model, self.site, windows, batch_size=self.batch_size,
            progress=self.progress, desc=f"step {self.step} stats {corpus}", bos=self.bos,
            counted=counted,
        )


@runtime_checkable
class Scorer(Protocol):
    """Scores every neuron of a site; higher means delete sooner.

    A scorer that computes something once on the unpruned model (explanations, a candidate set)
    does it in an optional `prepare(ctx)`: the bench calls it before step 1 with the original
    weights and `ctx.step == 0`, also when it resumes a run whose earlier steps are already pruned.
    """

    def score(self, ctx: PruneContext) -> Tensor:  # float [L, N]
        ...


@runtime_checkable
class Pruner(Protocol):
    """Chooses `count` neurons from scores and deletes them; returns the new bool [L, N] mask."""

    def prune(self, ctx: PruneContext, scores: Tensor, count: int) -> Tensor:
        ...


@dataclass(frozen=True)
class CommandSpec:
    """An `unlearn NAME` subcommand: `configure` adds arguments to an argparse parser, `run(args)`
    returns the exit status (raise UsageError for bad input)."""

    name: str
    help: str
    configure: Callable[[Any], None]
    run: Callable[[Any], int]


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class MethodSpec:
    """What a plugin registers: a scorer (built from validated options) and a pruner.

    The bench runs every method on the same schedule: `steps` times, delete
    `fraction` of the site's neurons chosen by `pruner` from `scorer`'s scores.
    """

    name: str
    description: str
    scorer: Callable[[BaseModel], Scorer]
    options: type[BaseModel] = NoOptions
    pruner: Callable[[BaseModel], Pruner] | None = None  # None: global top-k
    # Cross-checks of options against the registered components {kind: {name: spec}}; before any model loads.
    check: Callable[[BaseModel, Mapping[str, Mapping[str, ComponentSpec]]], None] | None = None


@dataclass
class EvalContext:
    """What an evaluation harness may use when it prepares (once per bench, before any pruning)."""

    model: nn.Module
    tokenizer: Any
    seed: int
    batch_size: int = 8
    progress: bool = False
    forget_spec: str = ""
    retain_spec: str = ""
    corpora: Mapping[str, Any] = field(default_factory=dict)  # name -> CorpusSpec
    windows: Mapping[str, CorpusWindows] = field(default_factory=dict)  # 'forget'/'retain'
    components: Mapping[str, Mapping[str, ComponentSpec]] = field(default_factory=dict)  # kind -> name -> spec

    def texts(self, spec: str) -> Iterable[str]:
        """The texts of corpus `spec`; for the forget or retain corpus, without the documents of its
        statistics windows, so an evaluation never measures text that chose neurons."""
        for windows in self.windows.values():
            if windows.spec == spec:
                return windows.held_out_texts(self.corpora)
        corpus, argument = parse_spec(spec, self.corpora)
        return texts(corpus.documents(argument, self.seed))


@runtime_checkable
class Evaluation(Protocol):
    """A prepared harness: `evaluate` runs at step 0 and after every pruning step."""

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """JSON-able results, e.g. {"accuracy": 0.61, "per_class": {...}}."""
        ...


@dataclass(frozen=True)
class EvaluationSpec:
    """What an evaluation plugin registers: `prepare(options, ctx)` builds the items, loads a
    classifier, ... once, and returns an `Evaluation`.

    `figures` are its headline numbers: each names a key of the result and which direction is
    better. Records carry them, and the bench table, leaderboard and plots show a column (base and
    final) and a curve for each, with no change to the core."""

    name: str
    description: str
    prepare: Callable[[BaseModel, EvalContext], Evaluation]
    options: type[BaseModel] = NoOptions
    figures: tuple[Figure, ...] = ()
    # Cross-checks of options against what is installed, e.g. {kind: names}; before any model loads.
    check: Callable[[BaseModel, Mapping[str, Mapping[str, ComponentSpec]]], None] | None = None
