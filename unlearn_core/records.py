"""Run records: one JSON file per method and run, written atomically after every step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .config import BenchConfig
from .errors import UsageError
from .evaluate import TokenMetrics
from .metrics import Summary

SCHEMA_VERSION = 2  # 2: typed model/site/corpus/config sections, evaluations declare their figures


class Figure(BaseModel):
    """A headline number of an evaluation: the value under `key` (dots reach into nested results)
    of its result at a step, shown as `title`, times `scale`, in `unit`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    title: str
    higher_is_better: bool | None = None  # None: no preferred direction (lm-eval's higher_is_better)
    scale: float = 100.0  # 100 shows a share in [0, 1] as a percentage
    unit: str = "%"

    @property
    def arrow(self) -> str:
        return {True: "↑", False: "↓", None: ""}[self.higher_is_better]

    def value(self, result: Any) -> float | None:
        """The figure in `result` (one step's result of its evaluation), scaled; None when absent."""
        for part in self.key.split("."):
            result = result.get(part) if isinstance(result, dict) else None
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            return float(result) * self.scale
        return None


class PluginRef(BaseModel):
    """The plugin that registered a method or an evaluation."""

    name: str
    package: str
    version: str


class ModelInfo(BaseModel):
    """The weights a run pruned; runs are compared only on the same `fingerprint`."""

    spec: str  # as given to --model
    name: str
    model_type: str
    model_class: str
    parameters: int
    dtype: str
    fingerprint: str


class SiteInfo(BaseModel):
    name: str
    layers: int
    neurons_per_layer: int
    schedule: list[int] = Field(default_factory=list)  # cumulative neurons deleted after each step

    @property
    def neurons(self) -> int:
        return self.layers * self.neurons_per_layer


class CorpusInfo(BaseModel):
    """One corpus' windows, as the bench built them (`CorpusWindows.identity()`)."""

    spec: str
    description: str | None = None
    documents: int | None = None
    window: int
    stats_tokens: int
    eval_tokens: int
    bos: bool = False  # every window starts with the tokenizer's BOS token
    split: str | None = None  # None: an old run that split pieces of one document across windows
    sha256: str  # of the windows' token ids


class EvaluationInfo(BaseModel):
    """An evaluation that ran at every step: its validated options and the figures it declares."""

    options: dict[str, Any] = Field(default_factory=dict)
    figures: list[Figure] = Field(default_factory=list)
    plugin: PluginRef | None = None


class StepRecord(BaseModel):
    step: int  # 0 = before pruning
    pruned: int  # neurons deleted so far
    pruned_fraction: float
    forget: TokenMetrics
    retain: TokenMetrics
    seconds: float  # scoring + pruning + evaluation of this step
    # Other evaluation harnesses by name, e.g. {"cloze": {"accuracy": 0.61, ...}}
    evaluations: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunRecord(BaseModel):
    schema_version: int = SCHEMA_VERSION
    method: str
    plugin: PluginRef  # the plugin that registered the method
    options: dict[str, Any]  # the method's validated options
    method_info: dict[str, Any] = Field(default_factory=dict)  # what the method reports (scorer.info())
    config: BenchConfig  # the full bench configuration
    model: ModelInfo
    site: SiteInfo
    forget: CorpusInfo
    retain: CorpusInfo
    evaluations: dict[str, EvaluationInfo] = Field(default_factory=dict)  # besides tokens
    seed: int
    steps: list[StepRecord] = Field(default_factory=list)
    pruned_neurons: list[list[int]] = Field(default_factory=list)  # per layer, after the last step
    summary: Summary | None = None
    # Published figures to show beside ours, in points, e.g.
    # {"selectivity": 60.2, "source": "Pochinkov & Schoots 2024, Table 2"}
    reference: dict[str, float | str] | None = None
    complete: bool = False
    versions: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    started: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


