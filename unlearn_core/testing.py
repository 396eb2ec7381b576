"""Conformance kits for the seams a third party writes: methods, architecture adapters and
evaluations, each checked on randomly initialised tiny models (built from configs: nothing is
downloaded). Each kit has a `check_*` function that raises `ConformanceError` naming what failed and
the check, and a `*_test` function returning a pytest test, for a plugin's own test suite:

    from unlearn_core.testing import architecture_test, conformance_test, evaluation_test

    test_method = conformance_test("mine", options={"power": 2.0})     # one case per architecture
    test_adapter = architecture_test("falcon", {"falcon": ("FalconConfig", {...})})  # per config
    test_eval = evaluation_test("bleu", options={"items": 4})           # on a tiny Llama

Methods (`check_method(method, architecture)`, CHECKS), on a tiny model of every supported family
(`TINY_ARCHITECTURES`):

- options:       the options are a pydantic model that validates the given options, rejects unknown
                 keys and survives a JSON round trip (records store them); `MethodSpec.check` passes
- scores:        `score` returns a floating [L, N] tensor, finite on every neuron not yet deleted,
                 and leaves the weights alone (only the pruner deletes)
- count:         every step deletes exactly the requested number of new neurons and keeps the old ones
- inert:         deleted neurons output exactly zero and the logits do not depend on them
- deterministic: the same seed gives the same scores and the same neurons, run after run

Architecture adapters (`check_architecture(arch, configs)`, ARCHITECTURE_CHECKS), for every site of
the adapter on a tiny model built from each config (in the shape of TINY_CONFIGS; by default the
entries whose model_type the adapter claims):

- model_type:    the model's `config.model_type` is one the adapter claims, and (when the adapter
                 comes from a registry) no other registered adapter claims it too
- builds:        the site factory returns a `NeuronSite` with positive `n_layers` and `n_neurons`
- shape:         the hook sees activations [..., n_neurons] with one row per token, unchanged when
                 it returns None
- once:          `site.hooks` calls the hook of every layer exactly once per forward
- real_path:     a hook that returns a changed tensor changes the logits, in every layer
- unhooked:      after the `with site.hooks(...)` block, a forward gives the unhooked logits
- parameters:    `delete` writes only parameters that `site.parameters()` lists (what snapshots keep)
- silence:       deleting neurons changes the logits exactly as zeroing them with a hook does (the
                 deletion takes nothing else with it)
- inert:         deleted neurons output exactly zero and the logits do not depend on them
- restore:       `restore(site, snapshot(site))` brings every parameter back exactly

Evaluations (`check_evaluation(evaluation, options)`, EVALUATION_CHECKS), prepared on a tiny model
with the tiny tokenizer, forget corpus "python" and retain corpus "shakespeare" (both offline):

- options:       as for methods; the name is usable in `--eval` and `-O NAME.key=value`
- prepare:       `prepare(options, ctx)` returns an object with `evaluate(model)`
- json:          the result is a dict that a JSON round trip gives back unchanged (records store it)
- weights:       prepare and evaluate leave every parameter of the model (and its train/eval mode) alone
- rng:           evaluate leaves the global random state (torch, random, numpy) as it was: an
                 evaluation that samples draws from its own generator
- figures:       every `Figure` the spec declares finds a finite number in the result
- deterministic: evaluating again gives the same result, and so does a second prepare and evaluate
                 on a fresh model with the same seed

Helpers for a plugin's own tests: `tiny_model`, `tiny_tokenizer`, `tiny_windows`, `make_context`,
`make_eval_context`, `tiny_corpus_windows` and `save_tiny` (a model folder `--model` loads).
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from .architectures import Architecture, resolve_site
from .corpora import BUILTIN_CORPORA, CorpusWindows, build_windows
from .interfaces import EvalContext, Evaluation, EvaluationSpec, MethodSpec, PruneContext, Scorer
from .models import fingerprint, is_masked_lm
from .plugins import Registry, load_plugins
from .records import Figure
from .sites import NeuronSite, restore, snapshot
from .topk import GlobalTopK

CHECKS = ("options", "scores", "count", "inert", "deterministic")
ARCHITECTURE_CHECKS = ("model_type", "builds", "shape", "once", "real_path", "unhooked", "parameters",
                       "silence", "inert", "restore")
EVALUATION_CHECKS = ("options", "prepare", "json", "weights", "rng", "figures", "deterministic")
VOCAB = 256
WINDOW = 64  # tokens per statistics window (SNIP-style methods cut probes of up to 64 tokens)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # usable in `--method a,b` and `-O name.key=v`
FORGET, RETAIN = "python", "shakespeare"  # the corpora of every kit's contexts (built in, offline)

# A tiny config: (transformers config class or its name, kwargs). vocab_size is always VOCAB.
TinyConfig = tuple[Any, Mapping[str, Any]]

# name -> tiny config: gated and plain MLPs, with and without biases, nn.Linear and GPT-2's
# transposed Conv1D, OPT's flattened [B*T, N] activations, grouped-query attention (llama: 4 heads
# on 2 kv heads; gemma: on 1), and the masked LMs BERT and RoBERTa.
TINY_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2)),
    "llama-bias": ("LlamaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, mlp_bias=True)),
    "mistral": ("MistralConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2)),
    "gemma": ("GemmaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=8)),
    "gemma2": ("Gemma2Config", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=1, head_dim=8)),
    "gemma3_text": ("Gemma3TextConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=1, head_dim=8)),
    "opt": ("OPTConfig", dict(hidden_size=32, ffn_dim=48, num_hidden_layers=2, num_attention_heads=4,
                              word_embed_proj_dim=32)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4)),
    # Masked LMs: `architectures` naming a *ForMaskedLM class makes them load as one (models.py).
    "bert": ("BertConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, architectures=["BertForMaskedLM"])),
    "roberta": ("RobertaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, architectures=["RobertaForMaskedLM"])),
}
TINY_ARCHITECTURES = tuple(TINY_CONFIGS)


class ConformanceError(AssertionError):
    """A plugin broke a check of its kit; the message names what failed (method and architecture,
    adapter, site and config, or evaluation) and the check."""


def tiny_model(name: str, seed: int = 0, configs: Mapping[str, TinyConfig] | None = None) -> nn.Module:
    """A randomly initialised model of the config `name` in `configs` (default TINY_CONFIGS: 2-layer
    models of every supported family). A config is (transformers config class or its name, kwargs);
    vocab_size is set to VOCAB, max_position_embeddings defaults to 128."""
    import transformers as tf

    configs = TINY_CONFIGS if configs is None else configs
    cls, kwargs = configs[name]
    cls = getattr(tf, cls) if isinstance(cls, str) else cls
    cfg = {**kwargs, "vocab_size": VOCAB}
    if cls is not tf.GPT2Config:
        cfg.setdefault("max_position_embeddings", 128)
    torch.manual_seed(seed)
    config = cls(**cfg)
    model = (tf.AutoModelForMaskedLM if is_masked_lm(config) else tf.AutoModelForCausalLM).from_config(
        config, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)  # large weights and biases, so every bias carries signal
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def save_tiny(folder: Path, name: str = "llama", seed: int = 0, tokenizer: Any = None, *,
              configs: Mapping[str, TinyConfig] | None = None) -> Path:
    """A model folder that `unlearn --model FOLDER` loads like any local model: `tiny_model(name,
    seed, configs)` and the tiny tokenizer (a masked LM: tiny_masked_tokenizer; or `tokenizer`)."""
    folder = Path(folder)
    model = tiny_model(name, seed, configs)
    model.save_pretrained(folder)
    default = tiny_masked_tokenizer() if is_masked_lm(model.config) else tiny_tokenizer()
    (tokenizer or default).save_pretrained(folder)
    return folder


def _model_type(config: TinyConfig) -> str:
    import transformers as tf

    cls = getattr(tf, config[0]) if isinstance(config[0], str) else config[0]
    return cls.model_type


@lru_cache(maxsize=1)
def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with VOCAB ids, trained in milliseconds on two sentences."""
    return _byte_bpe(["<eos>"], eos_token="<eos>", pad_token="<eos>")


