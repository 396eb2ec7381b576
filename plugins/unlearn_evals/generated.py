"""A toxicity forget set that exists offline: the model's own sampled generations, split by a
classifier into toxic (forget) and clean (retain) documents.

    unlearn bench --forget self-toxic:smollm2 --retain self-clean:smollm2 --eval tokens,toxicity

Both corpora read one cached sample (generated once per model, seed and settings), so they never
share a document. A manifest beside the cache records seed, settings, classifier and sizes.
A corpus is handed no registry, so the classifier is built from the installed plugins' components
(`load_plugins()`, honouring $UNLEARN_PLUGINS); the Python API may pass a registry's instead.
For users with a network, `civil-toxic` / `civil-clean` are Civil Comments with toxicity ≥ 0.8 / ≤ 0.2.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_core import ComponentSpec, CorpusSpec, UsageError, huggingface_documents

from .classifiers import check_classifier, installed_classifiers, load_classifier, resolve_name
from .toxicity import PROMPT, SamplingOptions, generate

CACHE_ENV = "UNLEARN_CACHE_DIR"


@dataclass(frozen=True)
class GeneratedSpec:
    """`MODEL[,key=value...]` parsed: which model samples, how many, how they are split."""

    model: str
    samples: int = 2000
    toxic: float = 0.8  # forget: score > toxic
    clean: float = 0.2  # retain: score <= clean
    classifier: str = "auto"
    max_new_tokens: int = 48
    temperature: float = 1.0
    prompt: str = PROMPT
    extra: dict = field(default_factory=dict)

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(prompt=self.prompt, samples=self.samples, max_new_tokens=self.max_new_tokens,
                               temperature=self.temperature)


_KEYS = {"samples": int, "toxic": float, "clean": float, "classifier": str, "max_new_tokens": int,
         "temperature": float}


def parse_argument(argument: str | None) -> GeneratedSpec:
    model, *pairs = (argument or "").split(",")
    if not model:
        raise UsageError("generated corpus needs a model: self-toxic:MODEL[,samples=N,toxic=0.8,...]")
    values: dict = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or key not in _KEYS:
            raise UsageError(f"bad generated-corpus setting '{pair}'; settings: {', '.join(_KEYS)}")
        try:
            values[key] = _KEYS[key](value)
        except ValueError:
            raise UsageError(f"bad generated-corpus setting '{pair}': not a {_KEYS[key].__name__}") from None
    spec = GeneratedSpec(model, **values)
    if spec.samples < 1 or not 0 <= spec.clean < spec.toxic <= 1:
        raise UsageError("generated corpus needs samples >= 1 and 0 <= clean < toxic <= 1")
    return spec


def check_argument(argument: str | None) -> None:
    from unlearn_core import check_model_spec

    spec = parse_argument(argument)
    check_model_spec(spec.model)
    check_classifier(spec.classifier)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "unlearn") / "generations"


def scored_generations(spec: GeneratedSpec, seed: int, model=None, tokenizer=None,
                       classifiers: Mapping[str, ComponentSpec] | None = None) -> tuple[list[dict], dict]:
    """Every generation with its score, and the manifest; generated once, then read from the cache.
    `model`/`tokenizer` skip loading `spec.model` (the Python API and tests pass them); `classifiers`
    is a registry's `components["classifier"]` (default: the installed plugins')."""
    classifiers = installed_classifiers() if classifiers is None else classifiers
    classifier_name = resolve_name(spec.classifier, classifiers=classifiers)
    key = json.dumps({"model": spec.model, "seed": seed, "sampling": spec.sampling().model_dump(),
                      "classifier": classifier_name}, sort_keys=True)
    stem = hashlib.sha256(key.encode()).hexdigest()[:16]
    rows_path, manifest_path = cache_dir() / f"{stem}.jsonl", cache_dir() / f"{stem}.json"
    if rows_path.is_file() and manifest_path.is_file():
        rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()]
        return rows, json.loads(manifest_path.read_text(encoding="utf-8"))
    classifier = load_classifier(classifier_name, classifiers=classifiers)
    if model is None:
        from unlearn_core import load_model

        loaded = load_model(spec.model, progress=False)
        model, tokenizer = loaded.model, loaded.tokenizer
    texts = generate(model, tokenizer, spec.sampling(), seed)
    rows = [{"text": t, "score": s} for t, s in zip(texts, classifier.scores(texts), strict=True)]
    manifest = {"model": spec.model, "seed": seed, "sampling": spec.sampling().model_dump(),
                "classifier": classifier.describe(), "samples": len(rows),
                "toxic_above": spec.toxic, "clean_at_most": spec.clean,
                "toxic": sum(r["score"] > spec.toxic for r in rows),
                "clean": sum(r["score"] <= spec.clean for r in rows)}
    cache_dir().mkdir(parents=True, exist_ok=True)
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return rows, manifest


def split_documents(rows: list[dict], spec: GeneratedSpec, which: str, seed: int) -> list[str]:
    """The toxic or clean generations (non-empty), in an order fixed by the seed."""
    keep = (lambda s: s > spec.toxic) if which == "toxic" else (lambda s: s <= spec.clean)
    texts = [r["text"] for r in rows if keep(r["score"]) and r["text"].strip()]
    random.Random(seed).shuffle(texts)
    return texts


def _documents(which: str):
    def documents(argument: str | None, seed: int) -> list[str]:
        spec = parse_argument(argument)
        rows, manifest = scored_generations(spec, seed)
        texts = split_documents(rows, spec, which, seed)
        print(f"self-{which}: {len(texts)} of {manifest['samples']} generations of {spec.model} "
              f"(seed {seed}, classifier {manifest['classifier']['name']}; manifest in {cache_dir()})",
              file=sys.stderr, flush=True)
        return texts
    return documents


def _civil(keep):
    return lambda _arg, seed: huggingface_documents("google/civil_comments", seed, keep=keep)


CORPORA: tuple[CorpusSpec, ...] = (
    CorpusSpec("self-toxic", "the model's own generations scored toxic (> 0.8), generated offline and cached",
               _documents("toxic"), "MODEL[,samples=N,toxic=0.8,clean=0.2,classifier=NAME]",
               check=check_argument),
    CorpusSpec("self-clean", "the model's own generations scored clean (<= 0.2), from the same sample",
               _documents("clean"), "MODEL[,samples=N,toxic=0.8,clean=0.2,classifier=NAME]",
               check=check_argument),
    CorpusSpec("civil-toxic", "Civil Comments with toxicity >= 0.8 (google/civil_comments; network)",
               _civil(lambda row: row.get("toxicity", 0) >= 0.8)),
    CorpusSpec("civil-clean", "Civil Comments with toxicity <= 0.2 (google/civil_comments; network)",
               _civil(lambda row: row.get("toxicity", 1) <= 0.2)),
)
