"""A conformance kit for method plugins: the checks every method must pass, on tiny models.

A plugin author runs it from their own test suite (pytest collects the returned test, one case per
architecture):

    from unlearn_core.testing import conformance_test

    test_conformance = conformance_test("mine", options={"power": 2.0})

or calls it directly: `check_method("mine", "llama")` raises `ConformanceError` naming the failed
check. The checks, run on a randomly initialised tiny model of every supported architecture
(`TINY_ARCHITECTURES`, built from configs: nothing is downloaded):

- options:       the options are a pydantic model that validates the given options, rejects unknown
                 keys and survives a JSON round trip (records store them); `MethodSpec.check` passes
- scores:        `score` returns a floating [L, N] tensor, finite on every neuron not yet deleted,
                 and leaves the weights alone (only the pruner deletes)
- count:         every step deletes exactly the requested number of new neurons and keeps the old ones
- inert:         deleted neurons output exactly zero and the logits do not depend on them
- deterministic: the same seed gives the same scores and the same neurons, run after run
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor, nn

from .architectures import resolve_site
from .interfaces import MethodSpec, PruneContext, Scorer
from .models import fingerprint
from .plugins import Registry, load_plugins
from .sites import NeuronSite, snapshot
from .topk import GlobalTopK

CHECKS = ("options", "scores", "count", "inert", "deterministic")
VOCAB = 256
WINDOW = 64  # tokens per statistics window (SNIP-style methods cut probes of up to 64 tokens)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # usable in `--method a,b` and `-O name.key=v`

# name -> (transformers config class, kwargs): gated and plain MLPs, with and without biases,
# nn.Linear and GPT-2's transposed Conv1D, and OPT's flattened [B*T, N] activations.
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
}
TINY_ARCHITECTURES = tuple(TINY_CONFIGS)


class ConformanceError(AssertionError):
    """A method broke one of the CHECKS; the message names the method, architecture and check."""


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    """A randomly initialised 2-layer model of the family `name` (a key of TINY_CONFIGS)."""
    import transformers as tf

    cls_name, kwargs = TINY_CONFIGS[name]
    cfg = dict(vocab_size=VOCAB, **kwargs)
    if cls_name != "GPT2Config":
        cfg["max_position_embeddings"] = 128
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(getattr(tf, cls_name)(**cfg), dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)  # large weights and biases, so every bias carries signal
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


@lru_cache(maxsize=1)
def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with VOCAB ids, trained in milliseconds on two sentences."""
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "Now, fair Hippolyta, our hour"], trainer=trainer)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def tiny_windows(windows: int = 6) -> tuple[Tensor, Tensor]:
    """Forget (Python code) and retain (verse) statistics windows, long [windows, WINDOW] each."""
    forget, retain = _windows(windows)
    return forget.clone(), retain.clone()


@lru_cache(maxsize=4)
def _windows(windows: int) -> tuple[Tensor, Tensor]:
    tok = tiny_tokenizer()
    code = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(200))
    prose = "".join(f"Now, fair Hippolyta, our nuptial hour {i} draws on apace.\n" for i in range(200))

    def cut(text: str) -> Tensor:
        ids = torch.tensor(tok(text)["input_ids"][: windows * WINDOW], dtype=torch.long)
        return ids.view(windows, WINDOW)

    return cut(code), cut(prose)


@dataclass
class Trial:
    """One run of a method on a fresh tiny model: the scores and the mask after every step."""

    scores: list[Tensor] = field(default_factory=list)
    masks: list[Tensor] = field(default_factory=list)


def resolve_method(method: str | MethodSpec, registry: Registry | None = None) -> tuple[MethodSpec, Registry]:
    """The spec of a registered method (loaded through its entry point, as the bench loads it)."""
    registry = registry or load_plugins()
    if isinstance(method, MethodSpec):
        return method, registry
    if method not in registry.methods:
        failed = "; ".join(f"{n}: {e}" for n, e in registry.failed.items()) or "none"
        raise ConformanceError(f"method '{method}' is not registered (failed plugins: {failed}); "
                               f"registered: {', '.join(sorted(registry.methods))}")
    owner = registry.owner[("methods", method)]
    if owner in registry.failed:
        raise ConformanceError(f"plugin '{owner}' of method '{method}' failed: {registry.failed[owner]}")
    return registry.methods[method], registry


