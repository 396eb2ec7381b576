"""Cloze (CBT format): the scorer picks the lowest-loss candidate, items are built as CBT was
(no answer leak, requested classes, deterministic), and the harness runs in the bench."""

from __future__ import annotations

import random
import re

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_model

from unlearn_core import BenchConfig, UsageError, run_bench
from unlearn_evals import ClozeItem, ClozeOptions, build_items, candidate_losses, encode, score_items
from unlearn_evals.cloze import BLANK, CLASSES, load_tagger

NAMES = ["Alice", "Bob", "Mary", "John", "Peter", "Susan", "London", "Paris", "France", "Germany",
         "Edward", "Lucy", "Thomas", "Oxford"]
VERBS = ["walked", "ran", "looked", "went", "hurried", "wandered", "climbed", "jumped", "drove", "sailed",
         "crawled", "rushed"]
PREPS = ["to", "into", "across", "near", "behind", "under", "from", "over", "through", "beside", "toward",
         "around"]
NOUNS = ["garden", "house", "river", "forest", "table", "window", "road", "tree", "boat", "castle",
         "bridge", "kitchen", "field", "market"]


def prose(n_sentences: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(NAMES[:6])} {rng.choice(VERBS)} {rng.choice(PREPS)} the "
                    f"{rng.choice(NOUNS)} {rng.choice(PREPS)} {rng.choice(NAMES[6:])}."
                    for _ in range(n_sentences))


@pytest.fixture(scope="module")
def tagger():
    return load_tagger()


def _item(answer_first: bool = True) -> ClozeItem:
    candidates = ("cat", "dog", "tree", "house", "river", "boat", "apple", "stone", "bird", "road")
    return ClozeItem(context=("The old man sat by the fire.", "He had a dog and a cat."),
                     query=f"Every night the {BLANK} slept beside him.", answer=candidates[0],
                     candidates=candidates, word_class="CN")


def _reference_losses(model, tokenizer, item: ClozeItem, max_context: int) -> list[float]:
    """Brute force: one full forward per candidate, mean loss over the query sentence."""
    context = tokenizer(" ".join(item.context))["input_ids"][-max_context:]
    losses = []
    for c in item.candidates:
        query = tokenizer(" " + item.query.replace(BLANK, c), add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + query])
        logits = model(input_ids=ids).logits[0, len(context) - 1:-1]
        losses.append(F.cross_entropy(logits, torch.tensor(query)).item())
    return losses


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "gemma2"])
def test_scorer_matches_brute_force_and_picks_the_lowest_loss(arch, tokenizer):
    model = tiny_model(arch)
    item = _item()
    with torch.no_grad():
        expected = _reference_losses(model, tokenizer, item, 40)
    enc = encode(item, tokenizer, max_context_tokens=40)
    got = candidate_losses(model, enc)
    assert got == pytest.approx(expected, abs=1e-4)
    assert len(set(round(x, 4) for x in got)) == len(got)  # distinct: the choice is meaningful
    best = item.candidates[min(range(10), key=expected.__getitem__)]
    worst = item.candidates[max(range(10), key=expected.__getitem__)]
    as_answer = lambda a: ClozeItem(item.context, item.query, a, item.candidates, "CN")  # noqa: E731
    right = score_items(model, [encode(as_answer(best), tokenizer, 40)], ["CN"])
    wrong = score_items(model, [encode(as_answer(worst), tokenizer, 40)], ["CN"])
    assert right["accuracy"] == 1.0 and right["per_class"]["CN"]["items"] == 1
    assert wrong["accuracy"] == 0.0 and wrong["chance"] == 0.1


def test_items_follow_cbt_and_never_leak_the_answer(tagger):
    texts = [prose(120, seed=s) for s in range(6)]
    items = build_items(texts, 12, list(CLASSES), seed=3, tagger=tagger)
    assert [sum(i.word_class == c for i in items) for c in CLASSES] == [3, 3, 3, 3]
    for item in items:
        assert len(item.context) == 20 and item.query.count(BLANK) == 1
        assert not re.search(rf"\b{re.escape(item.answer)}\b", item.query, flags=re.IGNORECASE)
        assert len({c.lower() for c in item.candidates}) == 10 and item.answer in item.candidates
        window = " ".join(item.context) + " " + item.query.replace(BLANK, item.answer)
        assert all(re.search(rf"\b{re.escape(c)}\b", window) for c in item.candidates)
        original = tagger(item.query.replace(BLANK, item.answer))
        token = next(t for t in original if t.text == item.answer)
        expected = {"CN": {"NOUN"}, "V": {"VERB"}, "P": {"ADP"}, "NE": {"PROPN"}}[item.word_class]
        assert token.pos_ in expected, (item.answer, token.pos_, item.word_class)


def test_items_are_deterministic_for_a_seed_and_honour_classes(tagger):
    texts = [prose(120, seed=s) for s in range(6)]
    a = build_items(texts, 8, ["V", "P"], seed=1, tagger=tagger)
    b = build_items(texts, 8, ["V", "P"], seed=1, tagger=tagger)
    c = build_items(texts, 8, ["V", "P"], seed=2, tagger=tagger)
    assert a == b and a != c
    assert {i.word_class for i in a} == {"V", "P"} and len(a) == 8


def test_options_reject_unknown_classes():
    assert ClozeOptions(classes="V,P").classes == ["V", "P"]
    with pytest.raises(ValueError, match="classes must be among"):
        ClozeOptions(classes="V,X")