@lru_cache(maxsize=1)
def tiny_masked_tokenizer() -> Any:
    """The tiny tokenizer's kind with a mask token, for the tiny masked LMs (BERT, RoBERTa): the same
    VOCAB ids, '<s>' before every text as RoBERTa's tokenizer puts it."""
    from tokenizers import processors

    return _byte_bpe(["<s>", "<pad>", "</s>", "<mask>"], bos_token="<s>", pad_token="<pad>",
                     eos_token="</s>", mask_token="<mask>",
                     post_processor=processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)]))


def _byte_bpe(special_tokens: list[str], post_processor: Any = None, **roles: str) -> Any:
    """A byte-level BPE with VOCAB ids (`special_tokens` first), trained on two sentences; `roles`
    name the special tokens (eos_token=..., mask_token=...)."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "Now, fair Hippolyta, our hour"], trainer=trainer)
    if post_processor is not None:
        tok.post_processor = post_processor
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, **roles)


def tiny_windows(windows: int = 6) -> tuple[Tensor, Tensor]:
    """Forget (Python code) and retain (verse) statistics windows, long [windows, WINDOW] each."""
    forget, retain = _windows(windows)
    return forget.clone(), retain.clone()


def _probe() -> Tensor:
    """A batch of 2 windows of 16 tokens (Python code) for the kits' forwards."""
    return tiny_windows(2)[0][:, :16]


