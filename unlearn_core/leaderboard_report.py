"""The leaderboard as text, and `unlearn leaderboard`: markdown (one table per protocol group, ↑/↓
arrows), CSV (one header row, a protocol column) and one self-contained HTML page (no external URL;
plots inline as data URIs). In the HTML, clicking a header sorts its table (a few lines of inline
JavaScript): numeric columns by the exact value in each cell's data-v attribute, best first on the
first click (smallest first for ↓ columns), missing values always last; a second click reverses.
Runs that differ only in their neuron site also get the paper's Table 2 (selectivity by site and
importance, grid.py) in markdown and HTML, and in HTML its bar chart (the paper's Figure 3).

Text from records is made inert in every format: escaped in HTML, backslash-escaped in markdown
(table.md_text), and CSV cells that a spreadsheet would run as a formula get a leading quote.
"""

from __future__ import annotations

import base64
import csv
import io
import math
import os
import sys
from html import escape
from pathlib import Path

from .errors import UsageError, unknown_name
from .grid import SiteTable, site_tables
from .leaderboard import FORMATS, Column, Group, Row, input_files, leaderboard, resolved
from .plots import figure_title, render_figures, render_site_grid
from .records import write_atomic
from .table import md_text

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f3f3f3; cursor: pointer; user-select: none; }
th[aria-sort=descending]::after { content: " ▼"; } th[aria-sort=ascending]::after { content: " ▲"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 100%; }
.skipped { color: #a33; }
"""

SCRIPT = """
(function () {
  function value(td) {
    var v = td.getAttribute("data-v");
    return v === null || v === "" ? null : parseFloat(v);
  }
  function sortTable(table, index, th) {
    var numeric = th.hasAttribute("data-key");
    var current = th.getAttribute("aria-sort");
    var desc = current ? current === "ascending" : numeric && th.getAttribute("data-better") !== "↓";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index], y = b.cells[index];
      if (numeric) {
        var p = value(x), q = value(y);
        if (p === null || q === null) { return (p === null) - (q === null); }
        return desc ? q - p : p - q;
      }
      var s = x.textContent.localeCompare(y.textContent);
      return desc ? -s : s;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", desc ? "descending" : "ascending");
  }
  document.querySelectorAll("table.lb").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () { sortTable(table, i, th); });
    });
  });
})();
"""


def shown_columns(groups: list[Group]) -> list[Column]:
    """The groups' columns in order: every fixed one, and the optional ones some row has a value for."""
    have = {k for g in groups for row in g.rows for k, v in row.values.items() if v is not None}
    columns: dict[str, Column] = {}
    for g in groups:
        for c in g.columns:
            if not c.optional or c.key in have:
                columns.setdefault(c.key, c)
    fixed = [c for c in columns.values() if c.key in ("time", "runs")]
    return [c for c in columns.values() if c not in fixed] + fixed


def cell(row: Row, col: Column) -> str:
    v = row.values.get(col.key)
    if v is None:
        return "—"
    if col.key == "runs":
        seeds = sorted({r.record.seed for r in row.runs})
        return f"{len(row.runs)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
    text = f"{v:.0f}" if col.key == "time" else f"{v:.1f}"
    if col.key == "selectivity" and col.key in row.spread:
        text += f" ± {row.spread[col.key]:.1f}"
    return text


def render_md(groups: list[Group]) -> str:
    cols = shown_columns(groups)
    out = []
    for g in groups:
        head = ["method", "plugin", "options"] + [f"{c.title} {c.better}".strip() for c in cols]
        if any(row.sources for row in g.rows):
            head.append("reference source")
        lines = ["| " + " | ".join(map(md_text, head)) + " |", "|" + "---|" * len(head)]
        for row in g.rows:
            cells = [row.method, row.plugin, row.options or "—"] + [cell(row, c) for c in cols]
            if len(head) > len(cells):
                cells.append("; ".join(row.sources) or "—")
            lines.append("| " + " | ".join(map(md_text, cells)) + " |")
        out.append(f"## {md_text(g.title)}\n\n" + "\n".join(lines))
    for table in _site_tables(groups):
        out.append(f"## {md_text(SITE_TABLE_TITLE)}: {md_text(table.title)}\n\n{table.markdown()}")
    return "\n\n".join(out) + "\n"


