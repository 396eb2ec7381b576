"""Run records: typed sections, schema 2, and schema-1 records (committed, as unlearn wrote them
before issue 10) still loading, with their evaluations' figures, without the file being touched."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from unlearn_core.leaderboard import leaderboard
from unlearn_core.leaderboard_report import render_md
from unlearn_core.records import SCHEMA_VERSION, load_record, parse_record, save_record

SCHEMA_1 = Path(__file__).parent / "data" / "schema1-record.json"


def test_a_schema_1_record_loads_migrated_and_the_file_is_left_alone(tmp_path):
    path = tmp_path / "selective-5c2832d628.json"
    shutil.copy(SCHEMA_1, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    record = load_record(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert record.schema_version == SCHEMA_VERSION == 2
    assert record.model.model_class == "LlamaForCausalLM" and record.model.fingerprint == "4a5d39b7c76f6fc3"
    assert record.site.schedule == [5, 10] and record.site.neurons == 96
    assert record.forget.split == "by document" and record.config.evals == ["tokens", "cloze", "toxicity"]
    assert record.plugin.package == "unlearn"
    cloze, toxicity = record.evaluations["cloze"], record.evaluations["toxicity"]
    assert cloze.options == {"items": 4} and toxicity.options == {"samples": 4}
    assert [(f.key, f.higher_is_better) for f in cloze.figures] == [("accuracy", True)]
    assert [(f.key, f.higher_is_better) for f in toxicity.figures] == [("rate", False)]
    # the figures find their numbers in the steps as the old code wrote them
    raw = json.loads(SCHEMA_1.read_text())
    assert toxicity.figures[0].value(record.steps[-1].evaluations["toxicity"]) == pytest.approx(
        100 * raw["steps"][-1]["evaluations"]["toxicity"]["rate"])


def test_a_schema_1_record_reaches_the_leaderboard_with_its_evaluation_columns(tmp_path):
    shutil.copy(SCHEMA_1, tmp_path / "old.json")
    groups, skipped = leaderboard([tmp_path])
    assert not skipped and len(groups) == 1
    md = render_md(groups)
    for column in ("base cloze accuracy %", "final cloze accuracy % ↑", "final toxicity rate % ↓"):
        assert column in md


def test_a_migrated_record_saves_as_schema_2_and_round_trips(tmp_path):
    record = load_record(SCHEMA_1)
    save_record(record, tmp_path / "r.json")
    raw = json.loads((tmp_path / "r.json").read_text())
    assert raw["schema_version"] == 2 and "class" not in raw["model"]
    assert load_record(tmp_path / "r.json") == record


def test_records_from_a_newer_unlearn_or_not_records_are_refused_in_one_line():
    raw = json.loads(SCHEMA_1.read_text())
    with pytest.raises(ValueError, match=r"newer unlearn \(schema 3 > 2\)"):
        parse_record(raw | {"schema_version": 3})
    with pytest.raises(ValueError, match="model_class"):
        parse_record(raw | {"schema_version": 2})  # a schema-1 body claiming 2 is not migrated
    with pytest.raises(ValueError, match="config"):
        parse_record(raw | {"config": raw["config"] | {"fraction": 7}})
