"""The SNIP explanation store: real SQLite files, a real killed process, neuron-explainer imports."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_core import NeuronId
from unlearn_core.errors import UsageError
from unlearn_snip.store import SCHEMA_VERSION, ExplanationStore

ROOT = Path(__file__).resolve().parent.parent

KEY = ("gpt2:abc123", "mlp", "openai", "neuron-explainer-v1", "mix:0123456789abcdef:k5")


@pytest.fixture
def store(tmp_path):
    with ExplanationStore(tmp_path / "store.sqlite") as s:
        yield s


def test_roundtrip_and_keys_kept_apart(store):
    neurons = [NeuronId(0, 3), NeuronId(1, 0), NeuronId(11, 3071)]
    store.put(*KEY, {n: f"base {n.layer}/{n.index}" for n in neurons})
    variants = {i: tuple(f"other-{v}" if j == i else v for j, v in enumerate(KEY)) for i in range(5)}
    for i, key in variants.items():  # another fingerprint, site, explainer, prompt version, probe
        store.put(*key, {neurons[0]: f"variant {i}"})

    assert store.get(*KEY, neurons) == {n: f"base {n.layer}/{n.index}" for n in neurons}
    assert store.count(*KEY) == 3
    for i, key in variants.items():
        assert store.get(*key, neurons) == {neurons[0]: f"variant {i}"}
        assert store.count(*key) == 1
    assert store.get(*KEY, [NeuronId(5, 5)]) == {}
    store.put(*KEY, {neurons[1]: "re-explained"})  # a later answer replaces the older one
    assert store.get(*KEY, [neurons[1]]) == {neurons[1]: "re-explained"}
    assert store.count(*KEY) == 3


def test_missing_keeps_input_order(store):
    store.put(*KEY, {NeuronId(0, 1): "a", NeuronId(2, 0): "b"})
    asked = [NeuronId(3, 9), NeuronId(0, 1), NeuronId(0, 0), NeuronId(2, 0), NeuronId(1, 5), NeuronId(0, 0)]
    assert store.missing(*KEY, asked) == [NeuronId(3, 9), NeuronId(0, 0), NeuronId(1, 5)]
    assert store.missing(*KEY, [NeuronId(0, 1)]) == []


def test_cache_roundtrip(store):
    assert store.get_cached("concepts", "corpus-1|openai|v1") is None
    store.put_cached("concepts", "corpus-1|openai|v1", json.dumps(["poetry", "rhyme"]))
    store.put_cached("ratings", "corpus-1|openai|v1", "[]")
    assert json.loads(store.get_cached("concepts", "corpus-1|openai|v1")) == ["poetry", "rhyme"]
    store.put_cached("concepts", "corpus-1|openai|v1", '["meter"]')
    assert store.get_cached("concepts", "corpus-1|openai|v1") == '["meter"]'
    assert store.get_cached("ratings", "corpus-1|openai|v1") == "[]"
    assert store.get_cached("concepts", "corpus-2|openai|v1") is None


def test_second_store_on_the_same_file_sees_the_data(tmp_path):
    path = tmp_path / "nested" / "store.sqlite"
    first = ExplanationStore(path)
    first.put(*KEY, {NeuronId(4, 2): "commas in lists"})
    first.put_cached("concepts", "k", '["x"]')
    with ExplanationStore(path) as second:  # while the first is still open (WAL readers)
        assert second.get(*KEY, [NeuronId(4, 2)]) == {NeuronId(4, 2): "commas in lists"}
        second.put(*KEY, {NeuronId(4, 3): "semicolons"})
    assert first.get(*KEY, [NeuronId(4, 3)]) == {NeuronId(4, 3): "semicolons"}
    first.close()
    with ExplanationStore(path) as third:
        assert third.count(*KEY) == 2 and third.get_cached("concepts", "k") == '["x"]'
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


def _one_line_usage_error(excinfo: pytest.ExceptionInfo[UsageError]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def test_bad_database_paths(tmp_path):
    with pytest.raises(UsageError) as e:
        ExplanationStore(tmp_path)
    assert "is a directory" in _one_line_usage_error(e)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError) as e:
        ExplanationStore(blocker / "store.sqlite")
    assert "cannot open explanation store" in _one_line_usage_error(e)
    with pytest.raises(UsageError) as e:
        ExplanationStore(blocker)  # a file that is no SQLite database
    assert "not a database" in _one_line_usage_error(e)


def test_a_new_store_is_created_by_its_first_write(tmp_path):
    """A run that fails before it has anything to store leaves no file."""
    path = tmp_path / "new" / "store.sqlite"
    with ExplanationStore(path) as store:
        assert store.get(*KEY, [NeuronId(0, 0)]) == {}
        assert store.missing(*KEY, [NeuronId(0, 0)]) == [NeuronId(0, 0)]
        assert store.count(*KEY) == 0 and store.get_cached("concepts", "k") is None
        assert store.get_cached_many("rating", ["a"]) == {}
    assert not (tmp_path / "new").exists()
    with ExplanationStore(path) as store:
        with ExplanationStore(path) as other:  # created by another process meanwhile: seen
            other.put(*KEY, {NeuronId(0, 0): "commas"})
        assert store.get(*KEY, [NeuronId(0, 0)]) == {NeuronId(0, 0): "commas"}
        store.put_cached("concepts", "k", "[]")
    assert path.is_file()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "store.sqlite"
    with ExplanationStore(path) as store:
        store.put_cached("concepts", "k", "[]")
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(UsageError) as e:
        ExplanationStore(path)
    assert f"schema version {SCHEMA_VERSION + 1}" in _one_line_usage_error(e)


def _sqlite_file(path: Path, *statements: str) -> Path:
    """A database in SQLite's default (rollback journal) mode, as another program or an older
    sqlite3 would leave it."""
    db = sqlite3.connect(path)
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()
    return path


@pytest.mark.parametrize("make, said", [
    (lambda p: _sqlite_file(p, "CREATE TABLE schema_version (version INTEGER NOT NULL)",
                            f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1})"),
     f"schema version {SCHEMA_VERSION + 1}"),
    (lambda p: _sqlite_file(p, "CREATE TABLE schema_version (version)",
                            "INSERT INTO schema_version VALUES ('x')"),
     "malformed schema version"),
    (lambda p: _sqlite_file(p, "CREATE TABLE users (name TEXT)", "INSERT INTO users VALUES ('ann')"),
     "not an explanation store (tables: users)"),
    (lambda p: p.write_text("name,score\nann,3\n" * 200) and p, "not a database"),
])
def test_a_refused_file_is_left_exactly_as_it_was(tmp_path, make, said):
    """Opening must check before it writes: switching to WAL rewrites a database's header, and the
    migration would add tables to another program's database."""
    path = make(tmp_path / "store.sqlite")
    before = path.read_bytes()
    for opening in (ExplanationStore.check, ExplanationStore):
        with pytest.raises(UsageError) as e:
            opening(path)
        assert said in _one_line_usage_error(e)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.sqlite"]  # no -wal or -shm left


