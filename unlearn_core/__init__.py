"""unlearn: compare machine-unlearning-by-pruning methods for language models on one harness.

This package is the whole public surface a plugin codes against: everything here is stable
between minor versions; the submodules are the core's own business. Kits for a plugin's tests
live in `unlearn_core.testing`.
"""

from .architectures import Architecture, resolve_site
from .bench import Prepared, prepare, run_bench
from .components import (
    ActivationRecord,
    Classifier,
    ComponentSpec,
    Embedder,
    Explainer,
    NeuronId,
    NeuronRecords,
)
from .config import PRESETS, BenchConfig
from .corpora import CorpusSpec, CorpusWindows, Piece, huggingface_documents, parse_spec
from .errors import UsageError, unknown_name
from .hookspecs import hookimpl
from .interfaces import (
    CommandSpec,
    EvalContext,
    Evaluation,
    EvaluationSpec,
    MethodSpec,
    PruneContext,
    Pruner,
    Scorer,
)
from .models import LoadedModel, check_model_spec, load_model
from .plugins import Registry, load_plugins
from .records import Figure, RunRecord, StepRecord, load_record
from .sites import ActivationHook, MLPSite, NeuronSite, mlp_site
from .stats import NeuronStatistics

__all__ = [
    "ActivationHook", "ActivationRecord", "Architecture", "BenchConfig", "Classifier", "CommandSpec",
    "ComponentSpec", "CorpusSpec", "CorpusWindows", "Embedder", "EvalContext", "Evaluation", "EvaluationSpec",
    "Explainer", "Figure", "LoadedModel", "MLPSite", "MethodSpec", "NeuronId", "NeuronRecords", "NeuronSite",
    "NeuronStatistics", "PRESETS", "Piece", "Prepared", "PruneContext", "Pruner", "Registry", "RunRecord",
    "Scorer", "StepRecord", "UsageError", "check_model_spec", "hookimpl",
    "huggingface_documents", "load_model", "load_plugins", "load_record", "mlp_site", "parse_spec", "prepare",
    "resolve_site", "run_bench", "unknown_name",
]
