"""Plots of run records (matplotlib, Agg, no pyplot): the paper's Figures 1 and 2 and Table 2,
and one curve per figure an evaluation declares (e.g. cloze accuracy against neurons deleted).

    from unlearn_core.plots import plot_runs
    paths = plot_runs(records, "results")   # fig1_..., fig2_..., fig3_..., fig_cloze_accuracy.png

Pass the records of one protocol (same model, corpora and schedule; see leaderboard.py). A
"series" is a method with its options; several runs of one series (seeds) are drawn in one
colour. The same records always give the same bytes: fixed size and dpi, no software or date
metadata. Files are written atomically (a temporary file, then os.replace).

Labels come from records (method names, options, evaluation titles): they are drawn as plain text
(no mathtext: a '$' in a name would be parsed as a formula and crash), with secrets redacted, and
points that are not finite (a hand-edited record) are left out rather than breaking the axes.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .metrics import relative_drop, summarise
from .records import Figure, RunRecord, declared_figures, write_atomic
from .redact import redact, redact_text

FIGURES = {
    "fig1_forget_vs_retain_drop.png": "Forget vs retain top-1 drop",
    "fig2_forget_vs_retain_perplexity.png": "Forget vs retain perplexity",
    "fig3_selectivity.png": "Selectivity per method",
}
SIZE = (6.4, 4.8)  # inches
DPI = 100
PNG_METADATA = {"Software": None}  # matplotlib writes no date into PNGs; drop its version too
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}  # labels are names, never formulas
MAX_LABEL = 80  # characters of a legend or tick label


def plot_runs(records: Sequence[RunRecord], out_dir: str | Path, prefix: str = "",
              references: Sequence[float | None] | None = None) -> list[Path]:
    """Write the three figures into `out_dir` (as `prefix` + name); return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in render_figures(records, references).items():
        path = out / f"{prefix}{name}"
        write_atomic(path, data)
        paths.append(path)
    return paths


def render_figures(records: Sequence[RunRecord],
                   references: Sequence[float | None] | None = None) -> dict[str, bytes]:
    """PNG bytes of each figure, keyed by file name. `references`: a published selectivity per
    record (or None), drawn beside ours in the bar chart."""
    with _plain_text():
        return _render(records, references)


@contextmanager
def _plain_text() -> Iterator[None]:
    """Labels as plain text; and no warnings (a glyph the font lacks, overflow on a hand-edited
    record's huge numbers) in the leaderboard's one-line-per-problem stderr."""
    from matplotlib import rc_context

    with rc_context(PLAIN_TEXT), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _render(records: Sequence[RunRecord], references: Sequence[float | None] | None) -> dict[str, bytes]:
    ref_of = {id(r): ref for r, ref in zip(records, references or [None] * len(records), strict=True)}
    series = _series(records)
    published: dict[str, float] = {}
    for label, runs in series.items():
        vals = [ref for r in runs if (ref := ref_of[id(r)]) is not None and math.isfinite(ref)]
        if vals:
            published[label] = sum(vals) / len(vals)
    colours = _colours(list(series))
    figures = {
        "fig1_forget_vs_retain_drop.png": _fig_drops(series, colours),
        "fig2_forget_vs_retain_perplexity.png": _fig_perplexity(series, colours),
        "fig3_selectivity.png": _fig_selectivity(series, colours, published),
    }
    for (evaluation, figure), name in evaluation_figures(records).items():
        figures[name] = _fig_evaluation(series, colours, evaluation, figure)
    return figures


def evaluation_figures(records: Sequence[RunRecord]) -> dict[tuple[str, Figure], str]:
    """(evaluation, figure) -> file name, for every figure the records' evaluations declare."""
    return {(evaluation, figure): f"fig_{_file_part(f'{evaluation}_{figure.key}')}.png"
            for evaluation, figure in declared_figures(records)}


def _file_part(name: str) -> str:
    """`name` as part of a file name: a record's evaluation or figure key ('../x', 'a/b') must not
    lead out of the folder; other characters become '_', plus a hash so that names stay apart."""
    safe = re.sub(r"[^A-Za-z0-9_+-]", "_", name)[:80]
    if safe == name.replace(".", "_"):
        return safe
    return f"{safe}_{hashlib.sha256(name.encode('utf-8', 'replace')).hexdigest()[:8]}"


def figure_title(records: Sequence[RunRecord], name: str) -> str:
    """What a figure file shows, for alt text."""
    if name in FIGURES:
        return FIGURES[name]
    return next(f"{figure.title} per pruning step" for (_, figure), n in evaluation_figures(records).items()
                if n == name)


