"""SNIP and the explanation baselines on tiny models, with a real store and the real embedder."""

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from unlearn_core import ActivationRecord, BenchConfig, ComponentSpec, NeuronId, NeuronRecords, run_bench
from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site
from unlearn_core.interfaces import PruneContext
from unlearn_core.models import fingerprint
from unlearn_core.plugins import load_plugins
from unlearn_core.topk import GlobalTopK
from unlearn_snip.activations import top_activations
from unlearn_snip.explainers import TokensExplainer
from unlearn_snip.method import KeywordOptions, KeywordScorer, SnipOptions, SnipScorer
from unlearn_snip.prompts import PROMPT_VERSION
from unlearn_snip.store import IMPORTED, ExplanationStore

ARCHS = {a.name: a for a in BUILTIN_ARCHITECTURES}
CODE = ["Python function definitions and their return statements",
        "indented blocks of Python source code",
        "the def keyword that starts a Python function",
        "imports of Python modules", "calls of Python methods on self"]
OTHER = ["rainy weather in late autumn", "names of European rivers", "feelings of sadness",
         "colours of flowers in spring", "prices of vegetables at a market"]


def _ctx(model, store_path=None):
    site = resolve_site(model, "mlp", ARCHS)
    g = torch.Generator().manual_seed(0)
    windows = lambda: torch.randint(0, 256, (4, 64), generator=g)  # noqa: E731
    return PruneContext(model, site, windows(), windows(), torch.zeros(site.shape, dtype=torch.bool),
                        step=1, seed=0, tokenizer=tiny_tokenizer(), model_fingerprint=fingerprint(model),
                        forget_spec="python", retain_spec="shakespeare",
                        components=load_plugins().components)