def test_check_creates_nothing_and_passes_a_store(tmp_path):
    ExplanationStore.check(tmp_path / "new" / "store.sqlite")
    assert list(tmp_path.iterdir()) == []
    with ExplanationStore(tmp_path / "store.sqlite") as store:
        store.put_cached("concepts", "k", "[]")
    ExplanationStore.check(tmp_path / "store.sqlite")
    with pytest.raises(UsageError, match="is a directory"):
        ExplanationStore.check(tmp_path)


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None, 7])
def test_an_empty_explanation_is_never_stored(store, text):
    """A later run would take it for an answer and never ask again."""
    with pytest.raises(ValueError, match="empty explanation"):
        store.put(*KEY, {NeuronId(0, 0): "commas", NeuronId(0, 1): text})
    assert store.count(*KEY) == 0  # nothing of the batch


# -- resume after a kill -------------------------------------------------------------------------

BATCH, BATCHES = 40, 12
CHILD = f"""
import sys, time
from collections.abc import Mapping
sys.path[:0] = [sys.argv[2], sys.argv[2] + "/plugins"]
from unlearn_core import NeuronId
from unlearn_snip.store import ExplanationStore

class StallingBatch(Mapping):
    # Stalls halfway through being written, so the parent kills it inside the transaction.
    def __init__(self, b):
        self.b = b
    def __getitem__(self, n):
        return f"batch {{n.layer}} neuron {{n.index}}"
    def __len__(self):
        return {BATCH}
    def __iter__(self):
        for i in range({BATCH}):
            if i == {BATCH} // 2:
                print("inside", self.b, flush=True)
                time.sleep(0.2)
            yield NeuronId(self.b, i)

store = ExplanationStore(sys.argv[1])
for b in range({BATCHES}):
    store.put("fp", "mlp", "openai", "v1", "probe", StallingBatch(b))
    print("committed", b, flush=True)
"""


