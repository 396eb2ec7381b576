"""unlearn: compare machine-unlearning-by-pruning methods for language models on one harness.

This package is the whole public surface a plugin codes against: everything here is stable
between minor versions; the submodules are the core's own business. Kits for a plugin's tests
live in `unlearn_core.testing`.
"""

from .architectures import Architecture, check_site_name, resolve_site
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
from .errors import UsageError, safe_name, unknown_name
from .hookspecs import hookimpl
from .hub import hub_cached, hub_offline
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
from .models import LoadedModel, check_device, check_model_spec, load_model
from .plugins import Registry, load_plugins
from .records import Figure, RunRecord, StepRecord, load_record, loads_json
from .redact import REDACTED, is_secret_name, mask, redact, redact_url, secrets_in
from .sites import ActivationHook, Heads, HeadSite, MLPSite, NeuronSite, ValueSite, attention_sites, mlp_site
from .stats import NeuronStatistics

__all__ = [
    "ActivationHook", "ActivationRecord", "Architecture", "BenchConfig", "Classifier", "CommandSpec",
    "ComponentSpec", "CorpusSpec", "CorpusWindows", "Embedder", "EvalContext", "Evaluation",
    "EvaluationSpec", "Explainer", "Figure", "HeadSite", "Heads", "LoadedModel", "MLPSite", "MethodSpec",
    "NeuronId", "NeuronRecords", "NeuronSite", "NeuronStatistics", "PRESETS", "Piece", "Prepared",
    "PruneContext", "Pruner", "REDACTED", "Registry", "RunRecord", "Scorer", "StepRecord", "UsageError",
    "ValueSite", "attention_sites", "check_device", "check_model_spec", "check_site_name", "hookimpl",
    "hub_cached", "hub_offline", "huggingface_documents", "is_secret_name", "load_model", "load_plugins",
    "load_record", "loads_json", "mask", "mlp_site", "parse_spec", "prepare", "redact", "redact_url",
    "resolve_site", "run_bench", "safe_name", "secrets_in", "unknown_name",
]
