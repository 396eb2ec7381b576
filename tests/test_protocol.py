"""One definition of "the same experiment": which fields make two runs comparable (Protocol), and
which make two records the same run (run_key). The leaderboard, the plots and resume all use it."""

import json
from pathlib import Path

import pytest

from unlearn_core.protocol import Protocol, run_key
from unlearn_core.records import RunRecord, parse_record

SCHEMA_1 = Path(__file__).parent / "data" / "schema1-record.json"


@pytest.fixture
def record() -> RunRecord:
    return parse_record(json.loads(SCHEMA_1.read_text()))


def _changed(record: RunRecord, change) -> RunRecord:
    other = record.model_copy(deep=True)
    change(other)
    return other


# (what changes, change): each of these is another experiment, not comparable.
OTHER_PROTOCOL = {
    "weights": lambda r: setattr(r.model, "fingerprint", "0" * 16),
    "site": lambda r: setattr(r.site, "name", "attn"),
    "layers": lambda r: setattr(r.site, "layers", 3),
    "forget corpus": lambda r: setattr(r.forget, "spec", "python"),
    "retain text": lambda r: setattr(r.retain, "description", "other text"),
    "split rule": lambda r: setattr(r.forget, "split", None),
    "bos": lambda r: setattr(r.retain, "bos", True),
    "statistics tokens": lambda r: setattr(r.forget, "stats_tokens", 1024),
    "evaluation tokens": lambda r: setattr(r.retain, "eval_tokens", 1024),
    "window": lambda r: setattr(r.forget, "window", 64),
    "schedule": lambda r: setattr(r.site, "schedule", [5, 11]),
    "evaluation options": lambda r: r.evaluations["cloze"].options.update(items=40),
    "evaluation dropped": lambda r: r.evaluations.pop("toxicity"),
}
# Compared within one protocol, or only how fast it ran.
SAME_PROTOCOL = {
    "seed": lambda r: setattr(r, "seed", 1),
    "method": lambda r: setattr(r, "method", "random"),
    "options": lambda r: r.options.update(importance="rms"),
    "batch size": lambda r: setattr(r.config, "batch_size", 2),
    "device": lambda r: setattr(r.config, "device", "cuda"),
    "model path": lambda r: setattr(r.model, "spec", "/elsewhere/tiny"),
    "windows of another seed": lambda r: setattr(r.forget, "sha256", "f" * 16),
    "start time": lambda r: setattr(r, "started", "2030-01-01T00:00:00+00:00"),
}


@pytest.mark.parametrize("what", OTHER_PROTOCOL)
def test_these_make_another_protocol(record, what):
    other = _changed(record, OTHER_PROTOCOL[what])
    assert Protocol.of(other).key != Protocol.of(record).key
    assert run_key(other) != run_key(record)  # and so never resume each other


@pytest.mark.parametrize("what", SAME_PROTOCOL)
def test_these_stay_in_the_protocol(record, what):
    assert Protocol.of(_changed(record, SAME_PROTOCOL[what])).key == Protocol.of(record).key


@pytest.mark.parametrize("what,same_run", [("seed", False), ("method", False), ("options", False),
                                            ("device", False), ("windows of another seed", False),
                                            ("batch size", True), ("model path", True),
                                            ("start time", True)])
def test_which_make_another_run(record, what, same_run):
    """A record is resumed by a run with the same key: batch size and start time do not change the
    numbers' meaning; the device does (kernels round differently), as do seed, method, options and
    the windows' text (an edited corpus file is another run, never resumed into this one)."""
    assert (run_key(_changed(record, SAME_PROTOCOL[what])) == run_key(record)) is same_run


def test_the_title_names_what_defines_the_protocol(record):
    title = Protocol.of(record).title
    for part in ("/tmp/s1/tiny", "mlp neurons", "text:/tmp/s1/code.txt", "shakespeare", "2 steps of 5 %",
                 "512 statistics + 512 evaluation tokens", "window 128", "cloze, toxicity"):
        assert part in title


def test_records_without_a_kept_schedule_get_it_from_their_config(record):
    """Early schema-1 records have no site.schedule: it follows from the config, as the bench made it."""
    old = _changed(record, lambda r: setattr(r.site, "schedule", []))
    assert Protocol.of(old).schedule == (5, 10) == Protocol.of(record).schedule
