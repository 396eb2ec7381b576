"""Markdown tables of run records: a summary row per method, and the per-step curves."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .metrics import relative_drop
from .records import Figure, RunRecord, StepRecord, declared_figures
from .redact import redact, redact_text

# Backslash-escaped (CommonMark): '|' would end a cell, '<' '>' start HTML, '[' ']' links and images,
# '`' code spans, and '\\' itself, so that a '\\|' in the text cannot end a cell either.
_MD_ESCAPES = str.maketrans({c: "\\" + c for c in "\\|<>[]`"})
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # line breaks (and other controls) end a row


def md_text(text: str) -> str:
    """`text` as one markdown table cell or heading: shown as written, never HTML, a link or a
    second row."""
    return _LINE_BREAKS.sub(" ", str(text)).translate(_MD_ESCAPES)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def run_labels(records: Sequence[RunRecord]) -> list[str]:
    """Each record's method, with the options in which that method's records differ, e.g.
    'selective (importance=rms)'; secrets redacted."""
    seen: dict[str, list[dict]] = {}
    for r in records:
        seen.setdefault(r.method, []).append(redact(r.options))
    labels = []
    for r in records:
        options = redact(r.options)
        varying = sorted(k for k in options if any(o.get(k) != options[k] for o in seen[r.method]))
        shown = ", ".join(f"{k}={_value(options[k])}" for k in varying)
        labels.append(redact_text(r.method) + (f" ({shown})" if shown else ""))
    return labels


def _value(v: object) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def summary_table(records: list[RunRecord]) -> str:
    """One row per method (plus the shared base row), with arrows saying which way is better, and
    a column for every figure the records' evaluations declare."""
    figures = declared_figures(records)
    columns = ["method", "selectivity (pts) ↑", "forget drop @ retain drop ≤5% (pts) ↑", "forget top-1 % ↓",
               "retain top-1 % ↑", "forget ppl ↑", "retain ppl ↓",
               *(md_text(" ".join(x for x in (f.title, f.unit, f.arrow) if x)) for _, f in figures),
               "pruned %", "time s ↓"]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    if records and records[0].steps:
        base = records[0].steps[0]
        rows.append(f"| base (step 0) | | | {_pct(base.forget.top1)} | {_pct(base.retain.top1)} | "
                    f"{base.forget.perplexity:.2f} | {base.retain.perplexity:.2f} | "
                    + "".join(f"{_figure(base, name, f)} | " for name, f in figures) + "0.0 | |")
    for r, label in zip(records, run_labels(records), strict=True):
        last = r.steps[-1]
        s = r.summary
        sel = f"{s.selectivity:.1f}" if s else "—"
        at5 = f"{s.forget_drop_at_retain_5:.1f}" if s else "—"
        rows.append(
            f"| {md_text(label)} | {sel} | {at5} | {_pct(last.forget.top1)} | {_pct(last.retain.top1)} | "
            f"{last.forget.perplexity:.2f} | {last.retain.perplexity:.2f} | "
            + "".join(f"{_figure(last, name, f)} | " for name, f in figures)
            + f"{_pct(last.pruned_fraction)} | {r.timings.get('method', 0):.0f} |"
        )
    return "\n".join(rows)


def _figure(step: StepRecord, evaluation: str, figure: Figure) -> str:
    v = figure.value(step.evaluations.get(evaluation))
    return "—" if v is None else f"{v:.1f}"


def curves_table(records: list[RunRecord]) -> str:
    """Relative top-1 drop (%) of forget and retain after every step, one column pair per method."""
    columns = ["step", "pruned %"] + [f"{md_text(label)} {corpus} drop %" for label in run_labels(records)
                                      for corpus in ("forget", "retain")]
    rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    n = max(len(r.steps) for r in records) if records else 0
    for i in range(n):
        cells = []
        frac = ""
        for r in records:
            if i < len(r.steps):
                s, b = r.steps[i], r.steps[0]
                frac = _pct(s.pruned_fraction)
                cells += [_pct(relative_drop(b.forget.top1, s.forget.top1)),
                          _pct(relative_drop(b.retain.top1, s.retain.top1))]
            else:
                cells += ["", ""]
        rows.append(f"| {i} | {frac} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
