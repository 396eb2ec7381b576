"""Corpora: seeded, disjoint statistics/evaluation windows, clear errors."""

import json

import pytest

from unlearn_core.corpora import BUILTIN_CORPORA, build_windows, parse_spec
from unlearn_core.errors import UsageError

CORPORA = {c.name: c for c in BUILTIN_CORPORA}


def _windows(spec, tokenizer, seed=0, stats=512, eval_=256, window=64):
    return build_windows(spec, CORPORA, tokenizer, stats, eval_, window, seed)


def _doc_ids(tokenizer, windows):
    """The 'DOC<n>' markers present in a set of windows."""
    text = tokenizer.decode(windows.flatten().tolist())
    return {w for w in text.replace("\n", " ").split() if w.startswith("DOC") and w[3:].isdigit()}


@pytest.mark.parametrize("name", ["python", "shakespeare"])
def test_builtin_corpora_are_seeded_and_sized(name, tokenizer):
    a = _windows(name, tokenizer, seed=1)
    b = _windows(name, tokenizer, seed=1)
    c = _windows(name, tokenizer, seed=2)
    assert a.stats.shape == (8, 64) and a.eval.shape == (4, 64)
    assert (a.stats == b.stats).all() and (a.eval == b.eval).all()
    assert not (a.eval == c.eval).all()
    assert a.identity()["sha256"] == b.identity()["sha256"] != c.identity()["sha256"]


def test_documents_go_to_one_split_only(tmp_path, tokenizer):
    path = tmp_path / "docs.jsonl"
    with path.open("w") as f:
        for i in range(400):
            f.write(json.dumps({"body": f"DOC{i} " + "word " * 20}) + "\n")
    w = _windows(f"jsonl:{path}:body", tokenizer, stats=2048, eval_=1024)
    stats_docs, eval_docs = _doc_ids(tokenizer, w.stats), _doc_ids(tokenizer, w.eval)
    assert stats_docs and eval_docs
    assert not stats_docs & eval_docs
    assert w.documents >= len(stats_docs | eval_docs)


def test_text_folder_and_jsonl_default_field(tmp_path, tokenizer):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(30):
        (folder / f"{i}.txt").write_text(f"DOC{i} " + "alpha beta gamma " * 30)
    w = _windows(f"text:{folder}", tokenizer)
    assert w.stats.shape == (8, 64)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": "delta " * 50}) + "\n" for _ in range(40)))
    assert _windows(f"jsonl:{rows}", tokenizer).eval.shape == (4, 64)


def test_local_dataset_streams_through_datasets(tmp_path, tokenizer):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"content": f"DOC{i} " + "epsilon " * 30}) + "\n" for i in range(200)))
    a = _windows(f"hf:{folder}", tokenizer, seed=3)
    b = _windows(f"hf:{folder}", tokenizer, seed=3)
    assert (a.stats == b.stats).all()
    assert not _doc_ids(tokenizer, a.stats) & _doc_ids(tokenizer, a.eval)


def test_too_small_corpus_is_a_clear_error(tmp_path, tokenizer):
    small = tmp_path / "small.txt"
    small.write_text("just a few words\n")
    with pytest.raises(UsageError, match="too small: it has [0-9]+ tokens"):
        _windows(f"text:{small}", tokenizer)


@pytest.mark.parametrize("spec, message", [
    ("pyton", "unknown corpus 'pyton' (did you mean 'python'?)"),
    ("text", "needs an argument: text:PATH"),
    ("python:x", "takes no argument"),
])
def test_bad_specs(spec, message):
    with pytest.raises(UsageError) as e:
        parse_spec(spec, CORPORA)
    assert message in str(e.value)


def test_bad_paths_and_fields(tmp_path, tokenizer):
    with pytest.raises(UsageError, match="not a readable file or folder"):
        _windows(f"text:{tmp_path / 'missing.txt'}", tokenizer)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UsageError, match="no field 'text'"):
        _windows(f"jsonl:{rows}", tokenizer)
    rows.write_text("{not json\n")
    with pytest.raises(UsageError, match="not JSON"):
        _windows(f"jsonl:{rows}", tokenizer)
