"""The leaderboard: every run record under some folders, grouped by protocol, one row per method.

    from unlearn_core.leaderboard import leaderboard
    groups, skipped = leaderboard(["results"], sort="selectivity")   # rendered by leaderboard_report

Runs are ranked only against runs of the same protocol (protocol.py: same weights, neuron site,
corpora, schedule, token budgets and evaluations). The seed is not part of the protocol: runs that
differ only in their seed share a row (mean, ± std for selectivity, and the number of runs). Files
that are not run records are reported by name and skipped; nothing is ever written to, moved or
deleted from a results folder. Columns come from the records: the fixed top-1 ones, and a base and
a final column for every figure an evaluation declares (`EvaluationSpec.figures`), with its
direction. Text shown from a record (method, options, corpus and model specs, sources) has its
secrets redacted here (redact.py): records written by older versions may still hold keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import UsageError, unknown_name
from .metrics import summarise
from .protocol import Protocol, canonical
from .records import Figure, RunRecord, declared_figures, first_error, loads_json, parse_record
from .redact import redact, redact_text

FORMATS = ("md", "html", "csv")
MAX_DEPTH = 64  # records nest about 6 levels; deeper JSON would exhaust Python's stack later on


@dataclass(frozen=True)
class Column:
    key: str  # what --sort takes and the csv header says
    title: str  # markdown / html header
    better: str = ""  # "↑", "↓" or "" (no preferred direction)
    optional: bool = False  # shown only when some run has a value
    description: str = ""  # the html header's tooltip


FIXED_COLUMNS = [
    Column("selectivity", "selectivity (pts)", "↑",
           description="max over steps of forget drop minus retain drop (relative top-1), in points"),
    Column("ref_selectivity", "published selectivity (pts)", "", True),
    Column("forget_at_retain_5", "forget drop @ retain drop ≤5% (pts)", "↑",
           description="forget drop at the last step whose retain drop is at most 5 %"),
    Column("ref_forget_at_retain_5", "published forget drop @ retain ≤5% (pts)", "", True),
    Column("auc", "AUC (pts)", "↑",
           description="mean forget drop over the retain-drop range covered (area under the curve)"),
    Column("ref_auc", "published AUC (pts)", "", True),
    Column("base_forget_top1", "base forget top-1 %"),
    Column("base_retain_top1", "base retain top-1 %"),
    Column("final_forget_top1", "final forget top-1 %", "↓"),
    Column("final_retain_top1", "final retain top-1 %", "↑"),
]
TRAILING_COLUMNS = [
    Column("time", "time s", "↓", description="seconds the method took (scoring, pruning and "
           "evaluation of all steps)"),
    Column("runs", "runs", description="runs averaged in this row (seeds)"),
]


def evaluation_columns(records: list[RunRecord]) -> list[Column]:
    """A base and a final column for every figure the records' evaluations declare."""
    return [Column(figure_key(name, fig, which), f"{which} {fig.title} {fig.unit}".strip(),
                   fig.arrow if which == "final" else "", optional=True, description=f"{name}: {fig.key}")
            for name, fig in declared_figures(records) for which in ("base", "final")]


def figure_key(evaluation: str, figure: Figure, which: str) -> str:
    return f"{evaluation}_{figure.key.replace('.', '_')}_{which}"


def figure_values(record: RunRecord) -> dict[str, float | None]:
    """Each declared figure before pruning ('base') and after the last step that has it ('final')."""
    values: dict[str, float | None] = {}
    for name, info in record.evaluations.items():
        for fig in info.figures:
            curve = [fig.value(s.evaluations.get(name)) for s in record.steps]
            values[figure_key(name, fig, "base")] = curve[0]
            values[figure_key(name, fig, "final")] = next((v for v in reversed(curve) if v is not None), None)
    return values


@dataclass
class Run:
    path: Path
    record: RunRecord


@dataclass
class Row:
    method: str
    plugin: str
    options: str
    runs: list[Run]
    values: dict[str, float | None] = field(default_factory=dict)  # column key -> mean
    spread: dict[str, float] = field(default_factory=dict)  # column key -> std over runs
    sources: list[str] = field(default_factory=list)  # where the reference figures come from


@dataclass
class Group:
    key: tuple
    title: str
    runs: list[Run]
    rows: list[Row] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)


