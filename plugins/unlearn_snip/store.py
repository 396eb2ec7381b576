"""A persistent store of neuron explanations and other LLM answers, in one SQLite file.

Explaining every neuron of a model costs hours and money, so every answer is kept: a run commits
after each batch (`put` is one transaction), and a run that is killed resumes with `missing`.
Explanations are keyed by everything that changes them: the model's fingerprint, the neuron site,
the layer and neuron, the explainer, the prompt version and the probe (which text the activation
records came from: a digest of the probe windows, or IMPORTED for published explanations), so an
explanation built from one text is never reused as if it came from another.

    store = ExplanationStore("explanations.sqlite")
    key = (fp, "mlp", "openai", PROMPT_VERSION, probe)
    todo = store.missing(*key, neurons)
    for batch in chunks(todo):
        store.put(*key, dict(zip(batch, explainer.explain(...))))
    texts = store.get(*key, neurons)

`import_jsonl` reads explanations published in the layout of OpenAI's neuron-explainer
(openai/automated-interpretability, neuron_explainer/explanations/explanations.py): one
`NeuronSimulationResults` JSON object per line,

    {"dataclass_name": "NeuronSimulationResults",
     "neuron_id": {"layer_index": 0, "neuron_index": 7},
     "scored_explanations": [{"explanation": " the word 'the'",
                              "scored_simulation": {"ev_correlation_score": 0.41, ...}}, ...]}

either in one .jsonl file or in a folder of `{layer}/{neuron}.jsonl` files (how the published
`explanations/` folder is laid out). The explanation with the highest `ev_correlation_score` (the
score neuron-explainer prefers) is kept per neuron, together with that score; blank explanations
are skipped. `read_explanations` reads them (before any model loads), `check_neurons` checks
their ids against a site, `put_imported` stores all of them or none.

The store never holds an empty explanation (a later run would take it for an answer), creates its
file with the first write, and refuses a file that is not a store, or a newer store, before
writing anything to it.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from unlearn_core import NeuronId, UsageError, loads_json

SCHEMA_VERSION = 2
IMPORTED = "imported"  # the probe of explanations imported from published files
LEGACY = "unknown (store schema 1)"  # schema-1 rows: their probe text was not recorded

# Migration n brings a database from version n - 1 to version n. Append, never edit.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE explanations (
               model_fingerprint TEXT NOT NULL, site TEXT NOT NULL, explainer TEXT NOT NULL,
               prompt_version TEXT NOT NULL, layer INTEGER NOT NULL, neuron INTEGER NOT NULL,
               explanation TEXT NOT NULL, score REAL, source TEXT NOT NULL, created TEXT NOT NULL,
               PRIMARY KEY (model_fingerprint, site, explainer, prompt_version, layer, neuron)
           ) WITHOUT ROWID""",
        """CREATE TABLE cache (
               kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, created TEXT NOT NULL,
               PRIMARY KEY (kind, key)
           ) WITHOUT ROWID""",
    ),
    # The probe joins the key. Schema-1 explanations may come from evaluation text (unlearn explain
    # read the bench's evaluation windows): they are kept under LEGACY, which no run asks for.
    2: (
        """CREATE TABLE explanations_2 (
               model_fingerprint TEXT NOT NULL, site TEXT NOT NULL, explainer TEXT NOT NULL,
               prompt_version TEXT NOT NULL, probe TEXT NOT NULL, layer INTEGER NOT NULL,
               neuron INTEGER NOT NULL, explanation TEXT NOT NULL, score REAL, source TEXT NOT NULL,
               created TEXT NOT NULL,
               PRIMARY KEY (model_fingerprint, site, explainer, prompt_version, probe, layer, neuron)
           ) WITHOUT ROWID""",
        f"""INSERT INTO explanations_2 SELECT model_fingerprint, site, explainer, prompt_version,
               CASE WHEN source LIKE 'import:%' THEN '{IMPORTED}' ELSE '{LEGACY}' END,
               layer, neuron, explanation, score, source, created FROM explanations""",
        "DROP TABLE explanations",
        "ALTER TABLE explanations_2 RENAME TO explanations",
    ),
}

_KEY = "model_fingerprint = ? AND site = ? AND explainer = ? AND prompt_version = ? AND probe = ?"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_schema(db: sqlite3.Connection, path: Path) -> None:
    """Read only: a database with tables but no schema_version is not a store; a newer one is refused."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" in tables:
        _schema_version(db, path)
    elif tables:
        raise UsageError(f"{path} is an SQLite database but not an explanation store (tables: "
                         f"{', '.join(sorted(tables)[:5])}); choose another store file")


def _check_creatable(path: Path) -> None:
    """A store file can be created at `path`: its nearest existing ancestor is a writable folder."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot open explanation store {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot open explanation store {path}: {folder} is not writable")


