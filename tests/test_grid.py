"""The grid: every (method, site, importance) in one bench, the model loaded once, one record each,
each record the same as running its cell alone; resume per record; the paper's Table 2 and its
bar chart from the records; a bad grid refused before the model loads."""

from __future__ import annotations

import copy
import json

import pytest

import unlearn_core.bench as bench
from unlearn_core import Architecture, BenchConfig, UsageError, hookimpl, load_plugins, mlp_site, run_bench
from unlearn_core.cli import main
from unlearn_core.grid import family_key, site_tables
from unlearn_core.protocol import Protocol
from unlearn_core.records import load_record
from unlearn_core.testing import save_tiny

SITES = ["mlp", "attn-value", "attn-head"]
IMPORTANCES = ["abs", "rms"]


def _config(tiny_folder, corpora, **kw) -> BenchConfig:
    forget, retain = corpora
    base = dict(methods=["selective", "random"], model=str(tiny_folder), forget=forget, retain=retain,
                preset="smoke", steps=2, fraction=0.25, tokens=512, eval_tokens=256, window=64, seed=3)
    return BenchConfig(**{**base, **kw})


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """Every model the bench loads (the real loader runs)."""
    seen: list[str] = []
    real = bench.load_model

    def counting(spec, *args, **kwargs):
        seen.append(spec)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(bench, "load_model", counting)
    return seen


def _grid(tiny_folder, corpora, out, log=None):
    return run_bench(_config(tiny_folder, corpora), out=out, progress=False, log=log or (lambda m: None),
                     sites=SITES, importances=IMPORTANCES)


def _numbers(record):
    steps = [(s.forget.model_dump(), s.retain.model_dump(), s.pruned) for s in record.steps]
    return steps, record.pruned_neurons


def test_grid_runs_every_cell_once_on_one_loaded_model(tiny_folder, text_corpora, tmp_path, loads,
                                                       monkeypatch):
    configs: list[str] = []
    real_config = bench.load_config
    monkeypatch.setattr(bench, "load_config", lambda spec: configs.append(spec) or real_config(spec))
    records = _grid(tiny_folder, text_corpora, tmp_path)
    assert loads == [str(tiny_folder)]
    assert configs == [str(tiny_folder)]  # the config is read once for every site's schedule
    cells = [(r.site.name, r.method, r.options.get("importance")) for r in records]
    assert cells == [(s, m, i) for s in SITES for m, i in
                     [("selective", "abs"), ("selective", "rms"), ("random", None)]]
    assert len(list(tmp_path.glob("*.json"))) == 9
    neurons = {"mlp": 48, "attn-value": 16, "attn-head": 4}  # tiny llama: 4 heads on 2 kv heads of 8
    for r in records:
        n = neurons[r.site.name]
        assert r.complete and r.config.site == r.site.name and r.site.neurons_per_layer == n
        assert r.site.schedule == [round(0.25 * 2 * n), 2 * round(0.25 * 2 * n)]
        if r.method == "selective":  # the record's own config reproduces its cell
            assert r.config.options["selective"]["importance"] == r.options["importance"]
    assert all(r.steps[0] == records[0].steps[0] for r in records)  # one unpruned model for all
    assert len(list(tmp_path.glob("grid-*-fig3_selectivity_by_site.png"))) == 1
    assert len(list(tmp_path.glob("plots-*-fig1_forget_vs_retain_drop.png"))) == 3  # one per site


def test_every_record_of_the_grid_is_its_cell_run_alone(tiny_folder, text_corpora, tmp_path):
    """Sites share the model: a site's deletions must not leak into the next, nor an importance's
    into the next; so each record equals the same cell run on its own, in a fresh folder."""
    grid = {(r.site.name, r.method, r.options.get("importance")): r
            for r in _grid(tiny_folder, text_corpora, tmp_path / "grid")}
    for site, importance in [("attn-value", "rms"), ("attn-head", "abs"), ("mlp", "rms")]:
        alone = run_bench(_config(tiny_folder, text_corpora, methods=["selective"], site=site,
                                  options={"selective": {"importance": importance}}),
                          out=tmp_path / f"alone-{site}", progress=False, log=lambda m: None)[0]
        assert _numbers(alone) == _numbers(grid[(site, "selective", importance)])
        name = next((tmp_path / f"alone-{site}").glob("selective-*.json")).name
        assert (tmp_path / "grid" / name).exists()  # the same run key: a grid resumes a lone run and back


