"""The leaderboard: every run record under some folders, grouped by protocol, one row per method.

    from unlearn_core.leaderboard import leaderboard
    groups, skipped = leaderboard(["results"], sort="selectivity")   # rendered by leaderboard_report

Runs are ranked only against runs of the same protocol: same weights (model fingerprint), neuron
site, forget and retain corpus, schedule (steps x fraction or count) and token budgets. The seed
is not part of the protocol: runs that differ only in their seed share a row (mean, ± std for
selectivity, and the number of runs). Files that are not run records are reported by name and
skipped; nothing is ever written to, moved or deleted from a results folder.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import UsageError, unknown_name
from .metrics import summarise
from .records import SCHEMA_VERSION, RunRecord

FORMATS = ("md", "html", "csv")


@dataclass(frozen=True)
class Column:
    key: str  # what --sort takes and the csv header says
    title: str  # markdown / html header
    better: str = ""  # "↑", "↓" or "" (no preferred direction)
    optional: bool = False  # shown only when some run has a value


COLUMNS = [
    Column("selectivity", "selectivity (pts)", "↑"),
    Column("ref_selectivity", "published selectivity (pts)", "", True),
    Column("forget_at_retain_5", "forget drop @ retain drop ≤5% (pts)", "↑"),
    Column("ref_forget_at_retain_5", "published forget drop @ retain ≤5% (pts)", "", True),
    Column("auc", "AUC (pts)", "↑"),
    Column("ref_auc", "published AUC (pts)", "", True),
    Column("base_forget_top1", "base forget top-1 %"),
    Column("base_retain_top1", "base retain top-1 %"),
    Column("final_forget_top1", "final forget top-1 %", "↓"),
    Column("final_retain_top1", "final retain top-1 %", "↑"),
    Column("cloze_base", "base cloze %", "", True),
    Column("cloze_final", "final cloze %", "↑", True),
    Column("toxicity_base", "base toxicity %", "", True),
    Column("toxicity_final", "final toxicity %", "↓", True),
    Column("time", "time s", "↓"),
    Column("runs", "runs"),
]
SORT_KEYS = [c.key for c in COLUMNS]
# Optional evaluations: name -> keys tried, in order, when the stored value is an object.
EVALUATIONS = {"cloze": ("accuracy", "top1", "value"), "toxicity": ("rate", "value")}


@dataclass
class Run:
    path: Path
    record: RunRecord
    raw: dict[str, Any]  # the JSON as read: fields the schema does not know yet live here


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


# ---------------------------------------------------------------- loading

def load_runs(paths: list[str | Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every *.json under `paths` (recursively): the run records, and (path, reason) for the rest."""
    runs: list[Run] = []
    skipped: list[tuple[Path, str]] = []
    seen: dict[tuple, Path] = {}
    for path in _json_files(paths):
        run, reason = _read(path)
        if run is not None:
            r = run.record
            ident = (r.method, _canon(r.options), r.seed, r.model.get("fingerprint"),
                     r.forget.get("sha256"), r.retain.get("sha256"), r.started)
            if ident in seen:
                run, reason = None, f"same run as {seen[ident]} (counted once)"
            else:
                seen[ident] = path
        if run is None:
            skipped.append((path, reason))
        else:
            runs.append(run)
    return runs, skipped


def _json_files(paths: list[str | Path]) -> list[Path]:
    if not paths:
        raise UsageError("name at least one results folder")
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(f for f in p.rglob("*.json") if f.is_file())
        else:
            raise UsageError(f"no such folder: {p}")
    if not files:
        raise UsageError(f"no run records (*.json) under {', '.join(map(str, paths))}")
    return files


