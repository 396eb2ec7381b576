"""A third-party evaluation reaches the bench table, the leaderboard (md, csv, html) and the plots
with no change to the core: its EvaluationSpec declares its headline figures and their direction."""

import csv
import io
import re

import torch
from pydantic import BaseModel, ConfigDict

from unlearn_core import BenchConfig, EvaluationSpec, Figure, hookimpl, load_plugins, run_bench
from unlearn_core.leaderboard import leaderboard
from unlearn_core.leaderboard_report import render_csv, render_html, render_md
from unlearn_core.table import summary_table


class KeptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: int = 0


class KeptWeight:
    """The share of the MLP output projection's weight mass still there (falls as neurons go)."""

    def __init__(self, model, layer: int):
        self.layer = layer
        self.initial = float(self._mass(model))

    def _mass(self, model) -> torch.Tensor:
        return model.model.layers[self.layer].mlp.down_proj.weight.detach().abs().sum()

    def evaluate(self, model) -> dict:
        kept = float(self._mass(model)) / self.initial
        return {"weights": {"kept": kept}, "layer": self.layer, "lost": 1 - kept}


class KeptPlugin:
    @hookimpl
    def register_evaluations(self, register):
        register(EvaluationSpec(
            "kept", "weight mass kept", lambda options, ctx: KeptWeight(ctx.model, options.layer),
            KeptOptions,
            figures=(Figure(key="weights.kept", title="weight kept", higher_is_better=False),
                     Figure(key="lost", title="weight lost", scale=1.0, unit=""))))


def test_an_inline_evaluation_gets_its_columns_everywhere(tiny_folder, text_corpora, tmp_path):
    forget, retain = text_corpora
    config = BenchConfig(methods=["selective", "random"], model=str(tiny_folder), forget=forget,
                         retain=retain, preset="smoke", steps=2, fraction=0.1, tokens=512, eval_tokens=256,
                         window=64, evals=["tokens", "kept"], options={"kept": {"layer": 1}})
    registry = load_plugins(extra=[("kept-plugin", KeptPlugin())])
    records = run_bench(config, out=tmp_path, registry=registry, progress=False, log=lambda m: None)

    record = records[0]
    info = record.evaluations["kept"]
    assert info.options == {"layer": 1} and info.plugin.name == "kept-plugin"
    assert [f.key for f in info.figures] == ["weights.kept", "lost"]
    kept = [s.evaluations["kept"]["weights"]["kept"] for s in record.steps]
    assert kept[0] == 1.0 and kept[-1] < kept[1] < 1.0  # deleting neurons removes weight mass

    table = summary_table(records)
    assert "| weight kept % ↓ | weight lost |" in table
    assert table.splitlines()[2].endswith("| 100.0 | 0.0 | 0.0 | |")  # base: all kept, none lost, 0 % pruned
    assert f"| {100 * kept[-1]:.1f} |" in table.splitlines()[3]  # selective's final value

    groups, skipped = leaderboard([tmp_path], sort="kept_weights_kept_final")
    assert not skipped and len(groups) == 1
    md = render_md(groups)
    head = md.splitlines()[2]
    assert "| base weight kept % |" in head and "| final weight kept % ↓ |" in head
    assert "| final weight lost |" in head  # no direction, no arrow
    assert [r.method for r in groups[0].rows] == sorted(
        ["selective", "random"], key=lambda m: next(r for r in records if r.method == m).steps[-1]
        .evaluations["kept"]["weights"]["kept"])  # ↓: smallest first

    rows = list(csv.DictReader(io.StringIO(render_csv(groups))))
    selective = next(r for r in rows if r["method"] == "selective")
    assert abs(float(selective["kept_weights_kept_final"]) - 100 * kept[-1]) < 1e-3
    assert float(selective["kept_weights_kept_base"]) == 100.0

    html = render_html(groups, [])
    assert re.search(r'<th data-key="kept_weights_kept_final" data-better="↓"[^>]*>final weight kept % ↓</th>',
                     html)
    assert 'alt="weight kept per pruning step"' in html
    assert (tmp_path / next(p.name for p in tmp_path.glob("plots-*-fig_kept_weights_kept.png"))).stat().st_size