def test_resume_after_sigkill(tmp_path):
    path = tmp_path / "store.sqlite"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(ROOT)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        while "inside 3" not in seen:  # batches 0-2 committed, batch 3 half written
            line = child.stdout.readline()
            assert line, f"child ended early: {seen} {child.stderr.read()}"
            seen.append(line.strip())
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    assert seen[-2:] == ["committed 2", "inside 3"]

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    key = ("fp", "mlp", "openai", "v1", "probe")
    everything = [NeuronId(b, i) for b in range(BATCHES) for i in range(BATCH)]
    with ExplanationStore(path) as store:
        done = store.get(*key, everything)
        assert done == {n: f"batch {n.layer} neuron {n.index}" for n in everything[:3 * BATCH]}
        assert store.count(*key) == 3 * BATCH
        assert store.missing(*key, everything) == everything[3 * BATCH:]
        store.put(*key, {n: "resumed" for n in store.missing(*key, everything)})
        assert store.missing(*key, everything) == [] and store.count(*key) == len(everything)


# -- neuron-explainer imports --------------------------------------------------------------------

def _scored_explanation(text: str, score: float | None) -> dict:
    """A ScoredExplanation as neuron-explainer's fast_dataclasses serializes it."""
    sequence = {"dataclass_name": "SequenceSimulation", "tokens": [" the", " cat", " sat"],
                "expected_activations": [0.1, 3.2, 0.0], "activation_scale": "neuron_activations",
                "distribution_values": [[0, 1], [2, 4], [0]],
                "distribution_probabilities": [[0.9, 0.1], [0.5, 0.5], [1.0]], "uncalibrated_simulation": None}
    return {"dataclass_name": "ScoredExplanation", "explanation": text,
            "scored_simulation": {"dataclass_name": "ScoredSimulation",
                                  "scored_sequence_simulations": [
                                      {"dataclass_name": "ScoredSequenceSimulation", "simulation": sequence,
                                       "true_activations": [0.0, 2.7, -0.1], "ev_correlation_score": 0.8,
                                       "rsquared_score": 0.5, "absolute_dev_explained_score": 0.3}],
                                  "ev_correlation_score": score, "rsquared_score": None,
                                  "absolute_dev_explained_score": None}}


def _results(layer: int, neuron: int, *explanations: tuple[str, float | None]) -> str:
    """One NeuronSimulationResults line."""
    return json.dumps({"dataclass_name": "NeuronSimulationResults",
                       "neuron_id": {"dataclass_name": "NeuronId", "layer_index": layer,
                                     "neuron_index": neuron},
                       "scored_explanations": [_scored_explanation(t, s) for t, s in explanations]})