SITE_TABLE_TITLE = "Selectivity (pts) by neuron site, the paper's Table 2"


def _site_tables(groups: list[Group]) -> list[SiteTable]:
    """Table 2 for every family of groups that differ only in their site (grid.py)."""
    return site_tables([run.record for g in groups for run in g.runs])


def csv_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting with = + - @ tab or CR would be read
    as a formula (=HYPERLINK(...)), so it gets a leading quote (OWASP's advice on CSV injection)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def render_csv(groups: list[Group]) -> str:
    cols = shown_columns(groups)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["protocol", "method", "plugin", "options"] + [csv_text(c.key) for c in cols]
               + ["selectivity_std", "seeds", "reference_source"])
    for g in groups:
        for row in g.rows:  # numbers are written by us ("-9", "1.5e+06") and stay numbers
            nums = [("" if (v := row.values.get(c.key)) is None else f"{v:.6g}") for c in cols]
            std = row.spread.get("selectivity")
            text = [csv_text(x) for x in (g.title, row.method, row.plugin, row.options)]
            w.writerow([*text, *nums, "" if std is None else f"{std:.6g}",
                        csv_text(" ".join(str(r.record.seed) for r in row.runs)),
                        csv_text("; ".join(row.sources))])
    return buf.getvalue()


def render_html(groups: list[Group], skipped: list[tuple[Path, str]], sort: str = "selectivity") -> str:
    cols = shown_columns(groups)
    runs = sum(len(g.runs) for g in groups)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>unlearn leaderboard</title>", f"<style>{CSS}</style></head><body>",
           "<h1>unlearn leaderboard</h1>",
           f"<p>{runs} runs in {len(groups)} protocol group{'s' if len(groups) != 1 else ''}; runs are "
           "ranked only within their group (same model, site, corpora, schedule and token budgets). "
           f"Sorted by <code>{escape(sort)}</code>; click a header to sort by it.</p>"]
    if len(groups) > 1:
        out.append("<ul>" + "".join(f'<li><a href="#g{i}">{escape(g.title)}</a></li>'
                                    for i, g in enumerate(groups, 1)) + "</ul>")
    for i, g in enumerate(groups, 1):
        out.append(f'<section id="g{i}"><h2>{escape(g.title)}</h2>')
        out.append(_table(g, cols, sort))
        out.append(_figures(g))
        out.append("</section>")
    for table in _site_tables(groups):
        out.append(f"<section><h2>{escape(SITE_TABLE_TITLE)}: {escape(table.title)}</h2>")
        out.append(_site_table_html(table))
        uri = "data:image/png;base64," + base64.b64encode(render_site_grid(table)).decode("ascii")
        out.append(f'<figure><img alt="Selectivity by neuron site" src="{uri}"></figure></section>')
    if skipped:
        out.append('<section class="skipped"><h2>Skipped files</h2><p>Not part of any table; '
                   "left as they are.</p><ul>")
        out += [f"<li><code>{escape(str(p))}</code>: {escape(reason)}</li>" for p, reason in skipped]
        out.append("</ul></section>")
    out.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "\n".join(out)