# ---------------------------------------------------------------- loading

def load_runs(paths: list[str | Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every *.json under `paths` (recursively): the run records, and (path, reason) for the rest."""
    runs: list[Run] = []
    skipped: list[tuple[Path, str]] = []
    seen: dict[tuple, Path] = {}
    for path in input_files(paths):
        run, reason = _read(path)
        if run is not None:
            r = run.record
            ident = (r.method, canonical(r.options), r.seed, r.model.fingerprint, r.forget.sha256,
                     r.retain.sha256, r.started)
            if ident in seen:
                run, reason = None, f"same run as {seen[ident]} (counted once)"
            else:
                seen[ident] = path
        if run is None:
            skipped.append((path, reason))
        else:
            runs.append(run)
    return runs, skipped


def input_files(paths: list[str | Path]) -> list[Path]:
    """The files the leaderboard reads: those named, and every *.json under the folders named,
    each once (a folder named twice, or inside another, is read once)."""
    if not paths:
        raise UsageError("name at least one results folder")
    files: dict[Path, Path] = {}  # resolved -> as found
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*.json") if f.is_file())  # is_file: no FIFO, no loop
        elif p.is_file():
            found = [p]
        elif p.exists() or p.is_symlink():
            raise UsageError(f"not a folder or a regular file: {p}")
        else:
            raise UsageError(f"no such folder: {p}")
        for f in found:
            files.setdefault(resolved(f), f)
    if not files:
        raise UsageError(f"no run records (*.json) under {', '.join(map(str, paths))}")
    return list(files.values())


def resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        return path.absolute()


def _read(path: Path) -> tuple[Run | None, str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is still UTF-8
    except UnicodeDecodeError:
        return None, "not a text file (not UTF-8)"
    if not text.strip():
        return None, "empty file"
    try:
        raw = loads_json(text)
    except json.JSONDecodeError as e:
        at_end = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")  # ran out of text
        cut = "truncated JSON" if at_end else "not JSON"
        return None, f"{cut} ({e.msg} at line {e.lineno} column {e.colno})"
    except ValueError as e:  # nested too deeply, or an integer of more than 4,300 digits
        return None, f"not usable JSON ({str(e).split(':')[0]})"
    if not isinstance(raw, dict) or "method" not in raw or "steps" not in raw:
        kind = {dict: "object", list: "array", str: "string"}.get(type(raw), "value")
        return None, f"not a run record (a JSON {kind} without 'method' and 'steps')"
    if _depth(raw) > MAX_DEPTH:
        return None, f"not a valid run record: nested more than {MAX_DEPTH} levels deep"
    try:
        record = parse_record(raw)
    except ValidationError as e:
        return None, redact_text(f"not a valid run record: {first_error(e)}")
    except ValueError as e:  # schema_version not a whole number from 1, a newer schema, a bad config
        return None, redact_text(str(e))
    if len(record.steps) < 2:
        return None, "no pruning step recorded yet"
    if not record.complete:
        return None, (f"incomplete run ({len(record.steps) - 1} of {record.config.steps} steps; "
                      "run the same bench command to finish it)")
    try:  # what grouping and the rows compute: a record they cannot use is skipped here, by name
        Protocol.of(record)
        run_values(record)
    except (UsageError, ValueError) as e:
        return None, redact_text(f"not a valid run record: {e}")
    return Run(path, record), ""


def _depth(value: object) -> int:
    """How deeply `value` (parsed JSON) nests lists and objects; iterative, so any depth is fine."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            stack += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return deepest


# ---------------------------------------------------------------- grouping

def group_runs(runs: list[Run]) -> list[Group]:
    """Runs split by protocol; a protocol's runs whose seed matches but windows differ are split too."""
    by_key: dict[str, list[Run]] = {}
    for run in runs:
        by_key.setdefault(Protocol.of(run.record).key, []).append(run)
    groups = []
    for key, members in by_key.items():
        variants = _variants(members)
        for i, variant in enumerate(variants):
            title = redact_text(Protocol.of(variant[0].record).title)  # specs may be URLs with keys
            if len(variants) > 1:
                title += f" · corpus variant {i + 1} (other text under the same corpus name)"
            groups.append(Group((key, i), title, variant))
    return sorted(groups, key=lambda g: (g.title, str(g.key)))


def _variants(runs: list[Run]) -> list[list[Run]]:
    """The same corpus and seed give the same windows; different windows mean different text."""
    out: list[list[Run]] = []
    for run in runs:
        for variant in out:
            if all(o.record.seed != run.record.seed or _shas(o) == _shas(run) for o in variant):
                variant.append(run)
                break
        else:
            out.append([run])
    return out


def _shas(run: Run) -> tuple:
    return run.record.forget.sha256, run.record.retain.sha256


# ---------------------------------------------------------------- rows

def columns_of(records: list[RunRecord]) -> list[Column]:
    """Every column a table of these records can show, in order: the fixed ones, one pair per
    evaluation figure, time and runs."""
    return FIXED_COLUMNS + evaluation_columns(records) + TRAILING_COLUMNS


def build_rows(group: Group, sort: str = "selectivity") -> list[Row]:
    group.columns = columns_of([run.record for run in group.runs])
    rows: dict[tuple, Row] = {}
    for run in group.runs:
        r = run.record
        method, plugin = redact_text(r.method), redact_text(f"{r.plugin.package} {r.plugin.version}".strip())
        options = redact(r.options)  # runs that differ only in a key share a row
        rows.setdefault((method, plugin, canonical(options)),
                        Row(method, plugin, compact_options(options), [])).runs.append(run)
    for row in rows.values():
        row.runs.sort(key=lambda run: (run.record.seed, str(run.path)))
        per_run = [run_values(run.record) for run in row.runs]
        for col in group.columns:
            xs = [v[col.key] for v in per_run if v.get(col.key) is not None]
            row.values[col.key] = sum(xs) / len(xs) if xs else None
            if len(xs) > 1:
                row.spread[col.key] = stdev(xs)
        row.values["runs"] = float(len(row.runs))
        row.sources = sorted({redact_text(str(run.record.reference["source"])) for run in row.runs
                              if run.record.reference and run.record.reference.get("source")})
    return sort_rows(list(rows.values()), group.columns, sort)


def stdev(xs: list[float]) -> float:
    """The sample standard deviation; nan rather than an exception (statistics.stdev's) when a
    hand-edited record holds inf or nan."""
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) * (x - mean) for x in xs) / (len(xs) - 1))