def test_import_jsonl_keeps_the_best_scored_explanation(store, tmp_path):
    file = tmp_path / "explanations.jsonl"
    file.write_text("\n".join([
        _results(0, 7, (" the word 'cat'", 0.12), (" animals and pets", 0.64), (" nouns", 0.31)),
        _results(3, 1, (" undefined", math.nan), (" closing brackets", -0.05)),  # scored beats NaN
        _results(5, 2, (" only unscored", None)),
        "",
        _results(0, 7, (" a worse second opinion", 0.2)),  # a later line does not win with a lower score
    ]) + "\n")
    neurons = [NeuronId(0, 7), NeuronId(3, 1), NeuronId(5, 2)]
    assert store.import_jsonl(file, *KEY) == 3
    assert store.get(*KEY, neurons) == {NeuronId(0, 7): "animals and pets", NeuronId(3, 1): "closing brackets",
                                        NeuronId(5, 2): "only unscored"}
    assert store.scores(*KEY, neurons) == {NeuronId(0, 7): 0.64, NeuronId(3, 1): -0.05}
    db = sqlite3.connect(store.path)
    assert {r[0] for r in db.execute("SELECT source FROM explanations")} == {f"import:{file}"}
    db.close()


def test_import_folder_layout(store, tmp_path):
    folder = tmp_path / "explanations"
    for layer, neuron, best in [(0, 0, " dates"), (0, 12, " the letter q"), (10, 3, " French words")]:
        (folder / str(layer)).mkdir(parents=True, exist_ok=True)
        line = _results(layer, neuron, (best, 0.5), (" so-so", 0.1))
        (folder / str(layer) / f"{neuron}.jsonl").write_text(line)
    (folder / "0" / "notes.jsonl").write_text("not a neuron file\n")  # ignored: not {layer}/{neuron}.jsonl
    assert store.import_jsonl(folder, *KEY) == 3
    assert store.get(*KEY, [NeuronId(0, 0), NeuronId(0, 12), NeuronId(10, 3)]) == {
        NeuronId(0, 0): "dates", NeuronId(0, 12): "the letter q", NeuronId(10, 3): "French words"}

    (folder / "10" / "4.jsonl").write_text(_results(10, 5, (" misplaced", 0.9)))
    with pytest.raises(UsageError) as e:
        store.import_jsonl(folder, *KEY)
    assert f"{folder / '10' / '4.jsonl'}:1:" in _one_line_usage_error(e)


def _neuron_line(layer: object, neuron: object) -> str:
    return json.dumps({"neuron_id": {"layer_index": layer, "neuron_index": neuron},
                       "scored_explanations": [_scored_explanation(" words", 0.5)]})


@pytest.mark.parametrize("bad_line, why", [
    ('{"neuron_id": {"layer_index": 0, "neuron_index": 1}, "scored_explanations": [', "not JSON"),
    ("[" * 200_000, "JSON nested too deeply"),
    ("layer,neuron,explanation", "not JSON"),
    (_neuron_line(-1, 0), "non-negative integer"),
    (_neuron_line(0, -3), "non-negative integer"),
    (_neuron_line(0, 1.5), "non-negative integer"),
    (_neuron_line(0, 2.0), "non-negative integer"),
    (_neuron_line("0", 2), "non-negative integer"),
    (_neuron_line(0, True), "non-negative integer"),
    (_neuron_line(None, 1), "non-negative integer"),
    ('{"scored_explanations": []}', "neuron_id"),
    (json.dumps({"neuron_id": {"layer_index": 0, "neuron_index": 1},
                 "scored_explanations": [{"explanation": "x"}]}), "scored_simulation"),
    ('["a list"]', "NeuronSimulationResults"),
])
def test_malformed_import_names_file_and_line(store, tmp_path, bad_line, why):
    file = tmp_path / "broken.jsonl"
    file.write_text("\n".join([_results(0, 0, (" fine", 0.4)), _results(0, 1, (" ok", 0.4)), bad_line]) + "\n")
    with pytest.raises(UsageError) as e:
        store.import_jsonl(file, *KEY)
    message = _one_line_usage_error(e)
    assert message.startswith(f"{file}:3: ") and why in message
    assert store.count(*KEY) == 0  # all or nothing


