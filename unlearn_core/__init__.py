"""unlearn: compare machine-unlearning-by-pruning methods for language models on one harness."""

from .bench import run_bench
from .config import PRESETS, BenchConfig
from .corpora import CorpusSpec
from .errors import UsageError
from .hookspecs import hookimpl
from .interfaces import (
    Architecture,
    CommandSpec,
    ComponentSpec,
    EvalContext,
    Evaluation,
    EvaluationSpec,
    MethodSpec,
    NeuronSite,
    PruneContext,
    Pruner,
    Scorer,
)
from .plugins import load_plugins

__all__ = [
    "Architecture", "BenchConfig", "CommandSpec", "ComponentSpec", "CorpusSpec", "EvalContext",
    "Evaluation", "EvaluationSpec", "MethodSpec",
    "NeuronSite", "PRESETS", "PruneContext", "Pruner", "Scorer", "UsageError", "hookimpl",
    "load_plugins", "run_bench",
]
