"""The seams a plugin codes against: neuron sites, scorers, pruners and method specs.

Shapes: L = layers of a site, N = neurons per layer, B = batch, T = tokens per window.
A neuron is addressed as (layer, index); scores and masks are [L, N] tensors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

if TYPE_CHECKING:
    from .stats import NeuronStatistics

# Called with a site's activations [B, T, N] (or [B*T, N], as OPT's MLP flattens tokens);
# returning a tensor of the same shape replaces them.
ActivationHook = Callable[[Tensor], "Tensor | None"]


class NeuronSite(ABC):
    """A named set of neurons in every layer (e.g. 'mlp': feed-forward middle neurons).

    A site knows where its activations live and how to delete a neuron from the weights.
    New sites (attention 'value', 'pre-out') implement the same four members.
    """

    name: str
    n_layers: int
    n_neurons: int

    @abstractmethod
    def register_hook(self, layer: int, fn: ActivationHook) -> torch.utils.hooks.RemovableHandle:
        """Call `fn` with this layer's activations [..., N] on every forward."""

    @abstractmethod
    def delete(self, layer: int, neurons: Tensor) -> None:
        """Make `neurons` (int [k]) of `layer` inert by zeroing the weights that carry them."""

    @abstractmethod
    def parameters(self) -> dict[str, nn.Parameter]:
        """Every parameter `delete` may write to, by name: what a snapshot must keep."""

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_layers, self.n_neurons)

    @contextmanager
    def hooks(self, make_hook: Callable[[int], ActivationHook]) -> Iterator[None]:
        """`make_hook(layer)` on every layer for the duration of a `with` block."""
        handles = [self.register_hook(layer, make_hook(layer)) for layer in range(self.n_layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


@dataclass(frozen=True)
class Architecture:
    """Which `config.model_type`s an adapter handles and how to build each of their sites."""

    name: str
    model_types: tuple[str, ...]
    sites: Mapping[str, Callable[[nn.Module], NeuronSite]]


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
    components: Mapping[str, Mapping[str, ComponentSpec]] = field(default_factory=dict)
    bos: bool = False  # every window starts with the tokenizer's BOS token (no corpus information)

    def generator(self) -> torch.Generator:
        """A generator seeded by (seed, step): the same seed gives the same draws."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)

    def statistics(self, corpus: str) -> NeuronStatistics:
        """freq/abs/rms/std of every neuron on 'forget' or 'retain', on the current weights."""
        from .stats import collect_statistics

        windows = {"forget": self.forget_windows, "retain": self.retain_windows}[corpus]
        return collect_statistics(
            self.model, self.site, windows, batch_size=self.batch_size,
            progress=self.progress, desc=f"step {self.step} stats {corpus}", bos=self.bos,
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
class ComponentSpec:
    """A swappable part a method uses (an explainer, an embedder): `build(**options)` makes one."""

    name: str
    description: str
    build: Callable[..., Any]
    check: Callable[..., None] | None = None  # check(**options): cheap validation before models load


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
    # Cross-checks of options against what is installed, e.g. {kind: names}; before any model loads.
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
    windows: Mapping[str, Any] = field(default_factory=dict)  # 'forget'/'retain' -> CorpusWindows

    def texts(self, spec: str) -> Iterable[str]:
        """The texts of corpus `spec`; for the forget or retain corpus, without the documents of its
        statistics windows, so an evaluation never measures text that chose neurons."""
        from .corpora import parse_spec, texts

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
    classifier, ... once, and returns an `Evaluation`."""

    name: str
    description: str
    prepare: Callable[[BaseModel, EvalContext], Evaluation]
    options: type[BaseModel] = NoOptions
