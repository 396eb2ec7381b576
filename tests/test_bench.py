"""The bench end to end on a tiny model folder: records, counts, determinism, resume."""


import pytest

from unlearn_core import BenchConfig, EvaluationSpec, UsageError, hookimpl, load_plugins, run_bench
from unlearn_core.cli import main
from unlearn_core.records import load_record


def _config(tiny_folder, corpora, **kw):
    forget, retain = corpora
    base = dict(methods=["selective", "random"], model=str(tiny_folder), forget=forget,
                retain=retain, preset="smoke", steps=3, fraction=0.1, tokens=512,
                eval_tokens=256, window=64, seed=7)
    return BenchConfig(**{**base, **kw})


def _metrics(records):
    return [[(s.forget.model_dump(), s.retain.model_dump(), s.pruned) for s in r.steps]
            for r in records]


def test_bench_writes_one_complete_record_per_method(tiny_folder, text_corpora, tmp_path):
    records = run_bench(_config(tiny_folder, text_corpora), out=tmp_path, progress=False,
                        log=lambda m: None)
    assert [r.method for r in records] == ["selective", "random"]
    files = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(files) == 2 and files[0].startswith("random-") and files[1].startswith("selective-")
    cumulative = [0, 10, 19, 29]  # round(k x 0.1 x 96): as close to k x 10 % as whole neurons allow
    for r in records:
        assert r.complete and [s.step for s in r.steps] == [0, 1, 2, 3]
        assert [s.pruned for s in r.steps] == cumulative and r.site.schedule == cumulative[1:]
        assert sum(len(x) for x in r.pruned_neurons) == 29
        assert r.plugin.package == "unlearn"
        assert r.summary is not None and r.model.fingerprint
        assert r.forget.eval_tokens == 256 and r.forget.stats_tokens == 512
        assert "torch" in r.versions and r.seed == 7
    # Both methods start from the same weights: identical step 0.
    assert records[0].steps[0] == records[1].steps[0]
    # Different methods choose different neurons.
    assert records[0].pruned_neurons != records[1].pruned_neurons
    on_disk = load_record(next(tmp_path.glob("selective-*.json")))
    assert on_disk.steps == records[0].steps


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_folder, text_corpora):
    run = lambda seed: run_bench(_config(tiny_folder, text_corpora, seed=seed, steps=2),  # noqa: E731
                                 progress=False, log=lambda m: None)
    a, b, c = run(1), run(1), run(2)
    assert _metrics(a) == _metrics(b)
    assert _metrics(a) != _metrics(c)


def test_interrupted_run_resumes_to_the_same_numbers(tiny_folder, text_corpora, tmp_path):
    config = _config(tiny_folder, text_corpora)
    full = run_bench(config, out=tmp_path / "full", progress=False, log=lambda m: None)

    def stop_after_step_1(message):
        if "selective on mlp step 1/" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config, out=tmp_path / "cut", progress=False, log=stop_after_step_1)
    partial = load_record(next((tmp_path / "cut").glob("selective-*.json")))
    assert len(partial.steps) == 2 and not partial.complete
    logs = []
    resumed = run_bench(config, out=tmp_path / "cut", progress=False, log=logs.append)
    assert any("selective on mlp: resuming after step 1" in m for m in logs)
    assert _metrics(resumed) == _metrics(full)
    assert [r.pruned_neurons for r in resumed] == [r.pruned_neurons for r in full]


def test_count_deletes_that_many_neurons_per_step(tiny_folder, text_corpora):
    records = run_bench(_config(tiny_folder, text_corpora, methods=["random"], count=7, steps=2),
                        progress=False, log=lambda m: None)
    assert [s.pruned for s in records[0].steps] == [0, 7, 14]


def test_cli_bench_prints_table(tiny_folder, text_corpora, tmp_path, capsys):
    forget, retain = text_corpora
    code = main(["bench", "--method", "selective,random", "--model", str(tiny_folder),
                 "--forget", forget, "--retain", retain, "--preset", "smoke", "--window", "64",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| method | selectivity (pts) ↑" in out
    assert "| selective |" in out and "| random |" in out and "| base (step 0) |" in out


def test_bench_writes_plots_and_references_that_the_leaderboard_shows(tiny_folder, text_corpora,
                                                                     tmp_path, capsys):
    forget, retain = text_corpora
    code = main(["bench", "--method", "selective,random", "--model", str(tiny_folder),
                 "--forget", forget, "--retain", retain, "--preset", "smoke", "--window", "64",
                 "--reference", "selective.selectivity=60.2", "--reference", "selective.source=Table 2",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(pngs) == 3 and all(p.startswith("plots-") for p in pngs)
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in tmp_path.glob("*.png"))
    selective = load_record(next(tmp_path.glob("selective-*.json")))
    assert selective.reference == {"selectivity": 60.2, "source": "Table 2"}
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path), "--format", "csv"]) == 0
    csv = capsys.readouterr().out
    assert "60.2" in csv and "Table 2" in csv and "selective" in csv and "random" in csv