def sort_rows(rows: list[Row], columns: list[Column], sort: str) -> list[Row]:
    col = next((c for c in columns if c.key == sort), None)
    sign = 1 if col is not None and col.better == "↓" else -1  # ↓: smallest first; else largest first

    def key(r: Row) -> tuple:
        v = r.values.get(sort)
        usable = v is not None and not math.isnan(v)  # missing and nan last, in a stable order
        return (not usable, sign * v if usable else 0.0, r.method, r.options)

    return sorted(rows, key=key)


def run_values(r: RunRecord) -> dict[str, float | None]:
    """One run's numbers, keyed like the columns; accuracies in %, drops in points."""
    s = r.summary or summarise([x.forget.top1 for x in r.steps], [x.retain.top1 for x in r.steps])
    first, last = r.steps[0], r.steps[-1]
    values: dict[str, float | None] = {
        "selectivity": s.selectivity, "forget_at_retain_5": s.forget_drop_at_retain_5, "auc": s.auc,
        "base_forget_top1": 100 * first.forget.top1, "base_retain_top1": 100 * first.retain.top1,
        "final_forget_top1": 100 * last.forget.top1, "final_retain_top1": 100 * last.retain.top1,
        "time": r.timings.get("method"), **figure_values(r),
    }
    ref = r.reference or {}
    for metric in ("selectivity", "forget_at_retain_5", "auc"):
        v = ref.get(metric)
        values[f"ref_{metric}"] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return values


def compact_options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(options.items()))


def leaderboard(paths: list[str | Path], sort: str = "selectivity"
                ) -> tuple[list[Group], list[tuple[Path, str]]]:
    """The groups, their rows sorted by `sort`, and the files skipped with the reason why."""
    runs, skipped = load_runs(paths)
    keys = [c.key for c in columns_of([run.record for run in runs])]
    if sort not in keys:
        raise unknown_name("sort column", sort, keys)
    groups = group_runs(runs)
    for g in groups:
        g.rows = build_rows(g, sort)
    return groups, skipped