def declared_figures(records: Sequence[RunRecord]) -> list[tuple[str, Figure]]:
    """(evaluation, figure) for every figure the records' evaluations declare, each (evaluation,
    key) once, as first declared: what the bench table, leaderboard and plots show."""
    seen: dict[tuple[str, str], Figure] = {}
    for r in records:
        for name, info in sorted(r.evaluations.items()):
            for figure in info.figures:
                seen.setdefault((name, figure.key), figure)
    return [(name, figure) for (name, _), figure in seen.items()]


# What the built-in evaluations reported as their headline before records declared figures.
_SCHEMA_1_FIGURES = {"cloze": [Figure(key="accuracy", title="cloze accuracy", higher_is_better=True)],
                     "toxicity": [Figure(key="rate", title="toxicity rate", higher_is_better=False)]}


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """A record's JSON, as read, brought up to SCHEMA_VERSION (a copy; the file is not touched)."""
    raw = json.loads(json.dumps(raw))
    if raw.get("schema_version", 1) == 1:
        model = raw.get("model")
        if isinstance(model, dict) and "class" in model:
            model["model_class"] = model.pop("class")
        config = raw.get("config")
        names = {n for s in raw.get("steps") or [] if isinstance(s, dict)
                 for n in (s.get("evaluations") or {})}
        options = config.get("options", {}) if isinstance(config, dict) else {}
        raw["evaluations"] = {n: {"options": options.get(n, {}), "figures": _SCHEMA_1_FIGURES.get(n, [])}
                              for n in sorted(names)}
        raw["schema_version"] = 2
    return raw


def loads_json(text: str | bytes) -> Any:
    """json.loads, with input nested too deeply for Python's parser (`[` x 200,000) a ValueError
    like any other malformed JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` so that a reader sees the old file or the new one, never half.

    The file gets the mode any new file would (0666 less the umask; an existing file keeps its
    own), not mkstemp's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_record(record: RunRecord, path: Path, keep: dict[str, Any] | None = None) -> None:
    """Write `record`; with `keep` (the record's JSON as it was read), the fields this version does
    not know (written by a newer unlearn or by hand) are kept instead of dropped."""
    text = record.model_dump_json(indent=2)
    if keep is not None:
        text = json.dumps(keep_unknown(keep, json.loads(text)), indent=2, ensure_ascii=False)
    write_atomic(Path(path), text + "\n")


def keep_unknown(old: Any, new: Any) -> Any:
    """`new`, plus what `old` holds that `new` lacks, at every depth (lists item by item)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**{k: v for k, v in old.items() if k not in new},
                **{k: keep_unknown(old[k], v) if k in old else v for k, v in new.items()}}
    if isinstance(old, list) and isinstance(new, list):
        return [keep_unknown(o, n) for o, n in zip(old, new, strict=False)] + new[len(old):]
    return new


def read_json(path: Path) -> Any:
    """The JSON in the file at `path`; ValueError when it is not UTF-8 JSON (nested too deeply
    included), OSError when it cannot be read."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start})") from None
    try:
        return loads_json(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def load_record(path: Path) -> RunRecord:
    """The record at `path`, migrated from older schemas (ValueError when it is not one)."""
    return parse_record(read_json(path))


def parse_record(raw: Any) -> RunRecord:
    """A record from its JSON; ValueError names what is wrong (pydantic's ValidationError is one)."""
    if not isinstance(raw, dict):
        raise ValueError("a run record is a JSON object")
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"schema_version must be a whole number from 1, got {json.dumps(version)[:40]}")
    if version > SCHEMA_VERSION:
        raise ValueError(f"written by a newer unlearn (schema {version} > {SCHEMA_VERSION})")
    try:
        return RunRecord.model_validate(migrate(raw))
    except UsageError as e:  # the config's own checks
        raise ValueError(f"config: {e}") from None


def first_error(e: Any) -> str:
    """'where: message (and N more)' of a pydantic ValidationError: one line for a bad record."""
    err = e.errors()[0]
    where = ".".join(map(str, err["loc"])) or "record"
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{where}: {err['msg']}{more}"


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("unlearn", "torch", "transformers", "datasets", "pluggy", "pydantic", "gguf"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def environment() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "git": git_hash()}


def git_hash() -> str | None:
    """The commit of the unlearn checkout, when it runs from one."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