class InertNeurons:
    """An evaluation plugin: how many MLP neurons of the model are inert (all-zero output column)."""

    @hookimpl
    def register_evaluations(self, register):
        from pydantic import BaseModel

        class Options(BaseModel):
            layer: int = 0

        def prepare(options, ctx):
            assert ctx.tokenizer is not None and ctx.seed == 7
            return self

        register(EvaluationSpec("inert", "count inert neurons", prepare, Options))

    def evaluate(self, model):
        zero = [(layer.mlp.down_proj.weight == 0).all(0).sum().item() for layer in model.model.layers]
        return {"inert": sum(zero)}


def test_evaluation_plugins_run_at_every_step(tiny_folder, text_corpora):
    registry = load_plugins(extra=[("inert", InertNeurons())])
    records = run_bench(_config(tiny_folder, text_corpora, evals=["tokens", "inert"],
                                options={"inert": {"layer": 1}}),
                        registry=registry, progress=False, log=lambda m: None)
    for r in records:
        assert [s.evaluations["inert"]["inert"] for s in r.steps] == [s.pruned for s in r.steps]
    with pytest.raises(UsageError, match="bad option inert.layer"):
        run_bench(_config(tiny_folder, text_corpora, evals=["tokens", "inert"],
                          options={"inert": {"layer": "x"}}), registry=registry, progress=False)


def test_schedule_reaches_all_neurons_without_overshooting():
    paper = BenchConfig(methods=["selective"], preset="paper")
    for total in (46_080, 36_864, 96, 1_000_003):  # SmolLM2, Gemma-3-270m, a tiny model, an odd one
        cumulative = paper.schedule(total)
        steps = [b - a for a, b in zip([0, *cumulative[:-1]], cumulative, strict=True)]
        assert len(cumulative) == 50 and cumulative[-1] == total and min(steps) >= 1
        assert all(abs(c - (k + 1) * 0.02 * total) <= 0.5 for k, c in enumerate(cumulative[:-1]))
    assert paper.schedule(46_080)[:3] == [922, 1843, 2765]  # round(921.6 k): 922 or 921 a step
    part = BenchConfig(methods=["selective"], steps=4, fraction=0.1).schedule(96)
    assert part == [10, 19, 29, 38]  # 40 % of 96, not 100 %
    assert BenchConfig(methods=["random"], steps=3, count=7).schedule(96) == [7, 14, 21]
    with pytest.raises(UsageError, match="more than the site's 96"):
        BenchConfig(methods=["random"], steps=14, count=7).schedule(96)
    with pytest.raises(UsageError, match="deletes no neuron at step 1"):
        BenchConfig(methods=["random"], steps=2, fraction=0.001).schedule(96)


def test_impossible_schedule_fails_before_the_model_loads(tiny_folder, text_corpora, capsys):
    logs = []
    with pytest.raises(UsageError, match="more than the site's 96"):
        run_bench(_config(tiny_folder, text_corpora, count=40, steps=3), progress=False, log=logs.append)
    assert not any("loading model" in m for m in logs)
    forget, retain = text_corpora
    code = main(["bench", "--method", "random", "--model", str(tiny_folder), "--forget", forget, "--retain",
                 retain, "--preset", "paper", "--fraction", "0.001", "--window", "128", "--quiet"])
    assert code == 2 and "deletes no neuron at step 1" in capsys.readouterr().err


def test_the_paper_schedule_runs_to_every_neuron(tiny_folder, text_corpora):
    records = run_bench(_config(tiny_folder, text_corpora, methods=["random"], steps=50, fraction=0.02),
                        progress=False, log=lambda m: None)
    pruned = [s.pruned for s in records[0].steps]
    assert pruned[-1] == 96 and pruned == sorted(pruned) and len(set(pruned)) == 51
    assert records[0].steps[-1].pruned_fraction == 1.0


@pytest.mark.integration
def test_paper_preset_fits_the_embedded_model_before_it_loads():
    from unlearn_core.bench import plan_schedule

    cumulative = plan_schedule(BenchConfig(methods=["selective"], preset="paper"), load_plugins())
    assert len(cumulative) == 50 and cumulative[-1] == 30 * 1536


def test_bench_windows_start_with_bos_and_statistics_leave_it_out(text_corpora, tmp_path):
    """A model whose tokenizer starts texts with a BOS (Gemma, Llama 2/3) sees one at the start of
    every window; the statistics the bench hands a method leave that position out."""
    from tiny import bos_tokenizer, method_plugin, save_tiny

    counted = []

    def score(ctx):
        stats = ctx.statistics("forget")
        counted.append(stats.tokens)
        return stats.importance("abs")

    folder = save_tiny(tmp_path / "bos-model", tokenizer=bos_tokenizer())
    registry = load_plugins(extra=[("counts", method_plugin("counts", score))])
    records = run_bench(_config(folder, text_corpora, methods=["counts"], steps=1), registry=registry,
                        progress=False, log=lambda m: None)
    assert records[0].forget.bos and records[0].retain.bos
    assert counted == [8 * 63]  # 512 statistics tokens in 8 windows of 64, less the BOS
