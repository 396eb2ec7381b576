"""SNIP and the explanation baselines: explain neurons, then score them against the forget data.

    unlearn bench --method selective,snip,random                      # offline: tokens explainer
    unlearn bench --method snip -O snip.explainer=openai              # GPT-4-class explanations
    unlearn bench --method snip,keyword,llm-scored -O snip.max_neurons=2000

Pipeline (shared by snip, keyword and llm-scored, computed once per method on the unpruned model,
in `prepare`, which the bench calls on the original weights also when it resumes a run):
1. activation records: each neuron's top-k probe windows (forget and retain statistics windows,
   cut to `context` tokens; never evaluation text);
2. explanations of the candidate neurons (all, or the `max_neurons` with the highest maximum
   activation), read from / written to the SQLite store batch by batch under a key that names
   the probe text, so a second run reuses them and an interrupted one resumes; explanations
   imported from published files are used too;
3. the concepts the forget data needs, asked of the explainer from sampled forget texts (cached);
4. scores: snip = max cosine similarity between a neuron's explanation and any concept;
   keyword = keyword hits in the explanation; llm-scored = the explainer's 0-10 relevance rating
   (cached in the store, so a repeated or resumed run asks nothing again).
Unexplained neurons score below every explained one. Pruning then follows the bench schedule.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from torch import Tensor

from unlearn_core import (
    ComponentSpec,
    NeuronId,
    PruneContext,
    UsageError,
    is_secret_name,
    loads_json,
    redact,
    unknown_name,
)

from .activations import TopActivations, top_activations
from .prompts import PROMPT_VERSION
from .store import IMPORTED, ExplanationStore

DEFAULT_STORE = Path(os.environ.get("UNLEARN_STORE", "~/.cache/unlearn/explanations.sqlite"))

# Keywords of the built-in forget corpora, for the keyword baseline.
DEFAULT_KEYWORDS: dict[str, list[str]] = {
    "python": ["python", "code", "programming", "function", "def", "return", "import", "class",
               "self", "variable", "syntax", "indentation", "parenthes", "bracket", "operator",
               "keyword", "argument", "module", "none", "true", "false", "string", "exception"],
    "shakespeare": ["shakespeare", "verse", "poetry", "archaic", "thou", "thee", "thy", "lord",
                    "king", "queen", "play", "character", "dialogue", "stage", "enter", "exit"],
}


Phrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class ExplanationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    explainer: str = "tokens"
    explainer_options: dict[str, Any] = Field(default_factory=dict)
    store: str = Field(str(DEFAULT_STORE), min_length=1)
    records: int = Field(5, ge=1, le=100, description="top-activating contexts kept per neuron")
    context: int = Field(64, ge=4, description="tokens per probe window")
    probe: Literal["mix", "forget", "retain"] = "mix"
    max_neurons: int | None = Field(None, ge=1, description="explain only this many candidates")
    concepts: list[Phrase] | None = Field(None, min_length=1)  # given concepts: no explainer call
    n_concepts: int = Field(20, ge=1)
    samples: int = Field(64, ge=1, description="forget windows handed to the explainer for concepts "
                                                "(LLM prompts show the first 20)")
    batch: int = Field(256, ge=1, description="neurons explained between two store commits")


class SnipOptions(ExplanationOptions):
    embedder: str = "sentence-transformers"
    embedder_options: dict[str, Any] = Field(default_factory=dict)


class KeywordOptions(ExplanationOptions):
    keywords: list[Phrase] | None = Field(None, min_length=1)  # default: DEFAULT_KEYWORDS of the forget corpus


class OptionError(UsageError):
    """A bad option of a component: `option` names it (None: the options as a whole)."""

    def __init__(self, option: str | None, message: str) -> None:
        super().__init__(message)
        self.option, self.message = option, message


Components = Mapping[str, Mapping[str, ComponentSpec]]


def check_components(options: BaseModel, components: Components, method: str | None = None) -> None:
    """Unknown explainer or embedder names, bad options, a missing key or a store this version
    cannot use fail before models load. A bad option is named as `-O METHOD.KIND_options.KEY`
    (as `-O KEY` of `unlearn explain` when `method` is None)."""
    ExplanationStore.check(store_path(options))
    chosen = [("explainer", options.explainer, options.explainer_options)]
    if hasattr(options, "embedder"):
        chosen.append(("embedder", options.embedder, options.embedder_options))
    for kind, name, kwargs in chosen:
        specs = components.get(kind, {})
        if name not in specs:
            raise unknown_name(kind, name, specs)
        if specs[name].check is None:
            continue
        try:
            specs[name].check(**kwargs)
        except OptionError as e:
            if method:
                option = ".".join(part for part in (method, f"{kind}_options", e.option) if part)
            else:
                option = f"-O {e.option}" if e.option else "-O"
            raise UsageError(f"bad options for {kind} '{name}': {option}: {e.message}") from None


def component_check(method: str) -> Callable[[BaseModel, Components], None]:
    """The MethodSpec check of `method`: check_components, naming options as -O METHOD.KEY."""
    return lambda options, components: check_components(options, components, method)


def accepts(factory: Callable[..., Any], kind: str, name: str) -> Callable[..., None]:
    """A check that `factory` takes the given options, of the types its signature declares (strictly:
    no "8" for an int), without calling it (it may load a model)."""

    def check(**options: Any) -> None:
        try:
            signature = inspect.signature(factory, eval_str=True)
        except (NameError, TypeError, ValueError):
            signature = inspect.signature(factory)
        params = signature.parameters
        takes = ", ".join(p for p in params if p != "self")
        open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
        for key, value in options.items():
            param = params.get(key)
            if param is None or param.kind in (param.POSITIONAL_ONLY, param.VAR_POSITIONAL):
                if open_ended:
                    continue
                raise OptionError(key, f"no such option; it takes: {takes}")
            if param.annotation is param.empty or isinstance(param.annotation, str):
                continue
            try:
                adapter = TypeAdapter(param.annotation)
            except Exception:  # a type pydantic cannot check: the factory will
                continue
            try:
                adapter.validate_python(value, strict=True)
            except ValidationError as e:  # its msg never holds the value, which may be a secret
                raise OptionError(key, e.errors()[0]["msg"]) from None

    return check


# Options that change how fast or how visibly a component works, not what it answers.
_RUNTIME = frozenset({"progress", "concurrency", "max_retries", "timeout", "backoff", "batch_size"})


def explainer_key(name: str, options: Mapping[str, Any]) -> str:
    """Store key of an explainer configuration: its name and every option that changes what it
    answers, never a secret; for `openai` also the model and the endpoint it resolves to (through
    OPENAI_BASE_URL too), without credentials, so one endpoint's answers are never reused for another."""
    identity = {k: v for k, v in options.items() if k not in _RUNTIME and not is_secret_name(k)}
    if name == "openai":
        from .openai_backend import DEFAULT_CHAT_MODEL, endpoint

        identity["model"] = options.get("model") or DEFAULT_CHAT_MODEL
        identity["base_url"] = endpoint(options.get("base_url"))
    identity = redact(identity)  # credentials inside other values, e.g. a URL
    return name if not identity else f"{name}:{json.dumps(identity, sort_keys=True, default=str)}"