@lru_cache(maxsize=4)
def _windows(windows: int) -> tuple[Tensor, Tensor]:
    tok = tiny_tokenizer()
    code = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(200))
    prose = "".join(f"Now, fair Hippolyta, our nuptial hour {i} draws on apace.\n" for i in range(200))

    def cut(text: str) -> Tensor:
        ids = torch.tensor(tok(text)["input_ids"][: windows * WINDOW], dtype=torch.long)
        return ids.view(windows, WINDOW)

    return cut(code), cut(prose)


def tiny_corpus_windows(seed: int = 0) -> dict[str, CorpusWindows]:
    """The bench's windows of the built-in forget ("python") and retain ("shakespeare") corpora,
    cut with the tiny tokenizer: 4 statistics and 2 evaluation windows of WINDOW tokens each."""
    return {role: replace(w, stats=w.stats.clone(), eval=w.eval.clone())
            for role, w in _corpus_windows(seed).items()}


@lru_cache(maxsize=2)
def _corpus_windows(seed: int) -> dict[str, CorpusWindows]:
    corpora = {c.name: c for c in BUILTIN_CORPORA}
    return {role: build_windows(spec, corpora, tiny_tokenizer(), stats_tokens=4 * WINDOW,
                                eval_tokens=2 * WINDOW, window=WINDOW, seed=seed)
            for role, spec in (("forget", FORGET), ("retain", RETAIN))}


@dataclass
class Trial:
    """One run of a method on a fresh tiny model: the scores and the mask after every step."""

    scores: list[Tensor] = field(default_factory=list)
    masks: list[Tensor] = field(default_factory=list)


def _resolve(kind: str, name: str, registry: Registry) -> Any:
    """The `kind` (e.g. "methods") registered as `name`, or a ConformanceError saying why not."""
    table = getattr(registry, kind)
    if name not in table:
        failed = "; ".join(f"{n}: {e}" for n, e in registry.failed.items()) or "none"
        raise ConformanceError(f"{kind[:-1]} '{name}' is not registered (failed plugins: {failed}); "
                               f"registered: {', '.join(sorted(table)) or 'none'}")
    owner = registry.owner[(kind, name)]
    if owner in registry.failed:
        raise ConformanceError(f"plugin '{owner}' of {kind[:-1]} '{name}' failed: {registry.failed[owner]}")
    return table[name]


def resolve_method(method: str | MethodSpec, registry: Registry | None = None) -> tuple[MethodSpec, Registry]:
    """The spec of a registered method (loaded through its entry point, as the bench loads it)."""
    registry = registry or load_plugins()
    if isinstance(method, MethodSpec):
        return method, registry
    return _resolve("methods", method, registry), registry


def resolve_evaluation(evaluation: str | EvaluationSpec,
                       registry: Registry | None = None) -> tuple[EvaluationSpec, Registry]:
    """The spec of a registered evaluation (loaded through its entry point, as the bench loads it)."""
    registry = registry or load_plugins()
    if isinstance(evaluation, EvaluationSpec):
        return evaluation, registry
    return _resolve("evaluations", evaluation, registry), registry


def resolve_architecture(arch: str | Architecture,
                         registry: Registry | None = None) -> tuple[Architecture, Registry | None]:
    """A registered architecture adapter by name (the registry: `registry` or the installed plugins),
    or `arch` itself with `registry` as given (None: no registry to check against)."""
    if isinstance(arch, Architecture):
        return arch, registry
    registry = registry or load_plugins()
    return _resolve("architectures", arch, registry), registry


def check_options(method: str | MethodSpec, options: Mapping[str, Any] | None = None,
                  registry: Registry | None = None) -> BaseModel:
    """The options validate, reject unknown keys and round-trip through JSON; returns them validated."""
    spec, registry = resolve_method(method, registry)
    validated = _check_options(spec.name, spec.name, spec.description, spec.options, options, "method")
    if spec.check is not None:
        spec.check(validated, registry.components)
    return validated


