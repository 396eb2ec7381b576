"""Corpora: seeded, disjoint statistics/evaluation windows, clear errors."""

import json

import pytest
import torch
from tiny import bos_tokenizer

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


def _numbered_documents(path, count: int, words: int, field: str = "text"):
    """A JSON-lines corpus of `count` documents 'DOC<i> word word ...', each findable by its number."""
    with path.open("w") as f:
        for i in range(count):
            f.write(json.dumps({field: f"DOC{i} " + "word " * words}) + "\n")
    return path


def test_documents_go_to_one_split_only(tmp_path, tokenizer):
    path = _numbered_documents(tmp_path / "docs.jsonl", 400, words=20, field="body")
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


def test_python_corpus_leaves_out_generated_tables_and_has_no_near_copies():
    import itertools
    import sysconfig
    from pathlib import Path

    from unlearn_core.corpora import python_stdlib_files

    root = Path(sysconfig.get_paths()["stdlib"])
    files = python_stdlib_files()
    names = {p.relative_to(root).as_posix() for p in files}
    assert len(files) > 400 and "argparse.py" in names and "json/decoder.py" in names
    assert not [n for n in names if n.startswith(("encodings/", "pydoc_data/", "test/", "idlelib/"))]
    assert not names & {"stringprep.py", "re/_casefix.py", "html/entities.py"}
    # No module shares 90 % of its distinct lines with another (the codec tables share ~95 %).
    lines = {}
    for p in files:
        distinct = {line.strip() for line in p.read_text(errors="replace").splitlines()}
        lines[p] = {line for line in distinct if len(line) >= 12}
    near = [(a.name, b.name) for (a, la), (b, lb) in itertools.combinations(lines.items(), 2)
            if min(len(la), len(lb)) >= 30 and len(la & lb) / min(len(la), len(lb)) >= 0.9]
    assert near == []


def _long_docs(tmp_path, n=40, lines=400):
    """JSONL documents longer than one piece, every line naming its document."""
    path = tmp_path / "long.jsonl"
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"text": "".join(f"DOC{i} line {j} of a long document\n"
                                                for j in range(lines))}) + "\n")
    return path


def test_a_long_document_stays_on_one_side_of_the_split(tmp_path, tokenizer):
    path = _long_docs(tmp_path, n=4, lines=2400)  # about ten pieces a document
    for spec in (f"jsonl:{path}", f"hf:{tmp_path}"):  # shuffled pieces (local) and a stream (datasets)
        if spec.startswith("hf:"):
            path.rename(tmp_path / "train.jsonl")
        for seed in range(3):
            w = _windows(spec, tokenizer, seed=seed, stats=16384, eval_=8192, window=64)
            stats_docs, eval_docs = _doc_ids(tokenizer, w.stats), _doc_ids(tokenizer, w.eval)
            assert stats_docs and eval_docs
            assert not stats_docs & eval_docs, (spec, seed, stats_docs & eval_docs)
            if spec.startswith("jsonl:"):  # documents are numbered by row
                assert {f"DOC{d}" for d in w.stats_documents} == stats_docs
        if spec.startswith("hf:"):
            (tmp_path / "train.jsonl").rename(path)


def test_windows_start_with_bos_where_the_tokenizer_uses_one(tokenizer):
    from unlearn_core.corpora import leading_bos

    assert leading_bos(tokenizer) is None
    plain = _windows("python", tokenizer, seed=4)
    assert not plain.bos and not (plain.stats[:, 0] == 0).all()
    bos_tok = bos_tokenizer()
    assert leading_bos(bos_tok) == 0
    w = _windows("python", bos_tok, seed=4)
    assert w.bos and w.identity()["bos"]
    assert w.stats.shape == (8, 64) and w.eval.shape == (4, 64)
    assert (w.stats[:, 0] == 0).all() and (w.eval[:, 0] == 0).all()
    # The text after the BOS is the plain stream: the first window holds the same tokens, one fewer.
    assert torch.equal(w.eval[0, 1:], plain.eval[0, :63])


def test_held_out_texts_leave_out_every_statistics_document(tmp_path, tokenizer):
    path = _numbered_documents(tmp_path / "docs.jsonl", 300, words=30)
    w = _windows(f"jsonl:{path}", tokenizer, stats=1024, eval_=512)
    held_out = " ".join(w.held_out_texts(CORPORA))
    kept = {t for t in held_out.split() if t.startswith("DOC")}
    stats_docs = _doc_ids(tokenizer, w.stats)
    assert stats_docs and not kept & stats_docs
    assert _doc_ids(tokenizer, w.eval) <= kept  # evaluation text is held out too
    assert len(kept) + len(w.stats_documents) == 300