def series_label(record: RunRecord, with_options: bool) -> str:
    """The method, and its options when the method ran with several; secrets redacted."""
    label = redact_text(record.method)
    if with_options and record.options:
        label += f" ({', '.join(f'{k}={v}' for k, v in sorted(redact(record.options).items()))})"
    return label


def _label(text: str) -> str:
    """`text` as matplotlib draws it: short, '?' for what UTF-8 cannot encode (a lone surrogate
    from JSON), and not starting with '_' (which would hide it from the legend)."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 1] + "…"
    return f" {text}" if text.startswith("_") else text


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _series(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """Label -> its runs (with at least one pruning step), in a fixed order."""
    ordered = sorted((r for r in records if len(r.steps) >= 2),
                     key=lambda r: (r.method, json.dumps(r.options, sort_keys=True, default=str), r.seed))
    option_sets: dict[str, set[str]] = {}
    for r in ordered:
        option_sets.setdefault(r.method, set()).add(json.dumps(r.options, sort_keys=True, default=str))
    out: dict[str, list[RunRecord]] = {}
    for r in ordered:
        out.setdefault(series_label(r, len(option_sets[r.method]) > 1), []).append(r)
    return out


def _colours(labels: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_title(_label(title))
    ax.set_xlabel(_label(xlabel))
    ax.set_ylabel(_label(ylabel))
    ax.grid(True, alpha=0.3)
    return fig, ax


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=PNG_METADATA)
    return buf.getvalue()


def _fig_drops(series: dict[str, list[RunRecord]], colours: dict) -> bytes:
    """Figure 1: relative top-1 drop (%) of forget (y) against retain (x), one marker per step."""
    fig, ax = _figure(FIGURES["fig1_forget_vs_retain_drop.png"], "retain top-1 drop (%)",
                      "forget top-1 drop (%)")
    lo, hi = 0.0, 1.0
    for label, runs in series.items():
        for i, r in enumerate(runs):
            points = [(100 * relative_drop(r.steps[0].retain.top1, s.retain.top1),
                       100 * relative_drop(r.steps[0].forget.top1, s.forget.top1)) for s in r.steps]
            g, f = [x for x, y in points if _finite(x, y)], [y for x, y in points if _finite(x, y)]
            lo, hi = min([lo, *f, *g]), max([hi, *f, *g])
            ax.plot(g, f, marker="o", markersize=4, linewidth=1.5, color=colours[label],
                    alpha=1.0 if len(runs) == 1 else 0.7, label=_label(label) if i == 0 else None)
    pad = 0.05 * (hi - lo)
    lim = (lo - pad if lo < 0 else 0.0, hi + pad)
    ax.plot(lim, lim, linestyle="--", color="grey", linewidth=1, label="equal drop")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    if series:
        ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def _fig_perplexity(series: dict[str, list[RunRecord]], colours: dict) -> bytes:
    """Figure 2: forget perplexity (y) against retain perplexity (x), log scales; the base is a star."""
    fig, ax = _figure(FIGURES["fig2_forget_vs_retain_perplexity.png"], "retain perplexity",
                      "forget perplexity")
    for label, runs in series.items():
        for i, r in enumerate(runs):
            points = [(s.retain.perplexity, s.forget.perplexity) for s in r.steps]
            points = [(x, y) for x, y in points if _finite(x, y) and x > 0 and y > 0]  # log scales
            x, y = [p[0] for p in points], [p[1] for p in points]
            ax.plot(x, y, marker="o", markersize=4, linewidth=1.5, color=colours[label],
                    alpha=1.0 if len(runs) == 1 else 0.7, label=_label(label) if i == 0 else None)
            ax.plot(x[:1], y[:1], marker="*", markersize=10, color=colours[label], linestyle="none")
    if series:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(loc="upper left", fontsize="small")
    return _png(fig)


def _fig_evaluation(series: dict[str, list[RunRecord]], colours: dict, evaluation: str,
                    figure: Figure) -> bytes:
    """An evaluation's headline figure (y) against the share of neurons deleted (x)."""
    fig, ax = _figure(f"{figure.title} {figure.arrow}".strip(), "neurons deleted (%)",
                      f"{figure.title} ({figure.unit})" if figure.unit else figure.title)
    for label, runs in series.items():
        for i, r in enumerate(runs):
            points = [(100 * s.pruned_fraction, v) for s in r.steps
                      if (v := figure.value(s.evaluations.get(evaluation))) is not None
                      and _finite(100 * s.pruned_fraction, v)]
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=4,
                        linewidth=1.5, color=colours[label], alpha=1.0 if len(runs) == 1 else 0.7,
                        label=_label(label) if i == 0 else None)
    if series:
        ax.legend(loc="best", fontsize="small")
    return _png(fig)