def _check_options(label: str, name: str, description: str, model: Any, options: Mapping[str, Any] | None,
                   kind: str) -> BaseModel:
    """`label` starts every message (e.g. "mine" or "evaluation 'mine'"); `kind` is "method" or
    "evaluation"."""
    where = f"{label}: options"
    article = "an" if kind[0] in "aeiou" else "a"
    _require(bool(NAME.match(name)), f"{name!r}: {article} {kind} name must match {NAME.pattern} (it is "
             "used in comma lists on the command line and in -O NAME.key=value)")
    _require(bool(description.strip()), f"{label}: the description is empty")
    _require(isinstance(model, type) and issubclass(model, BaseModel),
             f"{where}: {kind.capitalize()}Spec.options must be a pydantic BaseModel subclass")
    try:
        validated = model(**dict(options or {}))
    except ValidationError as e:
        raise ConformanceError(f"{where}: {dict(options or {})} do not validate: {e.errors()[0]['msg']}") from e
    try:
        model(**dict(options or {}), conformance_typo=1)
    except ValidationError:
        pass
    else:
        raise ConformanceError(f"{where}: an unknown key is accepted; set model_config = "
                               "ConfigDict(extra='forbid') so that a typo in -O fails loudly")
    dumped = json.loads(json.dumps(validated.model_dump(mode="json")))
    _require(model(**dumped) == validated, f"{where}: model_dump(mode='json') does not validate "
             "back to the same options (records store them as JSON)")
    return validated


def make_context(model: nn.Module, site: NeuronSite, registry: Registry, *, pruned: Tensor | None = None,
                 step: int = 1, seed: int = 0) -> PruneContext:
    """A PruneContext like the bench's, on the tiny forget/retain windows."""
    forget, retain = tiny_windows()
    return PruneContext(model, site, forget, retain,
                        pruned if pruned is not None else torch.zeros(site.shape, dtype=torch.bool),
                        step=step, seed=seed, batch_size=4, tokenizer=tiny_tokenizer(),
                        model_fingerprint=fingerprint(model), forget_spec=FORGET,
                        retain_spec=RETAIN, components=registry.components)


def run_trial(spec: MethodSpec, options: BaseModel, architecture: str, registry: Registry, *,
              seed: int = 0, steps: int = 2, fraction: float = 0.1, site_name: str = "mlp",
              global_seed: int = 1) -> Trial:
    """Score and prune `steps` times on a fresh tiny model, checking scores and counts on the way.

    `global_seed` seeds torch's global generator: trials that differ only in it must agree, so a
    method that draws from it instead of `ctx.generator()` is caught (its results would depend on
    which methods ran before it in the bench).
    """
    model = tiny_model(architecture)
    torch.manual_seed(global_seed)
    site = resolve_site(model, site_name, registry.architectures)
    count = max(1, round(fraction * site.n_layers * site.n_neurons))
    scorer = spec.scorer(options)
    pruner = spec.pruner(options) if spec.pruner is not None else GlobalTopK()
    _require(isinstance(scorer, Scorer), f"{spec.name}: scores: the scorer has no score(ctx) method")
    trial, pruned = Trial(), torch.zeros(site.shape, dtype=torch.bool)
    for step in range(1, steps + 1):
        ctx = make_context(model, site, registry, pruned=pruned.clone(), step=step, seed=seed)
        before = snapshot(site)
        scores = scorer.score(ctx)
        _check_scores(spec.name, scores, site, pruned, before)
        new = pruner.prune(ctx, scores, count)
        _check_count(spec.name, step, new, pruned, count, site)
        trial.scores.append(scores.detach().cpu().clone())
        trial.masks.append(new.detach().cpu().clone())
        pruned = new.detach().cpu().clone()
    if hasattr(scorer, "info"):
        try:
            json.dumps(scorer.info())
        except TypeError as e:
            raise ConformanceError(f"{spec.name}: scores: info() is not JSON-able: {e}") from None
    _check_inert(f"{spec.name}: inert", model, site, pruned)
    return trial


def _check_scores(name: str, scores: Any, site: NeuronSite, pruned: Tensor, before: dict[str, Tensor]) -> None:
    where = f"{name}: scores"
    _require(isinstance(scores, Tensor), f"{where}: score() returned {type(scores).__name__}, not a Tensor")
    _require(tuple(scores.shape) == site.shape,
             f"{where}: shape {tuple(scores.shape)}, the site has {site.shape} (layers, neurons)")
    _require(scores.is_floating_point(), f"{where}: dtype {scores.dtype} is not floating point")
    alive = ~pruned.to(scores.device)
    _require(bool(torch.isfinite(scores[alive]).all()), f"{where}: not finite on neurons not yet deleted")
    for pname, p in site.parameters().items():
        _require(torch.equal(p.detach(), before[pname]),
                 f"{where}: score() changed {pname}; only the pruner may delete neurons")


def _check_count(name: str, step: int, new: Any, old: Tensor, count: int, site: NeuronSite) -> None:
    where = f"{name}: count (step {step})"
    _require(isinstance(new, Tensor) and new.dtype == torch.bool and tuple(new.shape) == site.shape,
             f"{where}: prune() must return a bool {site.shape} mask")
    new = new.cpu()
    _require(bool(new[old].all()), f"{where}: neurons deleted by earlier steps are missing from the mask")
    added = int((new & ~old).sum())
    _require(added == count, f"{where}: deleted {added} new neurons, {count} were requested")


