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
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from unlearn_core import NeuronId, PruneContext, UsageError, unknown_name

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


class ExplanationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    explainer: str = "tokens"
    explainer_options: dict[str, Any] = Field(default_factory=dict)
    store: str = str(DEFAULT_STORE)
    records: int = Field(5, ge=1, description="top-activating contexts kept per neuron")
    context: int = Field(64, ge=4, description="tokens per probe window")
    probe: Literal["mix", "forget", "retain"] = "mix"
    max_neurons: int | None = Field(None, ge=1, description="explain only this many candidates")
    concepts: list[str] | None = None  # given concepts: no explainer call
    n_concepts: int = Field(20, ge=1)
    samples: int = Field(64, ge=1, description="forget windows handed to the explainer for concepts "
                                                "(LLM prompts show the first 20)")
    batch: int = Field(256, ge=1, description="neurons explained between two store commits")


class SnipOptions(ExplanationOptions):
    embedder: str = "sentence-transformers"
    embedder_options: dict[str, Any] = Field(default_factory=dict)


class KeywordOptions(ExplanationOptions):
    keywords: list[str] | None = None  # default: DEFAULT_KEYWORDS of the forget corpus


def check_components(options: BaseModel, components) -> None:
    """Unknown explainer or embedder names, bad options or a missing key fail before models load."""
    chosen = [("explainer", options.explainer, options.explainer_options)]
    if hasattr(options, "embedder"):
        chosen.append(("embedder", options.embedder, options.embedder_options))
    for kind, name, kwargs in chosen:
        specs = components.get(kind, {})
        if name not in specs:
            raise unknown_name(kind, name, specs)
        if specs[name].check is not None:
            specs[name].check(**kwargs)


def accepts(factory, kind: str, name: str):
    """A check that `factory` takes the given options, without calling it (it may load a model)."""
    import inspect

    def check(**options) -> None:
        try:
            inspect.signature(factory).bind(**options)
        except TypeError as e:
            params = ", ".join(p for p in inspect.signature(factory).parameters if p != "self")
            raise UsageError(f"bad options for {kind} '{name}': {e}; it takes: {params}") from None

    return check


def explainer_key(name: str, options: dict[str, Any]) -> str:
    """Store key of an explainer configuration: the name, plus its options when any are set."""
    safe = {k: v for k, v in options.items() if "key" not in k.lower()}  # never store secrets
    return name if not safe else f"{name}:{json.dumps(safe, sort_keys=True)}"


class ExplainedNeurons:
    """Steps 1-3 of the pipeline; subclasses turn explanations into scores (step 4)."""

    def __init__(self, options: ExplanationOptions):
        self.options = options
        self.scores: Tensor | None = None
        self.details: dict[str, Any] = {}
        self.concept_list: list[str] = []  # filled by explanations()

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
        spec = ctx.components["explainer"][self.options.explainer]
        return spec.build(**self.options.explainer_options)

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
        explainer = None
        with ExplanationStore(Path(o.store).expanduser()) as store:
            imported = store.get(*key[:4], IMPORTED, candidates)
            missing = store.missing(*key, [n for n in candidates if n not in imported])
            reused = len(candidates) - len(missing)
            if missing:
                explainer = self._explainer(ctx)
                strings = _token_strings(ctx.tokenizer, probe)
                for start in range(0, len(missing), o.batch):
                    batch = missing[start:start + o.batch]
                    texts = explainer.explain([top.records(n, strings) for n in batch])
                    store.put(*key, dict(zip(batch, texts, strict=True)))  # committed: resumable
            found = {**store.get(*key, candidates), **imported}
            concepts = self._concepts(ctx, store, explainer)
        self.details.update({
            "explainer": o.explainer, "explainer_key": key[2], "prompt_version": PROMPT_VERSION,
            "explained": len(found), "reused_from_store": reused, "imported": len(imported),
            "store": str(Path(o.store).expanduser()),
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
        cached = store.get_cached("concepts", cache_key)
        if cached is not None:
            return json.loads(cached)
        explainer = explainer or self._explainer(ctx)
        samples = [ctx.tokenizer.decode(w.tolist()) for w in samples_ids]
        concepts = explainer.concepts(samples, o.n_concepts)
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
        spec = ctx.components["embedder"][self.options.embedder]
        embedder = spec.build(**self.options.embedder_options)
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
        with ExplanationStore(Path(o.store).expanduser()) as store:
            cached = store.get_cached_many("rating", keys.values())
            todo = sorted(t for t, k in keys.items() if k not in cached)
            if todo:
                asked = self._explainer(ctx).rate(todo, topic)
                fresh = {keys[t]: json.dumps(float(r)) for t, r in zip(todo, asked, strict=True)}
                store.put_cached_many("rating", fresh)
                cached.update(fresh)
        self.details.update({"topic": topic, "ratings_asked": len(todo),
                             "ratings_cached": len(keys) - len(todo)})
        return self._as_tensor(ctx, {n: float(json.loads(cached[keys[t]])) for n, t in found.items()})


def _token_strings(tokenizer, windows: Tensor) -> dict[int, str]:
    """Every probe token id decoded once (decoding per record would dominate the run)."""
    return {int(i): tokenizer.decode([int(i)]) for i in windows.unique()}