def test_an_interrupted_grid_resumes_record_by_record(tiny_folder, text_corpora, tmp_path, loads):
    first = _grid(tiny_folder, text_corpora, tmp_path)
    files = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    by_cell = {(r.site.name, r.method, r.options.get("importance")): r for r in first}
    paths = {(r.site.name, r.method, r.options.get("importance")): p
             for p in tmp_path.glob("*.json") for r in [load_record(p)]}
    gone, cut = paths[("attn-value", "selective", "rms")], paths[("attn-head", "random", None)]
    gone.unlink()
    raw = json.loads(cut.read_text())
    raw["steps"], raw["complete"] = raw["steps"][:2], False
    raw["pruned_neurons"] = [sorted(x)[:1] for x in raw["pruned_neurons"]]  # step 1 deleted 2 of 8 heads
    cut.write_text(json.dumps(raw))
    logs: list[str] = []
    again = _grid(tiny_folder, text_corpora, tmp_path, log=logs.append)
    assert any("random on attn-head: resuming after step 1" in m for m in logs)
    started = {m.split(" step 1/")[0] for m in logs if " step 1/" in m}
    assert started == {"selective rms on attn-value"}  # every finished record is left alone
    for p in tmp_path.glob("*.json"):
        if p not in (gone, cut):
            assert p.read_bytes() == files[p.name]
    for r in again:
        key = (r.site.name, r.method, r.options.get("importance"))
        if key != ("attn-head", "random", None):  # resumed from a hand-cut record: other step-1 heads
            assert _numbers(r) == _numbers(by_cell[key])


def _mlp_only_architecture():
    class Plugin:
        @staticmethod
        @hookimpl
        def register_architectures(register):
            register(Architecture("phi3-mlp", ("phi3",), {
                "mlp": mlp_site(("model.layers",), ("mlp.gate_up_proj",), "mlp.down_proj")}))
    return Plugin


@pytest.mark.parametrize("argv, says", [
    (["--site", "mlp,attn-value"], "architecture 'phi3-mlp' has no neuron site 'attn-value'; it has: mlp"),
    (["--site", "mlp,nope"], "unknown neuron site 'nope'"),
])
def test_a_bad_grid_is_refused_before_the_model_loads(tmp_path, text_corpora, loads, capsys, monkeypatch,
                                                      argv, says):
    phi = save_tiny(tmp_path / "phi", "phi3", configs={"phi3": ("Phi3Config", dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, pad_token_id=0))})
    registry = load_plugins(extra=[("phi3-mlp", _mlp_only_architecture())])
    monkeypatch.setattr("unlearn_core.plugins.load_plugins", lambda **kw: registry)
    code = main(["bench", "--method", "selective,random", "--model", str(phi), "--forget", text_corpora[0],
                 "--retain", text_corpora[1], "--preset", "smoke", "--window", "64", "--quiet",
                 "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err
    assert loads == [] and not (tmp_path / "out").exists()


def test_schedule_overflow_names_the_site_before_loading(tiny_folder, text_corpora, loads):
    with pytest.raises(UsageError, match="site 'attn-head' \\(2 layers x 4\\)"):
        run_bench(_config(tiny_folder, text_corpora, fraction=None, count=5), progress=False,
                  log=lambda m: None, sites=["mlp", "attn-head"])
    assert loads == []


def test_table_2_holds_each_records_selectivity_per_site(tiny_folder, text_corpora, tmp_path):
    records = _grid(tiny_folder, text_corpora, tmp_path)
    [table] = site_tables(records)
    assert table.sites == SITES
    assert list(table.rows) == ["random", "selective (importance=abs)", "selective (importance=rms)"]
    for r in records:
        label = "random" if r.method == "random" else f"selective (importance={r.options['importance']})"
        assert table.rows[label][r.site.name] == r.summary.selectivity
    # another forget corpus is another family; one site alone is no table
    other = copy.deepcopy(records)
    for r in other:
        r.forget.spec += "-other"
    assert len(site_tables(records + other)) == 2
    assert site_tables([r for r in records if r.site.name == "mlp"]) == []
    assert len({family_key(Protocol.of(r)) for r in records}) == 1
    assert len({Protocol.of(r).key for r in records}) == 3


def test_leaderboard_shows_table_2_and_its_bar_chart(tiny_folder, text_corpora, tmp_path, capsys):
    records = _grid(tiny_folder, text_corpora, tmp_path / "res")
    assert main(["leaderboard", str(tmp_path / "res")]) == 0
    md = capsys.readouterr().out
    section = md[md.index("by neuron site, the paper's Table 2"):]
    assert "| method | mlp | attn-value | attn-head |" in section
    mlp_rms = next(r for r in records if r.site.name == "mlp" and r.options.get("importance") == "rms")
    assert f"| selective (importance=rms) | {mlp_rms.summary.selectivity:.1f} |" in section
    assert main(["leaderboard", str(tmp_path / "res"), "--out", str(tmp_path / "lb.html")]) == 0
    html = (tmp_path / "lb.html").read_text()
    assert 'alt="Selectivity by neuron site"' in html and "Table 2" in html