def _fig_selectivity(series: dict[str, list[RunRecord]], colours: dict,
                     references: dict[str, float]) -> bytes:
    """Table 2 as bars: mean selectivity per series, ± std over runs, published figure beside it."""
    fig, ax = _figure(FIGURES["fig3_selectivity.png"], "", "selectivity (points)")
    labels = list(series)
    means, errs = [], []
    for label in labels:
        sels = [(r.summary or summarise([s.forget.top1 for s in r.steps],
                                        [s.retain.top1 for s in r.steps])).selectivity for r in series[label]]
        vals = [v for v in sels if math.isfinite(v)] or [math.nan]  # nan: no bar
        mean = sum(vals) / len(vals)
        err = math.sqrt(sum((v - mean) * (v - mean) for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        means.append(mean)
        errs.append(err if math.isfinite(err) else 0.0)
    xs = list(range(len(labels)))
    has_ref = any(label in references for label in labels)
    width = 0.4 if has_ref else 0.6
    shift = -width / 2 if has_ref else 0.0
    ax.bar([x + shift for x in xs], means, width, color=[colours[label] for label in labels])
    spread = [(x + shift, m, e) for x, m, e in zip(xs, means, errs, strict=True) if e > 0]
    if spread:
        ax.errorbar([s[0] for s in spread], [s[1] for s in spread], yerr=[s[2] for s in spread],
                    fmt="none", ecolor="black", capsize=4)
    if has_ref:
        ref_x = [x + width / 2 for x, label in zip(xs, labels, strict=True) if label in references]
        ref_y = [references[label] for label in labels if label in references]
        ax.bar(ref_x, ref_y, width, color="white", edgecolor="black", hatch="//")
        for x, y in zip(ref_x, ref_y, strict=True):
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(0, 3 if y >= 0 else -12),
                        ha="center", fontsize="small")
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor="grey", label="ours (mean ± std over runs)"),
                           Patch(facecolor="white", edgecolor="black", hatch="//", label="published")],
                  fontsize="small")
    ax.axhline(0, color="black", linewidth=0.8)
    tilt = len(labels) > 3
    ax.set_xticks(xs, [_label(label) for label in labels], rotation=20 if tilt else 0,
                  ha="right" if tilt else "center")
    for x, m, e in zip(xs, means, errs, strict=True):
        if not _finite(m):
            continue
        ax.annotate(f"{m:.1f}", (x + shift, m + e if m >= 0 else m - e), textcoords="offset points",
                    xytext=(0, 3 if m >= 0 else -12), ha="center", fontsize="small")
    return _png(fig)


# The paper's Figure 3: selectivity by site, a bar per method and importance --------------------

SITE_GRID_FIGURE = "fig3_selectivity_by_site.png"


def plot_site_grid(records: Sequence[RunRecord], out_dir: str | Path) -> list[Path]:
    """For every family of comparable runs on two or more sites (grid.site_tables), its bar chart
    as `grid-<family key>-fig3_selectivity_by_site.png` in `out_dir`; return the paths."""
    from .grid import site_tables

    out = Path(out_dir)
    paths = []
    for table in site_tables(records):
        path = out / f"grid-{table.key[:8]}-{SITE_GRID_FIGURE}"
        write_atomic(path, render_site_grid(table))
        paths.append(path)
    return paths


def render_site_grid(table) -> bytes:
    """PNG bytes of a grid.SiteTable: a group of bars per site, one colour per row (method and
    importance), the value over each bar."""
    with _plain_text():
        fig, ax = _figure("Selectivity by neuron site", "neuron site", "selectivity (points)")
        labels = list(table.rows)
        colours = _colours(labels)
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            xs = [j + (i - (len(labels) - 1) / 2) * width for j, site in enumerate(table.sites)
                  if _finite(table.rows[label].get(site, math.nan))]
            ys = [v for site in table.sites if _finite(v := table.rows[label].get(site, math.nan))]
            ax.bar(xs, ys, width, color=colours[label], label=_label(label))
            for x, y in zip(xs, ys, strict=True):
                ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(0, 2 if y >= 0 else -9),
                            ha="center", fontsize="x-small")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(table.sites)), [_label(s) for s in table.sites])
        ax.legend(fontsize="x-small")
        return _png(fig)