@torch.no_grad()
def _check_inert(where: str, model: nn.Module, site: NeuronSite, pruned: Tensor) -> None:
    """Deleted neurons output zero (where the site says so: `silent_after_delete`), and replacing
    their output with noise changes no logit."""
    ids = _probe()
    seen: list[Tensor] = []

    def record(layer: int) -> Callable[[Tensor], None]:
        return lambda a: seen.append(a[..., pruned[layer].to(a.device)].detach().clone())

    with site.hooks(record):
        logits = model(ids).logits
    if getattr(site, "silent_after_delete", True):
        _require(all(bool((a == 0).all()) for a in seen), f"{where}: a deleted neuron still activates")

    g = torch.Generator().manual_seed(0)

    def noise(layer: int) -> Callable[[Tensor], Tensor]:
        def fn(a: Tensor) -> Tensor:
            a = a.clone()
            idx = pruned[layer].to(a.device)
            a[..., idx] = 10 * torch.randn(a[..., idx].shape, generator=g).to(a)
            return a
        return fn

    with site.hooks(noise):
        noisy = model(ids).logits
    _require(torch.allclose(logits, noisy, rtol=1e-5, atol=1e-5),
             f"{where}: the logits depend on deleted neurons (max change "
             f"{(logits - noisy).abs().max().item():.3g}); delete them with site.delete(layer, idx)")


def check_method(method: str | MethodSpec, architecture: str, options: Mapping[str, Any] | None = None,
                 registry: Registry | None = None, *, seed: int = 0, steps: int = 2, site: str = "mlp") -> None:
    """Every check in CHECKS on one tiny architecture and `site` (default 'mlp'); raises
    ConformanceError on the first failure."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on tiny models, handing work to other threads costs more than the math
    try:
        _check_method(method, architecture, options, registry, seed=seed, steps=steps, site=site)
    finally:
        torch.set_num_threads(threads)


def _check_method(method: str | MethodSpec, architecture: str, options: Mapping[str, Any] | None,
                  registry: Registry | None, *, seed: int, steps: int, site: str) -> None:
    spec, registry = resolve_method(method, registry)
    validated = check_options(spec, options, registry)
    first = run_trial(spec, validated, architecture, registry, seed=seed, steps=steps, global_seed=1,
                      site_name=site)
    again = run_trial(spec, spec.options(**dict(options or {})), architecture, registry, seed=seed,
                      steps=steps, global_seed=2, site_name=site)
    for step, (a, b) in enumerate(zip(first.scores, again.scores, strict=True), start=1):
        _require(torch.equal(a, b), f"{spec.name}: deterministic: step {step} scores differ between two "
                 "runs with the same seed (draw randomness from ctx.generator())")
    for step, (a, b) in enumerate(zip(first.masks, again.masks, strict=True), start=1):
        _require(torch.equal(a, b), f"{spec.name}: deterministic: step {step} deleted other neurons in a "
                 "second run with the same seed")


def conformance_test(method: str | MethodSpec,
                     options: Mapping[str, Any] | Callable[[Path], Mapping[str, Any]] | None = None,
                     architectures: tuple[str, ...] = TINY_ARCHITECTURES,
                     registry: Callable[[], Registry] | None = None) -> Callable[..., None]:
    """A pytest test, one case per architecture. `options` may be a function of pytest's tmp_path
    (for options that are paths); `registry` a function returning the registry to use."""
    import pytest

    @pytest.mark.parametrize("architecture", architectures)
    def test(architecture: str, tmp_path: Path) -> None:
        given = options(tmp_path) if callable(options) else options
        check_method(method, architecture, given, registry() if registry else None)

    test.__doc__ = f"{getattr(method, 'name', method)} passes the unlearn conformance checks."
    return test


# Architecture adapters ------------------------------------------------------------------------

def check_architecture(arch: str | Architecture, configs: Mapping[str, TinyConfig] | None = None,
                       registry: Registry | None = None, *, seed: int = 0) -> None:
    """Every check in ARCHITECTURE_CHECKS, for every site of `arch` on a tiny model of every config.

    `arch` is an Architecture, or the name of one in `registry` (default: the installed plugins,
    so the check also proves the registration). `configs`: name -> (config class or its name in
    transformers, kwargs), as TINY_CONFIGS; default: the TINY_CONFIGS entries whose model_type
    `arch` claims. Raises ConformanceError naming architecture, site, config and check.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        arch, registry = resolve_architecture(arch, registry)
        configs = architecture_configs(arch) if configs is None else configs
        _require(bool(configs), f"architecture '{arch.name}': no tiny config of its model types "
                 f"({', '.join(arch.model_types)}) in TINY_CONFIGS; pass configs={{name: (config class, "
                 "kwargs)}}")
        _require(bool(arch.sites), f"architecture '{arch.name}': builds: it has no sites")
        for config in configs:
            for site_name in arch.sites:
                _check_site(arch, site_name, config, configs, registry, seed)
    finally:
        torch.set_num_threads(threads)