def check_options(method: str | MethodSpec, options: Mapping[str, Any] | None = None,
                  registry: Registry | None = None) -> BaseModel:
    """The options validate, reject unknown keys and round-trip through JSON; returns them validated."""
    spec, registry = resolve_method(method, registry)
    where = f"{spec.name}: options"
    _require(bool(NAME.match(spec.name)), f"{spec.name!r}: a method name must match {NAME.pattern}")
    _require(bool(spec.description.strip()), f"{spec.name}: the description is empty")
    _require(isinstance(spec.options, type) and issubclass(spec.options, BaseModel),
             f"{where}: MethodSpec.options must be a pydantic BaseModel subclass")
    try:
        validated = spec.options(**dict(options or {}))
    except ValidationError as e:
        raise ConformanceError(f"{where}: {dict(options or {})} do not validate: {e.errors()[0]['msg']}") from e
    try:
        spec.options(**dict(options or {}), conformance_typo=1)
    except ValidationError:
        pass
    else:
        raise ConformanceError(f"{where}: an unknown key is accepted; set model_config = "
                               "ConfigDict(extra='forbid') so that a typo in -O fails loudly")
    dumped = json.loads(json.dumps(validated.model_dump(mode="json")))
    _require(spec.options(**dumped) == validated, f"{where}: model_dump(mode='json') does not validate "
             "back to the same options (records store them as JSON)")
    if spec.check is not None:
        spec.check(validated, registry.components)
    return validated


def make_context(model: nn.Module, site: NeuronSite, registry: Registry, *, pruned: Tensor | None = None,
                 step: int = 1, seed: int = 0) -> PruneContext:
    """A PruneContext like the bench's, on the tiny forget/retain windows."""
    forget, retain = tiny_windows()
    return PruneContext(model, site, forget, retain,
                        pruned if pruned is not None else torch.zeros(site.shape, dtype=torch.bool),
                        step=step, seed=seed, batch_size=4, tokenizer=tiny_tokenizer(),
                        model_fingerprint=fingerprint(model), forget_spec="python",
                        retain_spec="shakespeare", components=registry.components)


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
    _check_inert(spec.name, model, site, pruned)
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
def _check_inert(name: str, model: nn.Module, site: NeuronSite, pruned: Tensor) -> None:
    """Deleted neurons output zero, and replacing their output with noise changes no logit."""
    where = f"{name}: inert"
    ids = tiny_windows(2)[0][:, :16]
    seen: list[Tensor] = []

    def record(layer: int) -> Callable[[Tensor], None]:
        return lambda a: seen.append(a[..., pruned[layer].to(a.device)].detach().clone())

    with site.hooks(record):
        logits = model(ids).logits
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
                 registry: Registry | None = None, *, seed: int = 0, steps: int = 2) -> None:
    """Every check in CHECKS on one tiny architecture; raises ConformanceError on the first failure."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on tiny models, handing work to other threads costs more than the math
    try:
        _check_method(method, architecture, options, registry, seed=seed, steps=steps)
    finally:
        torch.set_num_threads(threads)


def _check_method(method: str | MethodSpec, architecture: str, options: Mapping[str, Any] | None,
                  registry: Registry | None, *, seed: int, steps: int) -> None:
    spec, registry = resolve_method(method, registry)
    validated = check_options(spec, options, registry)
    first = run_trial(spec, validated, architecture, registry, seed=seed, steps=steps, global_seed=1)
    again = run_trial(spec, spec.options(**dict(options or {})), architecture, registry, seed=seed,
                      steps=steps, global_seed=2)
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


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConformanceError(message)
