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
    per_step = round(0.1 * 2 * 48)
    for r in records:
        assert r.complete and [s.step for s in r.steps] == [0, 1, 2, 3]
        assert [s.pruned for s in r.steps] == [0, per_step, 2 * per_step, 3 * per_step]
        assert sum(len(x) for x in r.pruned_neurons) == 3 * per_step
        assert r.plugin["package"] == "unlearn"
        assert r.summary is not None and r.model["fingerprint"]
        assert r.forget["eval_tokens"] == 256 and r.forget["stats_tokens"] == 512
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
        if "selective step 1/" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config, out=tmp_path / "cut", progress=False, log=stop_after_step_1)
    partial = load_record(next((tmp_path / "cut").glob("selective-*.json")))
    assert len(partial.steps) == 2 and not partial.complete
    logs = []
    resumed = run_bench(config, out=tmp_path / "cut", progress=False, log=logs.append)
    assert any("selective: resuming after step 1" in m for m in logs)
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