def _read(path: Path) -> tuple[Run | None, str]:
    try:
        text = path.read_bytes().decode("utf-8")
        raw = json.loads(text)
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    except UnicodeDecodeError:
        return None, "not a text file (not UTF-8)"
    except json.JSONDecodeError as e:
        if not text.strip():
            return None, "empty file"
        at_end = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")  # ran out of text
        cut = "truncated JSON" if at_end else "not JSON"
        return None, f"{cut} ({e.msg} at line {e.lineno} column {e.colno})"
    if not isinstance(raw, dict) or "method" not in raw or "steps" not in raw:
        kind = {dict: "object", list: "array", str: "string"}.get(type(raw), "value")
        return None, f"not a run record (a JSON {kind} without 'method' and 'steps')"
    if isinstance(raw.get("schema_version"), int) and raw["schema_version"] > SCHEMA_VERSION:
        return None, f"written by a newer unlearn (schema {raw['schema_version']} > {SCHEMA_VERSION})"
    try:
        record = RunRecord.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "record"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        return None, f"not a valid run record: {where}: {err['msg']}{more}"
    if len(record.steps) < 2:
        return None, "no pruning step recorded yet"
    if not record.complete:
        planned = record.config.get("steps", "?")
        return None, (f"incomplete run ({len(record.steps) - 1} of {planned} steps; "
                      "run the same bench command to finish it)")
    return Run(path, record, raw), ""


# ---------------------------------------------------------------- grouping

def group_runs(runs: list[Run]) -> list[Group]:
    """Runs split by protocol; a protocol's runs whose seed matches but windows differ are split too."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(protocol_key(run.record), []).append(run)
    groups = []
    for key, members in by_key.items():
        variants = _variants(members)
        for i, variant in enumerate(variants):
            title = protocol_title(variant[0].record)
            if len(variants) > 1:
                title += f" · corpus variant {i + 1} (other text under the same corpus name)"
            groups.append(Group(key + (i,), title, variant))
    return sorted(groups, key=lambda g: (g.title, str(g.key)))


def protocol_key(r: RunRecord) -> tuple:
    c = r.config
    count = c.get("count")
    return (r.model.get("fingerprint") or r.model.get("name") or r.model.get("spec"),
            r.site.get("name"), r.site.get("layers"), r.site.get("neurons_per_layer"),
            r.forget.get("spec"), r.retain.get("spec"),
            # What the corpora hold and how they are split and windowed (issue 9 changed all three).
            *((x.get("description"), x.get("split"), x.get("bos")) for x in (r.forget, r.retain)),
            c.get("steps"),
            c.get("fraction") if count is None else None, count,
            r.forget.get("stats_tokens", c.get("tokens")), r.forget.get("eval_tokens", c.get("eval_tokens")),
            r.retain.get("stats_tokens", c.get("tokens")), r.retain.get("eval_tokens", c.get("eval_tokens")),
            c.get("window", r.forget.get("window")))


def protocol_title(r: RunRecord) -> str:
    c = r.config
    model = r.model.get("spec") or r.model.get("name") or "?"
    fp = r.model.get("fingerprint")
    per_step = f"{c['count']:,} neurons" if c.get("count") else f"{100 * float(c.get('fraction') or 0):g} %"
    tokens = r.forget.get("stats_tokens", c.get("tokens"))
    eval_tokens = r.forget.get("eval_tokens", c.get("eval_tokens"))
    return (f"{model}{f' [{fp[:8]}]' if fp else ''} · {r.site.get('name', '?')} neurons · "
            f"forget {r.forget.get('spec', '?')} → retain {r.retain.get('spec', '?')} · "
            f"{c.get('steps', '?')} steps of {per_step} · {_int(tokens)} statistics + "
            f"{_int(eval_tokens)} evaluation tokens · window {c.get('window', '?')}")


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
    return run.record.forget.get("sha256"), run.record.retain.get("sha256")


# ---------------------------------------------------------------- rows

def build_rows(group: Group, sort: str = "selectivity") -> list[Row]:
    rows: dict[tuple, Row] = {}
    for run in group.runs:
        r = run.record
        plugin = f"{r.plugin.get('package', '?')} {r.plugin.get('version', '')}".strip()
        key = (r.method, plugin, _canon(r.options))
        rows.setdefault(key, Row(r.method, plugin, compact_options(r.options), [])).runs.append(run)
    for row in rows.values():
        row.runs.sort(key=lambda run: (run.record.seed, str(run.path)))
        per_run = [run_values(run) for run in row.runs]
        for col in COLUMNS:
            xs = [v[col.key] for v in per_run if v.get(col.key) is not None]
            row.values[col.key] = statistics.fmean(xs) if xs else None
            if len(xs) > 1:
                row.spread[col.key] = statistics.stdev(xs)
        row.values["runs"] = float(len(row.runs))
        row.sources = sorted({str(ref["source"]) for run in row.runs
                              if isinstance(ref := run.raw.get("reference"), dict) and ref.get("source")})
    return sort_rows(list(rows.values()), sort)


def sort_rows(rows: list[Row], sort: str) -> list[Row]:
    col = next(c for c in COLUMNS if c.key == sort)
    sign = 1 if col.better == "↓" else -1  # ↓: smallest first; otherwise largest first
    return sorted(rows, key=lambda r: (r.values.get(sort) is None, sign * (r.values.get(sort) or 0.0),
                                       r.method, r.options))


def run_values(run: Run) -> dict[str, float | None]:
    """One run's numbers, keyed like COLUMNS; accuracies in %, drops in points."""
    r = run.record
    s = r.summary or summarise([x.forget.top1 for x in r.steps], [x.retain.top1 for x in r.steps])
    first, last = r.steps[0], r.steps[-1]
    values: dict[str, float | None] = {
        "selectivity": s.selectivity, "forget_at_retain_5": s.forget_drop_at_retain_5, "auc": s.auc,
        "base_forget_top1": 100 * first.forget.top1, "base_retain_top1": 100 * first.retain.top1,
        "final_forget_top1": 100 * last.forget.top1, "final_retain_top1": 100 * last.retain.top1,
        "time": r.timings.get("method"),
    }
    for name, keys in EVALUATIONS.items():
        for which in ("base", "final"):
            v = evaluation(run.raw, name, which, keys)
            values[f"{name}_{which}"] = None if v is None else 100 * v
    ref = run.raw.get("reference")
    for metric in ("selectivity", "forget_at_retain_5", "auc"):
        values[f"ref_{metric}"] = _number(ref.get(metric), ()) if isinstance(ref, dict) else None
    return values