def test_snip_prunes_the_neurons_its_scores_rank_highest(tmp_path):
    model = tiny_model("llama")
    ctx = _ctx(model)
    neurons = [NeuronId(layer, i) for layer in range(2) for i in range(48)]
    code_neurons = {NeuronId(0, 3), NeuronId(0, 40), NeuronId(1, 7), NeuronId(1, 11), NeuronId(1, 47)}
    texts, other = {}, iter(OTHER * 20)
    for n in neurons:
        texts[n] = CODE[len([c for c in code_neurons if c < n]) % 5] if n in code_neurons else next(other)
    store = tmp_path / "e.sqlite"
    scorer = SnipScorer(SnipOptions(store=str(store), concepts=["Python programming", "source code"]))
    with ExplanationStore(store) as s:
        probe = scorer.probe_key(scorer.probe_windows(ctx))
        s.put(ctx.model_fingerprint, "mlp", "tokens", PROMPT_VERSION, probe, texts)
    scores = scorer.score(ctx)
    assert scores.shape == (2, 48) and torch.isfinite(scores).all()
    ranked = torch.sort(scores.flatten(), descending=True, stable=True).indices[:5]
    assert {NeuronId(int(i) // 48, int(i) % 48) for i in ranked} == code_neurons
    mask = GlobalTopK().prune(ctx, scores, 5)
    assert {NeuronId(int(a), int(b)) for a, b in mask.nonzero()} == code_neurons
    info = scorer.info()
    assert info["explained"] == 96 and info["reused_from_store"] == 96
    assert info["concepts"] == ["Python programming", "source code"]


def test_activation_records_keep_the_strongest_windows():
    model = tiny_model("gpt2")
    site = resolve_site(model, "mlp", ARCHS)
    windows = torch.randint(0, 256, (11, 16), generator=torch.Generator().manual_seed(2))
    top = top_activations(model, site, windows, k=3, batch_size=4)
    acts = []
    handles = [site.register_hook(i, lambda a, i=i: acts.append((i, a.detach().clone())))
               for i in range(site.n_layers)]
    with torch.no_grad():
        model(windows)
    for h in handles:
        h.remove()
    for layer, a in acts:  # a: [W, T, N]
        per_window = a.amax(1)  # [W, N]
        best = per_window.topk(3, dim=0).values.T  # [N, 3]
        torch.testing.assert_close(top.values[layer], best)
        chosen = top.index[layer]  # [N, 3]
        expected = a.permute(2, 0, 1).gather(1, chosen[..., None].expand(-1, -1, 16))
        torch.testing.assert_close(top.acts[layer].float(), expected, atol=2e-3, rtol=2e-3)


def test_tokens_explainer_is_deterministic_and_names_top_tokens():
    rec = NeuronRecords(NeuronId(0, 0), [
        ActivationRecord(["def", " f", "(", "x"], [9.0, 1.0, 0.0, -1.0]),
        ActivationRecord([" return", " x"], [5.0, 0.5]),
    ])
    explainer = TokensExplainer(top=3)
    assert explainer.explain([rec]) == ["the tokens 'def', 'return', 'f'"]
    assert explainer.explain([rec]) == explainer.explain([rec])
    assert explainer.concepts(["def f(x): return x", "def g(y): return y"], 2) == ["def", "return"]
    assert explainer.rate(["the tokens 'def', 'return'"], "python def return") == [pytest.approx(6.667)]


class FlakyExplainer(TokensExplainer):
    """Fails on its second batch, like a run stopped half way."""

    calls: list[int] = []

    def explain(self, neurons):
        FlakyExplainer.calls.append(len(neurons))
        if len(FlakyExplainer.calls) == 2:
            raise KeyboardInterrupt
        return super().explain(neurons)


def test_interrupted_explaining_resumes_without_redoing_finished_neurons(tmp_path):
    model = tiny_model("llama")
    ctx = _ctx(model)
    ctx.components = dict(ctx.components, explainer={
        "flaky": ComponentSpec("explainer", "flaky", "test", lambda **o: FlakyExplainer())})
    options = KeywordOptions(explainer="flaky", store=str(tmp_path / "e.sqlite"), batch=40)
    with pytest.raises(KeyboardInterrupt):
        KeywordScorer(options).score(ctx)
    assert FlakyExplainer.calls == [40, 40]
    with ExplanationStore(tmp_path / "e.sqlite") as s:
        probe = KeywordScorer(options).probe_key(KeywordScorer(options).probe_windows(ctx))
        assert s.count(ctx.model_fingerprint, "mlp", "flaky", PROMPT_VERSION, probe) == 40
    scorer = KeywordScorer(options)
    scorer.score(ctx)
    assert FlakyExplainer.calls[2:] == [40, 16]  # only the 56 unfinished neurons
    assert scorer.info()["reused_from_store"] == 40 and scorer.info()["explained"] == 96


def test_bench_runs_snip_and_baselines_and_reuses_explanations(tiny_folder, text_corpora, tmp_path):
    forget, retain = text_corpora
    store = str(tmp_path / "e.sqlite")
    opts = {"store": store, "concepts": ["def return function"]}
    config = BenchConfig(methods=["snip", "keyword", "llm-scored"], model=str(tiny_folder),
                         forget=forget, retain=retain, preset="smoke", steps=2, fraction=0.1,
                         tokens=512, eval_tokens=256, window=64,
                         options={"snip": opts, "keyword": {**opts, "keywords": ["def"]},
                                  "llm-scored": opts})
    records = run_bench(config, progress=False, log=lambda m: None)
    assert [r.method for r in records] == ["snip", "keyword", "llm-scored"]
    for r in records:
        assert r.complete and [s.pruned for s in r.steps] == [0, 10, 19]
        assert r.method_info["explainer"] == "tokens" and r.method_info["explained"] == 96
    assert records[0].method_info["reused_from_store"] == 0
    assert records[1].method_info["reused_from_store"] == 96  # same model, same explainer


def test_explain_command_builds_reuses_and_imports(tiny_folder, text_corpora, tmp_path, capsys):
    import json
    import sqlite3

    from unlearn_core.cli import main

    forget, retain = text_corpora
    store = tmp_path / "e.sqlite"
    argv = ["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
            "--tokens", "512", "--store", str(store), "--quiet"]
    assert main(argv) == 0
    assert "96 explanations" in capsys.readouterr().out
    assert main(argv) == 0
    assert "(96 reused)" in capsys.readouterr().out
    published = tmp_path / "published.jsonl"
    published.write_text(json.dumps({
        "dataclass_name": "NeuronSimulationResults",
        "neuron_id": {"dataclass_name": "NeuronId", "layer_index": 1, "neuron_index": 5},
        "scored_explanations": [{"dataclass_name": "ScoredExplanation", "explanation": " commas",
                                 "scored_simulation": {"ev_correlation_score": 0.4}}]}) + "\n")
    assert main(["explain", "--model", str(tiny_folder), "--import", str(published),
                 "--explainer", "openai", "--store", str(store), "--quiet"]) == 0
    assert "imported 1 explanations" in capsys.readouterr().out
    fp = sqlite3.connect(store).execute("select distinct model_fingerprint from explanations").fetchone()[0]
    with ExplanationStore(store) as s:
        commas = s.get(fp, "mlp", "openai", PROMPT_VERSION, IMPORTED, [NeuronId(1, 5)])
        assert commas == {NeuronId(1, 5): "commas"}


def test_local_explainer_generates_in_batches_with_a_chat_template(tmp_path):
    from tiny import save_tiny
    from transformers import AutoTokenizer

    from unlearn_snip.explainers import LocalExplainer

    folder = save_tiny(tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    tok.save_pretrained(folder)
    explainer = LocalExplainer(model=str(folder), batch_size=2, max_new_tokens=5, progress=False)
    neurons = [NeuronRecords(NeuronId(0, i), [ActivationRecord(["a", "b"], [float(i), 1.0])])
               for i in range(3)]
    answers = explainer.explain(neurons)  # 3 neurons in batches of 2: a padded batch and a single
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert explainer.explain(neurons) == answers  # greedy: deterministic
    ratings = explainer.rate(["x", "y"], "topic")
    assert len(ratings) == 2 and all(0.0 <= r <= 10.0 for r in ratings)
    assert explainer.info()["greedy"] is True


def test_local_explainer_needs_a_chat_template(tiny_folder):
    from unlearn_core.errors import UsageError
    from unlearn_snip.explainers import LocalExplainer

    with pytest.raises(UsageError, match="needs a chat model"):
        LocalExplainer(model=str(tiny_folder), progress=False)


def test_explanations_are_never_made_on_a_pruned_model(tmp_path):
    """They would be stored under the unpruned model's fingerprint and reused as if they described it."""
    model = tiny_model("llama")
    ctx = _ctx(model)
    ctx.pruned = ctx.pruned.clone()
    ctx.pruned[0, 3] = True
    with pytest.raises(ValueError, match="unpruned model"):
        KeywordScorer(KeywordOptions(store=str(tmp_path / "e.sqlite"), keywords=["def"])).score(ctx)
    assert not (tmp_path / "e.sqlite").exists()  # nothing was explained, nothing stored


class CountingRater(TokensExplainer):
    """Counts the explanations it is asked to rate."""

    rated: list[int] = []

    def rate(self, explanations, topic):
        CountingRater.rated.append(len(explanations))
        return super().rate(explanations, topic)


def test_llm_scored_ratings_are_cached(tiny_folder, text_corpora, tmp_path):
    forget, retain = text_corpora
    registry = load_plugins()
    registry.components["explainer"]["counting"] = ComponentSpec("explainer", "counting", "test",
                                                                 lambda **o: CountingRater())
    opts = {"store": str(tmp_path / "e.sqlite"), "explainer": "counting", "concepts": ["def return"]}
    config = BenchConfig(methods=["llm-scored"], model=str(tiny_folder), forget=forget, retain=retain,
                         preset="smoke", steps=2, fraction=0.1, tokens=512, eval_tokens=256, window=64,
                         options={"llm-scored": opts})
    first = run_bench(config, registry=registry, progress=False, log=lambda m: None)[0]
    asked = first.method_info["ratings_asked"]
    assert CountingRater.rated == [asked] and asked > 1 and first.method_info["ratings_cached"] == 0
    second = run_bench(config, registry=registry, progress=False, log=lambda m: None)[0]
    assert CountingRater.rated == [asked]  # nothing asked again
    assert second.method_info["ratings_cached"] == asked
    assert [s.forget for s in second.steps] == [s.forget for s in first.steps]
    assert second.pruned_neurons == first.pruned_neurons


def test_explain_probes_the_statistics_windows_and_the_bench_reuses_them(tiny_folder, text_corpora,
                                                                         tmp_path, capsys):
    """`unlearn explain` with the bench's sizes explains from exactly the bench's statistics windows
    (never its evaluation windows), and the bench finds every explanation under the same probe."""
    from unlearn_core.bench import corpus_windows
    from unlearn_core.cli import main
    from unlearn_core.models import load_model

    forget, retain = text_corpora
    store = tmp_path / "e.sqlite"
    sizes = ["--preset", "smoke", "--tokens", "512", "--eval-tokens", "256", "--window", "64", "--seed", "3"]
    assert main(["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
                 "--store", str(store), "--quiet", *sizes]) == 0
    assert "96 explanations" in capsys.readouterr().out
    config = BenchConfig(methods=["keyword"], model=str(tiny_folder), forget=forget, retain=retain,
                         preset="smoke", tokens=512, eval_tokens=256, window=64, seed=3, steps=1,
                         options={"keyword": {"store": str(store), "keywords": ["def"]}})
    record = run_bench(config, progress=False, log=lambda m: None)[0]
    assert record.method_info["reused_from_store"] == 96 and record.method_info["explained"] == 96
    # The probe is cut from the statistics windows only.
    loaded = load_model(str(tiny_folder), progress=False)
    windows = corpus_windows(config, load_plugins(), loaded.tokenizer)
    ctx = _ctx(loaded.model)
    ctx.forget_windows, ctx.retain_windows = windows["forget"].stats, windows["retain"].stats
    probe = KeywordScorer(KeywordOptions()).probe_windows(ctx)
    pieces = lambda w: {tuple(r.tolist()) for r in w[:, : w.shape[1] // 64 * 64].reshape(-1, 64)}  # noqa: E731
    stats = pieces(windows["forget"].stats) | pieces(windows["retain"].stats)
    evaluation = pieces(windows["forget"].eval) | pieces(windows["retain"].eval)
    assert {tuple(r.tolist()) for r in probe} <= stats
    assert not {tuple(r.tolist()) for r in probe} & evaluation
    assert record.method_info["probe"]["key"] == KeywordScorer(KeywordOptions()).probe_key(probe)


def test_explain_uses_the_registry_plugins_chose(tiny_folder, text_corpora, tmp_path, monkeypatch, capsys):
    """`unlearn --plugins snip explain` runs on what --plugins loaded (it once loaded the plugins
    again from $UNLEARN_PLUGINS), and the bench's `prepare` builds its model and windows."""
    from unlearn_core.cli import main

    forget, retain = text_corpora
    monkeypatch.setenv("UNLEARN_PLUGINS", "selective")  # no explainers at all
    argv = ["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
            "--preset", "smoke", "--tokens", "512", "--store", str(tmp_path / "e.sqlite"), "--quiet"]
    assert main(argv) == 2
    assert "invalid choice: 'explain'" in capsys.readouterr().err  # the env var: no snip, no command
    assert main(["--plugins", "snip", *argv]) == 0
    assert "96 explanations" in capsys.readouterr().out