def architecture_configs(arch: Architecture) -> dict[str, tuple[str, dict[str, Any]]]:
    """The TINY_CONFIGS entries of a model type `arch` claims."""
    return {name: c for name, c in TINY_CONFIGS.items() if _model_type(c) in arch.model_types}


@contextmanager
def _checking(where: str) -> Iterator[None]:
    """Turns an exception raised by the code under test into a ConformanceError naming the check."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as e:
        raise ConformanceError(f"{where}: raised {type(e).__name__}: {e}") from e


@torch.no_grad()
def _check_site(arch: Architecture, site_name: str, config: str, configs: Mapping[str, TinyConfig],
                registry: Registry | None, seed: int) -> None:
    def where(check: str) -> str:
        return f"architecture '{arch.name}', site '{site_name}', config '{config}': {check}"

    with _checking(where("builds")):
        model = tiny_model(config, seed, configs)
    model_type = getattr(model.config, "model_type", None)
    _require(model_type in arch.model_types, f"{where('model_type')}: the model's config.model_type "
             f"is '{model_type}', the architecture claims {', '.join(arch.model_types)}")
    if registry is not None:
        others = sorted(a.name for a in registry.architectures.values()
                        if model_type in a.model_types and a.name != arch.name)
        _require(not others, f"{where('model_type')}: '{model_type}' is also claimed by the registered "
                 f"architecture(s) {', '.join(others)}; a model type belongs to one adapter")

    with _checking(where("builds")):
        site = arch.sites[site_name](model)
    _require(isinstance(site, NeuronSite), f"{where('builds')}: the factory returned "
             f"{type(site).__name__}, not a NeuronSite")
    shape = (getattr(site, "n_layers", None), getattr(site, "n_neurons", None))
    _require(all(isinstance(n, int) and n > 0 for n in shape),
             f"{where('builds')}: n_layers and n_neurons must be positive ints, got {shape}")
    ids = _probe()
    tokens = ids.numel()
    with _checking(where("builds")):
        base = model(ids).logits

    # shape, once: what the hooks see, and how often
    seen: dict[int, list[tuple[int, ...]]] = {layer: [] for layer in range(site.n_layers)}

    def record(layer: int) -> Callable[[Tensor], None]:
        return lambda a: seen[layer].append(tuple(a.shape))

    with _checking(where("shape")):
        with site.hooks(record):
            watched = model(ids).logits
    for layer, shapes in seen.items():
        _require(len(shapes) == 1, f"{where('once')}: the hook of layer {layer} was called {len(shapes)} "
                 "times in one forward (it must be called once per layer per forward)")
        a = shapes[0]
        _require(a[-1] == site.n_neurons, f"{where('shape')}: the hook of layer {layer} sees activations "
                 f"{a}, the site says n_neurons={site.n_neurons} (the last dim)")
        _require(math.prod(a[:-1]) == tokens, f"{where('shape')}: the hook of layer {layer} sees "
                 f"activations {a}: {math.prod(a[:-1])} rows for {tokens} tokens ([B, T, N] or [B*T, N])")
    _require(torch.equal(watched, base), f"{where('shape')}: a hook returning None changed the logits")
    _require(torch.equal(model(ids).logits, base), f"{where('unhooked')}: after the `with site.hooks(...)` "
             "block the logits differ from the unhooked ones (a hook was not removed)")

    # real_path: a changed activation changes the logits, in every layer
    g = torch.Generator().manual_seed(seed)
    for layer in range(site.n_layers):
        with _checking(where("real_path")):
            with site.hooks(_shift(layer, g)):
                shifted = model(ids).logits
        _require(not torch.allclose(shifted, base, rtol=1e-5, atol=1e-5),
                 f"{where('real_path')}: a hook of layer {layer} returning changed activations does not "
                 "change the logits: the hook is not on the path from the neurons to the logits")
    _require(torch.equal(model(ids).logits, base), f"{where('unhooked')}: after the `with site.hooks(...)` "
             "block the logits differ from the unhooked ones (a hook was not removed)")

    # Neurons to delete: a quarter of every layer, by a seeded generator.
    k = max(1, site.n_neurons // 4)
    mask = torch.zeros(site.shape, dtype=torch.bool)
    for layer in range(site.n_layers):
        mask[layer, torch.randperm(site.n_neurons, generator=g)[:k]] = True

    def silence(layer: int) -> Callable[[Tensor], Tensor]:
        def fn(a: Tensor) -> Tensor:
            a = a.clone()
            a[..., mask[layer].to(a.device)] = 0
            return a
        return fn

    with _checking(where("silence")):
        with site.hooks(silence):
            silenced = model(ids).logits

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with _checking(where("restore")):
        saved = snapshot(site)
    with _checking(where("parameters")):
        for layer in range(site.n_layers):
            site.delete(layer, mask[layer].nonzero().flatten())
        listed = {id(p) for p in site.parameters().values()}
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    unlisted = [name for name, p in model.named_parameters() if name in changed and id(p) not in listed]
    _require(not unlisted, f"{where('parameters')}: delete() wrote {', '.join(unlisted)}, which "
             "site.parameters() does not list (a snapshot would not restore it)")
    deleted = model(ids).logits
    _require(torch.allclose(deleted, silenced, rtol=1e-4, atol=1e-4),
             f"{where('silence')}: deleting neurons changes the logits otherwise than zeroing their "
             f"activations with a hook (max difference {(deleted - silenced).abs().max().item():.3g}): "
             "delete() takes more than those neurons with it, or leaves some of them")
    _check_inert(where("inert"), model, site, mask)

    with _checking(where("restore")):
        restore(site, saved)
    differ = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    _require(not differ, f"{where('restore')}: after restore(site, snapshot(site)) these parameters "
             f"differ from the originals: {', '.join(differ)}")
    _require(torch.equal(model(ids).logits, base), f"{where('restore')}: the restored model's logits "
             "differ from the original ones")


def _shift(target: int, g: torch.Generator) -> Callable[[int], Callable[[Tensor], Tensor | None]]:
    """Hooks adding noise to the activations of layer `target` only."""
    def make(layer: int) -> Callable[[Tensor], Tensor | None]:
        def fn(a: Tensor) -> Tensor | None:
            return a + torch.randn(a.shape, generator=g).to(a) if layer == target else None
        return fn
    return make


def architecture_test(arch: str | Architecture, configs: Mapping[str, TinyConfig] | None = None,
                      registry: Callable[[], Registry] | None = None) -> Callable[..., None]:
    """A pytest test, one case per config (default: the TINY_CONFIGS entries of the model types
    `arch` claims; naming the architecture then loads the registry when the test is collected).
    `registry` is a function returning the registry to use."""
    import pytest

    if configs is None:
        found, _ = resolve_architecture(arch, registry() if registry else None)
        configs = architecture_configs(found)

    @pytest.mark.parametrize("config", list(configs))
    def test(config: str) -> None:
        check_architecture(arch, {config: configs[config]}, registry() if registry else None)

    test.__doc__ = f"architecture {getattr(arch, 'name', arch)} passes the unlearn conformance checks."
    return test


# Evaluations ----------------------------------------------------------------------------------

def make_eval_context(model: nn.Module, registry: Registry, *, seed: int = 0) -> EvalContext:
    """An EvalContext like the bench's: the tiny tokenizer, forget "python" and retain "shakespeare"
    with their tiny windows (`tiny_corpus_windows`), the registry's corpora and components."""
    return EvalContext(model, tiny_tokenizer(), seed, batch_size=4, forget_spec=FORGET, retain_spec=RETAIN,
                       corpora=registry.corpora, windows=tiny_corpus_windows(seed),
                       components=registry.components)