def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    """The store's schema version (0 for a new file); a newer or malformed one is refused."""
    (version,) = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    version = 0 if version is None else version
    if not isinstance(version, int) or version < 0:
        raise UsageError(f"explanation store {path} has a malformed schema version; it is not a store "
                         "this program wrote")
    if version > SCHEMA_VERSION:
        raise UsageError(f"explanation store {path} has schema version {version}; this version of "
                         f"unlearn reads up to {SCHEMA_VERSION}: upgrade unlearn")
    return version


class ExplanationStore:
    """Explanations and cached LLM answers in a SQLite file (WAL mode, safe to kill at any time).
    A new store's file is created by its first write, so a run that fails before it has anything
    to store leaves no file behind."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        ExplanationStore.check(self.path)
        if self.path.exists():
            self._connect()

    @staticmethod
    def check(path: str | Path) -> None:
        """Refuse, without creating or changing anything, a store that `ExplanationStore(path)`
        would refuse (a folder, not a store, a newer schema, a place no file can be created):
        cheap, before any model loads."""
        path = Path(path)
        if path.is_dir():
            raise UsageError(f"explanation store {path} is a directory; give a file path")
        if not path.exists():
            _check_creatable(path)
            return
        try:
            db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=30)
        except (OSError, sqlite3.Error) as e:
            raise UsageError(f"cannot open explanation store {path}: {e}") from None
        try:
            _check_schema(db, path)
        except sqlite3.Error as e:  # e.g. "file is not a database"
            raise UsageError(f"cannot open explanation store {path}: {e}") from None
        finally:
            db.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """The open database, opened (and created, when new) on first use."""
        if self._db is not None:
            return self._db
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise UsageError(f"cannot open explanation store {self.path}: {e}") from None
        try:
            # Refuse a newer store or another program's database before anything writes to it:
            # switching to WAL rewrites the file's header.
            _check_schema(db, self.path)
            db.execute("PRAGMA journal_mode=WAL")
            self._db = db
            self._migrate()
        except (sqlite3.Error, UsageError) as e:
            self._db = None
            db.close()
            if isinstance(e, UsageError):
                raise
            raise UsageError(f"cannot open explanation store {self.path}: {e}") from None
        return db

    def _reader(self) -> sqlite3.Connection | None:
        """The database to read; None while no file exists (there is nothing to read)."""
        return self._connect() if self._db is not None or self.path.exists() else None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is kept, or none of it (also when the process dies)."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:  # locked, read-only, disk full: the user can fix these
            raise UsageError(f"cannot write explanation store {self.path}: {e}") from None

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION; a file written by a newer version is refused."""
        with self._transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            version = _schema_version(db, self.path)  # again: another process may have changed it
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    db.execute(statement)
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version VALUES (?)", (target,))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ExplanationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- explanations -----------------------------------------------------------------------

    def _rows(self, model_fp: str, site: str, explainer: str,
              prompt_version: str, probe: str) -> dict[NeuronId, tuple[str, float | None]]:
        """Every stored (explanation, score) under one key; one indexed range scan."""
        db = self._reader()
        if db is None:
            return {}
        rows = db.execute(f"SELECT layer, neuron, explanation, score FROM explanations WHERE {_KEY}",
                                (model_fp, site, explainer, prompt_version, probe))
        return {NeuronId(layer, neuron): (text, score) for layer, neuron, text, score in rows}

    def get(self, model_fp: str, site: str, explainer: str, prompt_version: str, probe: str,
            neurons: Iterable[NeuronId]) -> dict[NeuronId, str]:
        """The stored explanations of those `neurons` that have one."""
        rows = self._rows(model_fp, site, explainer, prompt_version, probe)
        return {n: rows[n][0] for n in neurons if n in rows}

    def scores(self, model_fp: str, site: str, explainer: str, prompt_version: str, probe: str,
               neurons: Iterable[NeuronId]) -> dict[NeuronId, float]:
        """The known scores (e.g. neuron-explainer's ev_correlation_score) of those `neurons`."""
        rows = self._rows(model_fp, site, explainer, prompt_version, probe)
        return {n: rows[n][1] for n in neurons if n in rows and rows[n][1] is not None}

    def missing(self, model_fp: str, site: str, explainer: str, prompt_version: str, probe: str,
                neurons: Iterable[NeuronId]) -> list[NeuronId]:
        """The `neurons` still to explain, in input order, each once: what a resumed run does next."""
        rows = self._rows(model_fp, site, explainer, prompt_version, probe)
        return list(dict.fromkeys(n for n in neurons if n not in rows))

    def count(self, model_fp: str, site: str, explainer: str, prompt_version: str, probe: str) -> int:
        """How many explanations are stored under this key."""
        db = self._reader()
        if db is None:
            return 0
        (n,) = db.execute(f"SELECT COUNT(*) FROM explanations WHERE {_KEY}",
                                (model_fp, site, explainer, prompt_version, probe)).fetchone()
        return int(n)

    def put(self, model_fp: str, site: str, explainer: str, prompt_version: str, probe: str,
            items: Mapping[NeuronId, str], source: str = "explainer") -> None:
        """Store one batch in one transaction (replacing older answers for the same neurons).
        An empty explanation is refused (ValueError): a later run would take it for an answer."""
        rows = [(n, _explanation(text), None) for n, text in items.items()]
        self._put(model_fp, site, explainer, prompt_version, probe, rows, source)

    def _put(self, model_fp: str, site: str, explainer: str, prompt_version: str, probe: str,
             rows: Iterable[tuple[NeuronId, str, float | None]], source: str) -> None:
        created = _now()
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO explanations (model_fingerprint, site, explainer, prompt_version,"
                " probe, layer, neuron, explanation, score, source, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((model_fp, site, explainer, prompt_version, probe, n.layer, n.index, _explanation(text),
                  score, source, created) for n, text, score in rows))

    # -- other LLM answers ------------------------------------------------------------------

    def get_cached_many(self, kind: str, keys: Iterable[str]) -> dict[str, str]:
        """The cached answers among `keys` (e.g. one rating per explanation)."""
        wanted = set(keys)
        db = self._reader()
        if db is None:
            return {}
        rows = db.execute("SELECT key, value FROM cache WHERE kind = ?", (kind,))
        return {k: str(v) for k, v in rows if k in wanted}

    def put_cached_many(self, kind: str, items: Mapping[str, str]) -> None:
        """Cache many answers in one transaction."""
        created = _now()
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO cache (kind, key, value, created) VALUES (?, ?, ?, ?)",
                           ((kind, k, _text(v), created) for k, v in items.items()))

    def get_cached(self, kind: str, key: str) -> str | None:
        """A cached answer (e.g. a dataset's concept list as JSON text), or None."""
        db = self._reader()
        row = None if db is None else db.execute("SELECT value FROM cache WHERE kind = ? AND key = ?",
                                                 (kind, key)).fetchone()
        return None if row is None else str(row[0])

    def put_cached(self, kind: str, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO cache (kind, key, value, created) VALUES (?, ?, ?, ?)",
                       (kind, key, _text(value), _now()))

    # -- published explanations -------------------------------------------------------------

    def import_jsonl(self, path: str | Path, model_fp: str, site: str, explainer: str,
                     prompt_version: str, probe: str, shape: tuple[int, int] | None = None) -> int:
        """Import neuron-explainer explanation files (one file, or a `{layer}/{neuron}.jsonl` folder),
        keeping each neuron's best-scored explanation; with `shape` (layers, neurons per layer) a
        neuron the site does not have is refused. All of it is stored, or nothing. Returns the
        number of neurons imported."""
        found = read_explanations(path)
        if shape is not None:
            check_neurons(found, shape)
        self.put_imported(found, model_fp, site, explainer, prompt_version, probe, f"import:{path}")
        return len(found)

    def put_imported(self, found: Mapping[NeuronId, Imported], model_fp: str, site: str, explainer: str,
                     prompt_version: str, probe: str, source: str) -> None:
        """Store what `read_explanations` found, in one transaction."""
        self._put(model_fp, site, explainer, prompt_version, probe,
                  ((n, e.text, e.score) for n, e in sorted(found.items())), source)