def test_import_refuses_neurons_the_site_does_not_have(store, tmp_path):
    file = tmp_path / "explanations.jsonl"
    file.write_text(_neuron_line(1, 47) + "\n" + _neuron_line(2, 0) + "\n")
    with pytest.raises(UsageError) as e:
        store.import_jsonl(file, *KEY, shape=(2, 48))
    assert _one_line_usage_error(e).startswith(f"{file}:2: neuron_id 2/0 is not in the model's site (2 layers")
    file.write_text(_neuron_line(0, 48) + "\n")
    with pytest.raises(UsageError, match=r":1: neuron_id 0/48 is not in"):
        store.import_jsonl(file, *KEY, shape=(2, 48))
    assert store.count(*KEY) == 0
    file.write_text(_neuron_line(1, 47) + "\n")
    assert store.import_jsonl(file, *KEY, shape=(2, 48)) == 1


def test_import_skips_blank_explanations(store, tmp_path):
    file = tmp_path / "explanations.jsonl"
    lines = [_results(0, 1, ("  ", 0.9), (" dates", 0.2)), _results(0, 2, (" ", 0.5))]
    file.write_text("\n".join(lines) + "\n")
    assert store.import_jsonl(file, *KEY) == 1
    assert store.get(*KEY, [NeuronId(0, 1), NeuronId(0, 2)]) == {NeuronId(0, 1): "dates"}


def test_unreadable_import_path(store, tmp_path):
    with pytest.raises(UsageError) as e:
        store.import_jsonl(tmp_path / "nope.jsonl", *KEY)
    assert "nope.jsonl" in _one_line_usage_error(e)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError) as e:
        store.import_jsonl(tmp_path / "empty", *KEY)
    assert "no neuron-explainer files" in _one_line_usage_error(e)
    (tmp_path / "latin1.jsonl").write_bytes(b"\xff\xfe caf\xe9\n")
    with pytest.raises(UsageError) as e:
        store.import_jsonl(tmp_path / "latin1.jsonl", *KEY)
    assert "cannot read explanations" in _one_line_usage_error(e) and "not UTF-8" in str(e.value)
    assert store.count(*KEY) == 0


def test_schema_1_store_migrates_and_its_explanations_are_not_reused(tmp_path):
    """Schema 1 did not record which text built an explanation (`unlearn explain` probed evaluation
    text): its rows are kept, under a probe no run asks for; imported rows stay usable."""
    from unlearn_snip.store import _MIGRATIONS, IMPORTED, LEGACY

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in _MIGRATIONS[1]:
        db.execute(statement)
    db.execute("INSERT INTO schema_version VALUES (1)")
    rows = [("fp", "mlp", "tokens", "v1", 0, 1, "the tokens 'def'", None, "explainer", "2026-01-01"),
            ("fp", "mlp", "openai", "v1", 0, 2, "commas", 0.4, "import:x.jsonl", "2026-01-01")]
    db.executemany("INSERT INTO explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    with ExplanationStore(path) as store:
        legacy = store.get("fp", "mlp", "tokens", "v1", LEGACY, [NeuronId(0, 1)])
        assert legacy == {NeuronId(0, 1): "the tokens 'def'"}
        assert store.missing("fp", "mlp", "tokens", "v1", "mix:abc:k5", [NeuronId(0, 1)]) == [NeuronId(0, 1)]
        assert store.get("fp", "mlp", "openai", "v1", IMPORTED, [NeuronId(0, 2)]) == {NeuronId(0, 2): "commas"}
        assert store.scores("fp", "mlp", "openai", "v1", IMPORTED, [NeuronId(0, 2)]) == {NeuronId(0, 2): 0.4}
    version = sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 2


def test_ratings_cache_many(store):
    store.put_cached_many("rating", {"a": "1.0", "b": "2.5"})
    assert store.get_cached_many("rating", ["a", "b", "c"]) == {"a": "1.0", "b": "2.5"}
    assert store.get_cached_many("concepts", ["a"]) == {}