def test_cloze_runs_in_the_bench_at_every_step(tiny_folder, tmp_path):
    forget = tmp_path / "code.txt"
    forget.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(400)))
    retain = tmp_path / "prose.txt"
    retain.write_text("\n".join(prose(150, seed=s) for s in range(4)))
    config = BenchConfig(methods=["selective", "random"], model=str(tiny_folder), forget=f"text:{forget}",
                         retain=f"text:{retain}", steps=2, fraction=0.1, tokens=256, eval_tokens=128,
                         window=64, seed=5, evals=["tokens", "cloze"],
                         options={"cloze": {"items": 4, "max_context_tokens": 40}})
    records = run_bench(config, progress=False, log=lambda m: None)
    for r in records:
        results = [s.evaluations["cloze"] for s in r.steps]
        assert len(results) == 3 and all(next(iter(x)) == "accuracy" for x in results)
        assert all(x["items"] == 4 and x["chance"] == 0.1 and x["source"] == f"text:{retain}" for x in results)
    assert records[0].steps[0].evaluations == records[1].steps[0].evaluations
    with pytest.raises(UsageError, match="bad option cloze.items"):
        run_bench(config.model_copy(update={"options": {"cloze": {"items": 0}}}), progress=False)


@pytest.mark.integration
def test_smollm2_solves_obvious_items():
    from unlearn_core.models import load_model

    loaded = load_model("smollm2", progress=False)
    words = ("milk", "bread", "cheese", "butter", "honey", "water", "salt", "tea", "soup", "jam")
    items = [
        ClozeItem(("Tom was thirsty after the long walk.", "He went to the kitchen."),
                  f"He poured a glass of cold {BLANK} and drank it.", "water", words, "CN"),
        ClozeItem(("It was a sunny day in Paris.", "Marie walked along the river Seine."),
                  f"She could see the Eiffel Tower from the bridge in {BLANK}.", "Paris",
                  ("Paris", "Tom", "Seine", "Berlin", "Marie", "London", "Rome", "Anna", "Madrid", "Oslo"),
                  "NE"),
        ClozeItem(("The cat was hungry.",), f"The cat {BLANK} the fish quickly.", "ate",
                  ("ate", "sang", "flew", "read", "wrote", "drove", "built", "painted", "swam", "slept"), "V"),
    ]
    result = score_items(loaded.model, [encode(i, loaded.tokenizer, 128) for i in items], ["CN", "NE", "V"])
    assert result["accuracy"] >= 2 / 3, result


def test_local_cbt_jsonl_items_load_per_class_and_bad_rows_are_one_line(tmp_path):
    import json

    from unlearn_evals.cloze import cbt_jsonl

    def row(i, cls):
        return {"sentences": [f"Sentence {k} of story {i}." for k in range(20)],
                "question": f"Tom went {BLANK} the market {i}.", "answer": "to",
                "options": ["to", "from", "in", "on", "at", "by", "with", "of", "for", "under"],
                "class": cls}

    path = tmp_path / "cbt.jsonl"
    path.write_text("".join(json.dumps(row(i, c)) + "\n" for i in range(3) for c in ("P", "CN")))
    items = cbt_jsonl(str(path), 4, ["P", "CN"], seed=0)
    assert len(items) == 4 and sorted(i.word_class for i in items) == ["CN", "CN", "P", "P"]
    assert all(i.answer in i.candidates and BLANK in i.query and len(i.context) == 20 for i in items)
    path.write_text(json.dumps(row(0, "P")) + "\n{broken\n")
    with pytest.raises(UsageError, match=r"cbt.jsonl:2: not JSON"):
        cbt_jsonl(str(path), 1, ["P"], seed=0)
    bad = row(0, "P")
    bad["answer"] = "beside"
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(UsageError, match="answer must be among the options"):
        cbt_jsonl(str(path), 1, ["P"], seed=0)


def test_items_never_come_from_statistics_documents(tmp_path, tagger, tokenizer):
    """Selective pruning protects the retain statistics text by design: cloze items measured on it
    would flatter every method. Items come from documents that filled no statistics window."""
    import json

    from unlearn_core.corpora import BUILTIN_CORPORA, build_windows
    from unlearn_core.interfaces import EvalContext
    from unlearn_evals.cloze import prepare_cloze

    corpora = {c.name: c for c in BUILTIN_CORPORA}
    path = tmp_path / "stories.jsonl"
    path.write_text("".join(json.dumps({"text": prose(60, seed=i)}) + "\n" for i in range(30)))
    spec = f"jsonl:{path}"
    windows = build_windows(spec, corpora, tokenizer, 8192, 256, 64, seed=1)
    ctx = EvalContext(None, tokenizer, seed=1, forget_spec="python", retain_spec=spec, corpora=corpora,
                      windows={"retain": windows})
    harness = prepare_cloze(ClozeOptions(items=8), ctx)
    flat = lambda text: " ".join(text.split())  # noqa: E731
    stats_text = flat(tokenizer.decode(windows.stats.flatten().tolist()))
    held_out = flat(" ".join(windows.held_out_texts(corpora)))
    assert len(harness.items) == 8 and len(windows.stats_documents) >= 3
    for item in harness.items:
        query = flat(item.query.replace(BLANK, item.answer))
        assert query in held_out and query not in stats_text
        assert not any(flat(s) in stats_text for s in item.context)