@dataclass(frozen=True)
class Imported:
    """A neuron's best published explanation, its score and where it was read (file:line)."""

    text: str
    score: float | None
    where: str


def read_explanations(path: str | Path) -> dict[NeuronId, Imported]:
    """Each neuron's best-scored explanation in neuron-explainer files (one file, or a folder of
    `{layer}/{neuron}.jsonl`). Bad input is a UsageError naming the file and line."""
    path = Path(path)
    best: dict[NeuronId, Imported] = {}
    for file, expected in _explanation_files(path):
        for number, (neuron, text, score) in _read_explanation_file(file, expected):
            if neuron not in best or _rank(score) > _rank(best[neuron].score):
                best[neuron] = Imported(text, score, f"{file}:{number}")
    return best


def check_neurons(found: Mapping[NeuronId, Imported], shape: tuple[int, int]) -> None:
    """Refuse a neuron outside a site of `shape` (layers, neurons per layer), naming where it was read."""
    layers, per_layer = shape
    for neuron, imported in sorted(found.items()):
        if neuron.layer >= layers or neuron.index >= per_layer:
            raise UsageError(f"{imported.where}: neuron_id {neuron.layer}/{neuron.index} is not in the model's "
                             f"site ({layers} layers of {per_layer} neurons, numbered from 0)")