def check_evaluation(evaluation: str | EvaluationSpec, options: Mapping[str, Any] | None = None,
                     registry: Registry | None = None, architecture: str = "llama", *,
                     seed: int = 0) -> dict[str, Any]:
    """Every check in EVALUATION_CHECKS on a tiny model of `architecture` (a TINY_CONFIGS key);
    raises ConformanceError naming the evaluation and the check; returns the result. The global
    random state is the same after the check as before it."""
    threads = torch.get_num_threads()
    state = _rng_state()
    torch.set_num_threads(1)
    try:
        return _check_evaluation(evaluation, options, registry, architecture, seed)
    finally:
        _set_rng_state(state)
        torch.set_num_threads(threads)


def _check_evaluation(evaluation: str | EvaluationSpec, options: Mapping[str, Any] | None,
                      registry: Registry | None, architecture: str, seed: int) -> dict[str, Any]:
    spec, registry = resolve_evaluation(evaluation, registry)

    def where(check: str) -> str:
        return f"evaluation '{spec.name}': {check}"

    _require(spec.name != "tokens", f"{where('options')}: 'tokens' is the bench's own evaluation")
    validated = _check_options(f"evaluation '{spec.name}'", spec.name, spec.description, spec.options,
                               options, "evaluation")
    if spec.check is not None:
        spec.check(validated, registry.components)
    figures = tuple(spec.figures)
    for f in figures:
        _require(isinstance(f, Figure), f"{where('figures')}: {f!r} is not a unlearn_core Figure")

    def run(global_seed: int) -> tuple[Any, nn.Module, dict[str, Any]]:
        _seed_globals(global_seed)  # runs that differ only in the global seed must agree
        model = tiny_model(architecture, seed)
        params = {name: p.detach().clone() for name, p in model.named_parameters()}
        with _checking(where("prepare")):
            harness = spec.prepare(spec.options(**validated.model_dump()), make_eval_context(model, registry,
                                                                                             seed=seed))
        _require(isinstance(harness, Evaluation) and callable(harness.evaluate),
                 f"{where('prepare')}: prepare() returned {type(harness).__name__}, which has no "
                 "evaluate(model)")
        _check_weights(where("weights"), "prepare", model, params)
        return harness, model, params

    harness, model, params = run(1)
    result = _evaluate(where, harness, model, params)
    try:
        text = json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConformanceError(f"{where('json')}: the result is not JSON-able: {e}") from None
    _require(isinstance(result, dict), f"{where('json')}: evaluate() returned {type(result).__name__}, "
             "not a dict")
    _require(json.loads(text) == result, f"{where('json')}: a JSON round trip changes the result "
             "(tuples become lists, non-string keys strings): records would not hold what it returned")
    for f in figures:
        value = f.value(result)
        _require(value is not None and math.isfinite(value), f"{where('figures')}: figure '{f.title}' "
                 f"finds no finite number under key '{f.key}' of the result (got {value!r})")
    again = _evaluate(where, harness, model, params)
    _require(_canonical(again) == _canonical(result), f"{where('deterministic')}: evaluating the same "
             "weights again gives another result (the bench evaluates the unpruned model once for all "
             "methods: evaluate must not carry state from call to call)")
    harness, model, params = run(2)
    fresh = _evaluate(where, harness, model, params)
    _require(_canonical(fresh) == _canonical(result), f"{where('deterministic')}: a second prepare and "
             "evaluate with the same seed on a fresh model gives another result (seed your own "
             "generators from ctx.seed)")
    return result