def evaluation(raw: dict, name: str, which: str, keys: tuple[str, ...] = ("value",)) -> float | None:
    """Evaluation `name` (a share in [0, 1]) before pruning ('base') or after the last step ('final').

    Looked up, first hit wins: steps[i].evaluations[name], steps[i].extras[name], steps[i][name]
    (step 0 for 'base', the last step that has it for 'final'), then evaluations[name][which] at
    the record's top level. A value is a number or an object holding one under one of `keys`.
    """
    steps = [s for s in raw.get("steps") or [] if isinstance(s, dict)]
    for step in (steps[:1] if which == "base" else steps[::-1]):
        for holder in (step.get("evaluations"), step.get("extras"), step):
            if isinstance(holder, dict) and (v := _number(holder.get(name), keys)) is not None:
                return v
    top = raw.get("evaluations")
    if isinstance(top, dict) and isinstance(top.get(name), dict):
        return _number(top[name].get(which), keys)
    return None


def _number(value: Any, keys: tuple[str, ...]) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        return next((v for k in keys if (v := _number(value.get(k), ())) is not None), None)
    return None


def compact_options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(options.items()))


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _int(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def leaderboard(paths: list[str | Path], sort: str = "selectivity"
                ) -> tuple[list[Group], list[tuple[Path, str]]]:
    """The groups, their rows sorted by `sort`, and the files skipped with the reason why."""
    if sort not in SORT_KEYS:
        raise unknown_name("sort column", sort, SORT_KEYS)
    runs, skipped = load_runs(paths)
    groups = group_runs(runs)
    for g in groups:
        g.rows = build_rows(g, sort)
    return groups, skipped