def _explanation(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"refusing to store an empty explanation ({value!r})")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text to store, got {type(value).__name__}")
    return value


def _rank(score: float | None) -> tuple[bool, float]:
    """Scored explanations beat unscored ones; then higher is better."""
    return (score is not None, score if score is not None else 0.0)


def _explanation_files(path: Path) -> list[tuple[Path, NeuronId | None]]:
    """The files to read and, in a folder, the neuron each one's path names."""
    if path.is_file():
        return [(path, None)]
    if not path.is_dir():
        raise UsageError(f"cannot read explanations from {path}: no such file or folder")
    found = [(f, NeuronId(int(f.parent.name), int(f.stem))) for f in path.glob("*/*.jsonl")
             if _is_number(f.parent.name) and _is_number(f.stem)]
    if not found:
        raise UsageError(f"no neuron-explainer files ({{layer}}/{{neuron}}.jsonl) under {path}")
    return sorted(found, key=lambda item: item[1])


Parsed = tuple[NeuronId, str, float | None]  # a neuron, its best explanation and that one's score


def _read_explanation_file(file: Path, expected: NeuronId | None) -> Iterator[tuple[int, Parsed]]:
    """Each line's number, neuron, best explanation and its score. Bad lines are named by file and number."""
    try:
        with file.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    parsed = _parse_results(loads_json(line))
                except ValueError as e:  # also JSONDecodeError, and JSON nested too deeply
                    detail = f"not JSON ({e.msg})" if isinstance(e, json.JSONDecodeError) else str(e)
                    raise UsageError(f"{file}:{number}: {detail}") from None
                if parsed is None:
                    continue
                if expected is not None and parsed[0] != expected:
                    raise UsageError(f"{file}:{number}: neuron_id {parsed[0].layer}/{parsed[0].index} does "
                                     f"not match the file's path")
                yield number, parsed
    except UnicodeDecodeError:
        raise UsageError(f"cannot read explanations from {file}: not UTF-8 text") from None
    except OSError as e:
        raise UsageError(f"cannot read explanations from {file}: {e.strerror or e}") from None


def _parse_results(obj: object) -> Parsed | None:
    """One NeuronSimulationResults object -> (neuron, best explanation, its score); None if it has none."""
    if not isinstance(obj, dict):
        raise ValueError("expected a NeuronSimulationResults object")
    neuron_id = obj.get("neuron_id")
    if not isinstance(neuron_id, dict):
        raise ValueError("missing neuron_id {layer_index, neuron_index}")
    layer, index = neuron_id.get("layer_index"), neuron_id.get("neuron_index")
    if not (_is_index(layer) and _is_index(index)):
        raise ValueError("neuron_id needs non-negative integer layer_index and neuron_index")
    scored = obj.get("scored_explanations")
    if not isinstance(scored, list):
        raise ValueError("missing scored_explanations list")
    best: tuple[str, float | None] | None = None
    for i, item in enumerate(scored):
        text = item.get("explanation") if isinstance(item, dict) else None
        simulation = item.get("scored_simulation") if isinstance(item, dict) else None
        if not isinstance(text, str) or not isinstance(simulation, dict):
            raise ValueError(f"scored_explanations[{i}] needs an explanation and a scored_simulation")
        if not text.strip():
            continue  # a blank explanation says nothing: never stored
        score = simulation.get("ev_correlation_score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
            raise ValueError(f"scored_explanations[{i}].scored_simulation.ev_correlation_score is not a number")
        score = None if score is None or math.isnan(score) else float(score)  # NaN: undefined score
        if best is None or _rank(score) > _rank(best[1]):
            best = (text.strip(), score)
    return None if best is None else (NeuronId(layer, index), best[0], best[1])


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(name: str) -> bool:
    return name.isascii() and name.isdigit()  # '²'.isdigit() is True, but int('²') fails