def _evaluate(where: Callable[[str], str], harness: Any, model: nn.Module,
              params: dict[str, Tensor]) -> Any:
    training = model.training
    state = _rng_state()
    with _checking(where("evaluate")):
        result = harness.evaluate(model)
    changed = _rng_changed(state, _rng_state())
    _require(not changed, f"{where('rng')}: evaluate() changed the global random state of "
             f"{', '.join(changed)}; draw from a generator of your own (torch.Generator, "
             "random.Random, numpy.random.default_rng) seeded from ctx.seed")
    _check_weights(where("weights"), "evaluate", model, params)
    _require(model.training == training, f"{where('weights')}: evaluate() left the model in "
             f"{'train' if model.training else 'eval'} mode")
    return result


def _check_weights(where: str, stage: str, model: nn.Module, params: dict[str, Tensor]) -> None:
    changed = [name for name, p in model.named_parameters() if not torch.equal(p.detach(), params[name])]
    _require(not changed, f"{where}: {stage}() changed the model's parameters {', '.join(changed[:3])}"
             f"{' ...' if len(changed) > 3 else ''}")


def _canonical(result: Any) -> str:
    return json.dumps(result, sort_keys=True, default=repr)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "random": random.getstate()}
    np = _numpy()
    if np is not None:
        state["numpy"] = np.random.get_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    if "numpy" in state:
        _numpy().random.set_state(state["numpy"])


def _seed_globals(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np = _numpy()
    if np is not None:
        np.random.seed(seed)


def _rng_changed(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    changed = []
    if not torch.equal(a["torch"], b["torch"]):
        changed.append("torch")
    if a["random"] != b["random"]:
        changed.append("random")
    if "numpy" in a:
        (kind_a, keys_a, *rest_a), (kind_b, keys_b, *rest_b) = a["numpy"], b["numpy"]
        if kind_a != kind_b or not (keys_a == keys_b).all() or rest_a != rest_b:
            changed.append("numpy")
    return changed


def evaluation_test(evaluation: str | EvaluationSpec,
                    options: Mapping[str, Any] | Callable[[Path], Mapping[str, Any]] | None = None,
                    architectures: tuple[str, ...] = ("llama",),
                    registry: Callable[[], Registry] | None = None) -> Callable[..., None]:
    """A pytest test, one case per architecture (a TINY_CONFIGS key). `options` may be a function of
    pytest's tmp_path; `registry` a function returning the registry to use."""
    import pytest

    @pytest.mark.parametrize("architecture", architectures)
    def test(architecture: str, tmp_path: Path) -> None:
        given = options(tmp_path) if callable(options) else options
        check_evaluation(evaluation, given, registry() if registry else None, architecture)

    name = getattr(evaluation, "name", evaluation)
    test.__doc__ = f"evaluation {name} passes the unlearn conformance checks."
    return test


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConformanceError(message)