def _site_table_html(table: SiteTable) -> str:
    head = "".join(f"<th>{escape(s)}</th>" for s in ["method", *table.sites])
    body = []
    for label, by_site in table.rows.items():
        cells = "".join(f'<td class="num">{by_site[s]:.1f}</td>' if s in by_site else '<td class="num">—</td>'
                        for s in table.sites)
        body.append(f"<tr><td>{escape(label)}</td>{cells}</tr>")
    return f'<table class="sites"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _table(g: Group, cols: list[Column], sort: str) -> str:
    sources = any(row.sources for row in g.rows)
    head = ["<th>method</th>", "<th>plugin</th>", "<th>options</th>"]
    for c in cols:
        attrs = f' data-key="{escape(c.key)}" data-better="{escape(c.better)}"'
        if c.key == sort:
            attrs += f' aria-sort="{"ascending" if c.better == "↓" else "descending"}"'
        attrs += f' title="{escape(c.description)}"' if c.description else ""
        head.append(f"<th{attrs}>{escape(f'{c.title} {c.better}'.strip())}</th>")
    if sources:
        head.append("<th>published source</th>")
    body = [_row(row, cols, sources) for row in g.rows]
    return (f'<table class="lb"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _row(row: Row, cols: list[Column], sources: bool) -> str:
    options = row.options or "—"
    short = options if len(options) <= 60 else options[:59] + "…"
    tds = [f"<td>{escape(row.method)}</td>", f"<td>{escape(row.plugin)}</td>",
           f'<td title="{escape(options)}">{escape(short)}</td>']
    for c in cols:
        v = row.values.get(c.key)
        data = "" if v is None or not math.isfinite(v) else repr(float(v))  # inf, nan: sorted last
        tds.append(f'<td class="num" data-v="{data}">{escape(cell(row, c))}</td>')
    if sources:
        tds.append(f"<td>{escape('; '.join(row.sources) or '—')}</td>")
    return f"<tr>{''.join(tds)}</tr>"


def _figures(g: Group) -> str:
    records = [run.record for run in g.runs]
    refs = []
    for run in g.runs:
        sel = (run.record.reference or {}).get("selectivity")
        refs.append(float(sel) if isinstance(sel, (int, float)) and not isinstance(sel, bool) else None)
    figs = []
    for name, data in render_figures(records, refs).items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figs.append(f'<figure><img alt="{escape(figure_title(records, name))}" src="{uri}"></figure>')
    return "<div>" + "".join(figs) + "</div>"


def main_leaderboard(dirs: list[str], fmt: str | None = None, sort: str = "selectivity",
                     out: str | None = None) -> int:
    """`unlearn leaderboard DIR... [--format md|html|csv] [--sort COLUMN] [--out FILE]`.

    Without --format the format follows --out's suffix (.html, .csv), else markdown. Skipped
    files go to stderr, one line each; the table goes to `out` (written atomically) or stdout.
    """
    if fmt is None:
        suffix = Path(out).suffix.lower() if out else ""
        fmt = {".html": "html", ".htm": "html", ".csv": "csv"}.get(suffix, "md")
    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    if out:
        check_out(out, dirs)
    groups, skipped = leaderboard(dirs, sort)
    for path, reason in skipped:
        print(f"unlearn: skipped {path}: {reason}", file=sys.stderr)
    if not groups:
        raise UsageError(f"no usable run records under {', '.join(dirs)} ({len(skipped)} files skipped)")
    text = {"md": render_md, "csv": render_csv}[fmt](groups) if fmt != "html" else (
        render_html(groups, skipped, sort))
    text = text.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate from a record's JSON: '?'
    if out:
        try:
            write_atomic(Path(out), text)
        except OSError as e:
            raise UsageError(f"cannot write --out {out}: {e.strerror or e}") from None
        rows, plural = sum(len(g.rows) for g in groups), "s" if len(groups) != 1 else ""
        print(f"leaderboard: {rows} rows in {len(groups)} protocol group{plural} -> {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def check_out(out: str, dirs: list[str]) -> None:
    """UsageError unless `out` is a file the leaderboard may write: not a folder, in a folder that
    exists or can be made, and not one of its inputs (a file it reads, or a *.json in an input
    folder, which the next leaderboard would read)."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"--out {out} is a folder; name a file in it, e.g. {path / 'leaderboard.html'}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--out {out} exists and is not a regular file (without --out the table goes "
                         "to stdout)")
    parent = path.absolute().parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent  # write_atomic makes the missing folders
    if not parent.is_dir():
        raise UsageError(f"cannot write --out {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write --out {out}: {parent} is not writable")
    target = resolved(path)
    for f in input_files(dirs):
        if resolved(f) == target:
            raise UsageError(f"--out {out} is one of the input files ({f}); the leaderboard never "
                             "overwrites what it reads")
    for d in map(Path, dirs):
        if d.is_dir() and path.suffix.lower() == ".json" and target.is_relative_to(resolved(d)):
            raise UsageError(f"--out {out} is a *.json inside the input folder {d}; the leaderboard "
                             "would read it as a run record: choose another name or folder")