def store_path(options: BaseModel) -> Path:
    return Path(options.store).expanduser()


def build_component(ctx: PruneContext, kind: str, name: str, options: Mapping[str, Any]) -> Any:
    """Build a registered component; with progress off (--quiet) one that shows progress is told so."""
    spec = ctx.components[kind][name]
    options = dict(options)
    if not ctx.progress and _takes(spec.build, "progress"):
        options["progress"] = False
    return spec.build(**options)


def _takes(fn: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


class ExplainedNeurons:
    """Steps 1-3 of the pipeline; subclasses turn explanations into scores (step 4)."""

    def __init__(self, options: ExplanationOptions):
        self.options = options
        self.scores: Tensor | None = None
        self.details: dict[str, Any] = {}
        self.concept_list: list[str] = []  # filled by explanations()
        self._built: Any = None  # the explainer, built once (the local one loads a model)

    def prepare(self, ctx: PruneContext) -> None:
        """Explain and score on the unpruned model, once (the bench calls this before step 1)."""
        self.scores = self._score(ctx)

    def score(self, ctx: PruneContext) -> Tensor:
        if self.scores is None:
            self.prepare(ctx)
        return self.scores

    def info(self) -> dict[str, Any]:
        return self.details

    def _explainer(self, ctx: PruneContext):
        o = self.options
        if self._built is None:
            self._built = build_component(ctx, "explainer", o.explainer, o.explainer_options)
        return self._built

    def probe_windows(self, ctx: PruneContext) -> Tensor:
        """Probe windows of `context` tokens cut from the statistics windows (without the BOS, which
        is the same in every window)."""
        c = self.options.context
        start = 1 if ctx.bos else 0
        cut = lambda w: w[:, start:][:, : (w.shape[1] - start) // c * c].reshape(-1, c)  # noqa: E731
        forget, retain = cut(ctx.forget_windows), cut(ctx.retain_windows)
        if self.options.probe == "forget":
            return forget
        if self.options.probe == "retain":
            return retain
        n = min(len(forget), len(retain))
        mixed = torch.stack([forget[:n], retain[:n]], dim=1).reshape(-1, c)
        return torch.cat([mixed, forget[n:], retain[n:]])

    def probe_key(self, probe: Tensor) -> str:
        """Names the text the activation records come from: kind, a digest of the windows, k."""
        digest = hashlib.sha256(probe.numpy().tobytes()).hexdigest()[:16]
        return f"{self.options.probe}:{digest}:k{self.options.records}"

    def explanations(self, ctx: PruneContext) -> tuple[dict[NeuronId, str], TopActivations]:
        if bool(ctx.pruned.any()):  # they would be stored under the unpruned model's fingerprint
            raise ValueError("explanations must describe the unpruned model; the bench calls "
                             "prepare() on the original weights before step 1")
        o = self.options
        probe = self.probe_windows(ctx)
        if len(probe) == 0:  # explanations of no text would be stored and reused as if real
            tokens = ctx.forget_windows.shape[1] - (1 if ctx.bos else 0)
            raise UsageError(f"the statistics windows have {tokens} tokens of text, fewer than the "
                             f"{o.context}-token probe windows (option context): use a larger --window "
                             "or a smaller context")
        top = top_activations(ctx.model, ctx.site, probe, k=o.records, batch_size=ctx.batch_size,
                              progress=ctx.progress)
        peak = top.values[..., 0]  # [L, N]
        order = torch.sort(peak.flatten(), descending=True, stable=True).indices
        if o.max_neurons is not None:
            order = order[: o.max_neurons]
        n_per_layer = ctx.site.n_neurons
        candidates = [NeuronId(int(i) // n_per_layer, int(i) % n_per_layer) for i in order]
        key = (ctx.model_fingerprint, ctx.site.name, explainer_key(o.explainer, o.explainer_options),
               PROMPT_VERSION, self.probe_key(probe))
        explainer, empty = None, 0
        with ExplanationStore(store_path(o)) as store:
            # Imported explanations come from their publisher, not an endpoint: keyed by the name.
            imported = store.get(key[0], key[1], o.explainer, PROMPT_VERSION, IMPORTED, candidates)
            missing = store.missing(*key, [n for n in candidates if n not in imported])
            reused = len(candidates) - len(missing)
            if missing:
                explainer = self._explainer(ctx)
                strings = _token_strings(ctx.tokenizer, probe)
                for start in range(0, len(missing), o.batch):
                    batch = missing[start:start + o.batch]
                    texts = explainer.explain([top.records(n, strings) for n in batch])
                    if len(texts) != len(batch):
                        raise ValueError(f"explainer '{o.explainer}' returned {len(texts)} explanations "
                                         f"for {len(batch)} neurons")
                    # An empty answer is not stored: the neuron stays unexplained and is asked again.
                    answered = {n: t for n, t in zip(batch, texts, strict=True) if _said(t)}
                    empty += len(batch) - len(answered)
                    if answered:
                        store.put(*key, answered)  # committed: resumable
            found = {**store.get(*key, candidates), **imported}
            if not found:
                raise UsageError(f"explainer '{o.explainer}' gave no explanation for any of the "
                                 f"{len(candidates)} neurons ({empty} empty answers); try another "
                                 "explainer or model")
            concepts = self._concepts(ctx, store, explainer)
        self.details.update({
            "explainer": o.explainer, "explainer_key": key[2], "prompt_version": PROMPT_VERSION,
            "explained": len(found), "reused_from_store": reused, "imported": len(imported),
            "empty_answers": empty, "store": str(store_path(o)),
            "candidates": "all neurons" if o.max_neurons is None else
            f"the {o.max_neurons} neurons with the highest maximum activation on the probe windows",
            "probe": {"kind": o.probe, "windows": len(probe), "context": o.context,
                      "records_per_neuron": o.records, "text": "statistics windows",
                      "key": key[4]},
            "concepts": concepts,
        })
        self.concept_list = concepts
        return found, top

    def _concepts(self, ctx: PruneContext, store: ExplanationStore, explainer) -> list[str]:
        o = self.options
        if o.concepts is not None:
            return list(o.concepts)
        samples_ids = ctx.forget_windows[: o.samples, 1 if ctx.bos else 0:]  # text only, no BOS
        digest = hashlib.sha256(samples_ids.numpy().tobytes()).hexdigest()[:16]
        cache_key = json.dumps([ctx.forget_spec, digest, explainer_key(o.explainer, o.explainer_options),
                                PROMPT_VERSION, o.n_concepts])
        cached = _phrases(store.get_cached("concepts", cache_key))
        if cached:  # a damaged entry is asked again
            return cached
        explainer = explainer or self._explainer(ctx)
        samples = [ctx.tokenizer.decode(w.tolist()) for w in samples_ids]
        concepts = [c.strip() for c in explainer.concepts(samples, o.n_concepts) if _said(c)]
        if not concepts:
            raise UsageError(f"explainer '{o.explainer}' named no concepts for '{ctx.forget_spec}'")
        store.put_cached("concepts", cache_key, json.dumps(concepts))
        return concepts

    def _as_tensor(self, ctx: PruneContext, values: dict[NeuronId, float]) -> Tensor:
        """[L, N] scores; neurons without a value score below every explained neuron."""
        out = torch.full(ctx.site.shape, min(values.values(), default=0.0) - 1.0, dtype=torch.float64)
        for n, v in values.items():
            out[n.layer, n.index] = v
        return out

    def _score(self, ctx: PruneContext) -> Tensor:
        raise NotImplementedError


class SnipScorer(ExplainedNeurons):
    """Max cosine similarity between a neuron's explanation and any concept of the forget data."""

    def _score(self, ctx: PruneContext) -> Tensor:
        found, _ = self.explanations(ctx)
        embedder = build_component(ctx, "embedder", self.options.embedder, self.options.embedder_options)
        texts = sorted(set(found.values()))  # many neurons share an explanation: embed each once
        explained = embedder.embed(texts)  # [M, d], unit rows
        concepts = embedder.embed(self.concept_list)  # [C, d]
        best = dict(zip(texts, (explained @ concepts.T).max(dim=1).values.double().tolist(), strict=True))
        self.details.update({"embedder": self.options.embedder, "distinct_explanations": len(texts)})
        return self._as_tensor(ctx, {n: best[t] for n, t in found.items()})


class KeywordScorer(ExplainedNeurons):
    """Keyword hits in the explanation; ties (and neurons without hits) by maximum activation."""

    def _score(self, ctx: PruneContext) -> Tensor:
        found, top = self.explanations(ctx)
        keywords = self.options.keywords or DEFAULT_KEYWORDS.get(ctx.forget_spec.split(":")[0])
        if not keywords:
            raise UsageError(f"keyword: no default keywords for '{ctx.forget_spec}'; give them with "
                             "-O keyword.keywords='[\"word\", ...]'")
        pattern = re.compile(r"\b(" + "|".join(re.escape(k) for k in keywords) + r")", re.IGNORECASE)
        peak = top.values[..., 0]
        rank = peak / peak.max().clamp_min(1e-12)  # in [0, 1]: the explanation's strength
        values = {n: len(pattern.findall(t)) + 0.999 * float(rank[n.layer, n.index].clamp(0, 1))
                  for n, t in found.items()}
        self.details.update({"keywords": keywords,
                             "neurons_with_a_keyword": sum(v >= 1 for v in values.values())})
        return self._as_tensor(ctx, values)


class RatedScorer(ExplainedNeurons):
    """The explainer's 0-10 rating of each explanation's relevance to the forget data."""

    def _score(self, ctx: PruneContext) -> Tensor:
        found, _ = self.explanations(ctx)
        o = self.options
        topic = f"{ctx.forget_spec}: " + ", ".join(self.concept_list)
        prefix = json.dumps([explainer_key(o.explainer, o.explainer_options), PROMPT_VERSION, topic])
        keys = {text: f"{prefix}|{text}" for text in set(found.values())}  # one rating per explanation
        with ExplanationStore(store_path(o)) as store:
            cached = {k: r for k, v in store.get_cached_many("rating", keys.values()).items()
                      if (r := _rating(v)) is not None}  # a damaged entry is asked again
            todo = sorted(t for t, k in keys.items() if k not in cached)
            if todo:
                asked = self._explainer(ctx).rate(todo, topic)
                fresh = {keys[t]: float(r) for t, r in zip(todo, asked, strict=True)}
                if not all(math.isfinite(r) for r in fresh.values()):
                    raise ValueError(f"explainer '{o.explainer}' gave a rating that is not a finite number")
                store.put_cached_many("rating", {k: json.dumps(r) for k, r in fresh.items()})
                cached.update(fresh)
        self.details.update({"topic": topic, "ratings_asked": len(todo),
                             "ratings_cached": len(keys) - len(todo)})
        return self._as_tensor(ctx, {n: cached[keys[t]] for n, t in found.items()})


def _said(text: object) -> bool:
    """Whether an answer says something (a non-empty string)."""
    return isinstance(text, str) and bool(text.strip())


def _phrases(text: str | None) -> list[str] | None:
    """A cached JSON list of non-empty strings, or None (absent or damaged)."""
    try:
        value = loads_json(text) if text is not None else None
    except ValueError:
        return None
    ok = isinstance(value, list) and value and all(_said(v) for v in value)
    return value if ok else None


def _rating(text: str) -> float | None:
    """A cached rating, or None when it is damaged."""
    try:
        value = loads_json(text)
    except ValueError:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _token_strings(tokenizer, windows: Tensor) -> dict[int, str]:
    """Every probe token id decoded once (decoding per record would dominate the run)."""
    return {int(i): tokenizer.decode([int(i)]) for i in windows.unique()}
