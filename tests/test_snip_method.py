"""SNIP and the explanation baselines on tiny models, with a real store and the real embedder."""

import sqlite3

import pytest
import torch
from tiny import tiny_model, tiny_tokenizer

from unlearn_core import (
    ActivationRecord,
    BenchConfig,
    ComponentSpec,
    NeuronId,
    NeuronRecords,
    UsageError,
    run_bench,
)
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

    from unlearn_core.cli import main

    forget, retain = text_corpora
    store = tmp_path / "e.sqlite"
    argv = ["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
            "--tokens", "512", "--window", "64", "--store", str(store), "--quiet"]
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


# ---- bad input: refused up front, one line, nothing stored --------------------------------------

def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("unlearn: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _published_line(layer, neuron) -> str:
    import json

    return json.dumps({"neuron_id": {"layer_index": layer, "neuron_index": neuron},
                       "scored_explanations": [{"explanation": " commas",
                                                "scored_simulation": {"ev_correlation_score": 0.4}}]})


@pytest.mark.parametrize("content, said", [
    (b"[" * 200_000, "JSON nested too deeply"),
    (b"\xff\xfe caf\xe9\n", "not UTF-8"),
    (b"layer,neuron,explanation\n0,1,commas\n", "not JSON"),
    (_published_line(2, 0).encode(), "neuron_id 2/0 is not in the model's site (2 layers of 48"),
    (_published_line(0, 48).encode(), "neuron_id 0/48 is not in the model's site"),
    (_published_line(-1, 0).encode(), "non-negative integer"),
    (_published_line(0, 1.5).encode(), "non-negative integer"),
    (_published_line(0, "3").encode(), "non-negative integer"),
])
def test_explain_import_refuses_bad_files_and_stores_nothing(tiny_folder, tmp_path, capsys, content, said):
    from unlearn_core.cli import main

    published, store = tmp_path / "published.jsonl", tmp_path / "e.sqlite"
    published.write_bytes(content)
    assert main(["explain", "--model", str(tiny_folder), "--import", str(published), "--store", str(store),
                 "--quiet"]) == 2
    assert said in _one_line_error(capsys)
    assert not store.exists()


@pytest.mark.parametrize("flags, said", [
    (["--tokens", "0"], "--tokens must be positive"),
    (["--max-neurons", "0"], "--max-neurons"),
    (["--window", "32"], "--window 32 is shorter than the 64-token probe windows"),
    (["-O", "top=0"], "bad options for explainer 'tokens': -O top: Input should be greater than or equal to 1"),
    (["-O", "top=many"], "bad options for explainer 'tokens': -O top: Input should be a valid integer"),
    (["-O", "top=true"], "-O top: Input should be a valid integer"),
    (["-O", "temperature=0.5"],
     "bad options for explainer 'tokens': -O temperature: no such option; it takes: top"),
    (["-O", "x=" + "[" * 100_000], "bad option -O x: JSON nested too deeply"),
    (["--explainer", "openai", "-O", "concurrency=\"many\"", "-O", "api_key=sk-SECRET-42"],
     "bad options for explainer 'openai': -O concurrency: Input should be a valid integer"),
    (["--explainer", "openai", "-O", "base_url=http://alice:pw-SECRET-42@exa mple.com/v1",
      "-O", "api_key=k"], "base_url must be an http(s) URL"),
    (["--explainer", "local", "-O", "model=./no-such-model"], "explainer 'local': -O model: model path"),
    (["--explainer", "local", "-O", "max_new_tokens=0"],
     "bad options for explainer 'local': -O max_new_tokens: Input should be greater than or equal to 1"),
    (["--explainer", "openai", "-O", "api_key=5"], "-O api_key: Input should be a valid string"),
])
def test_explain_refuses_bad_numbers_and_options_before_anything(tiny_folder, text_corpora, tmp_path, capsys,
                                                                 flags, said):
    """Once, `--tokens 0` stored empty explanations before failing, and later runs reused them."""
    from unlearn_core.cli import main

    forget, retain = text_corpora
    store = tmp_path / "e.sqlite"
    assert main(["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
                 "--tokens", "512", "--window", "64", "--store", str(store), "--quiet", *flags]) == 2
    err = _one_line_error(capsys)
    assert said in err and "SECRET-42" not in err
    assert not store.exists()


@pytest.mark.parametrize("option, said", [
    ("snip.concepts=[]", "bad option snip.concepts: List should have at least 1 item"),
    ('snip.concepts=["code", " "]', "bad option snip.concepts.1: String should have at least 1 character"),
    ("keyword.keywords=[]", "bad option keyword.keywords: List should have at least 1 item"),
    ('snip.explainer_options={"temperature": "hot"}',
     "bad options for explainer 'tokens': snip.explainer_options.temperature: no such option; it takes: top"),
    ('snip.explainer_options={"top": "hot"}',
     "bad options for explainer 'tokens': snip.explainer_options.top: Input should be a valid integer"),
    ("snip.explainer_options=5", "bad option snip.explainer_options: Input should be a valid dictionary"),
    ('snip.embedder_options={"batch_size": 0}',
     "embedder 'sentence-transformers': snip.embedder_options.batch_size: Input should be greater"),
    ('snip.embedder_options={"colour": 1}', "snip.embedder_options.colour: no such option; it takes: model,"),
    ('snip.embedder_options={"device": "gpu0"}', "snip.embedder_options.device: not a torch device"),
    ('snip.embedder_options={"device": "cuda:7"}', "snip.embedder_options.device: "),
    ('snip.embedder_options={"model": "./no-such-folder"}',
     "embedder 'sentence-transformers': snip.embedder_options.model: no folder './no-such-folder'"),
    ("snip.records=1000", "bad option snip.records: Input should be less than or equal to 100"),
    ('llm-scored.explainer_options={"top": 1.5}',
     "llm-scored.explainer_options.top: Input should be a valid integer"),
])
def test_bench_refuses_bad_snip_options_before_the_model_loads(tiny_folder, text_corpora, tmp_path, capsys,
                                                               option, said):
    from unlearn_core.cli import main

    forget, retain = text_corpora
    method = option.split(".")[0]
    assert main(["bench", "--method", method, "--model", str(tiny_folder), "--forget", forget,
                 "--retain", retain, "--preset", "smoke", "--window", "64", "-O", option,
                 "-O", f"{method}.store={tmp_path / 'e.sqlite'}", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    assert said in _one_line_error(capsys)
    assert not (tmp_path / "e.sqlite").exists() and not (tmp_path / "out").exists()


def test_a_probe_shorter_than_one_window_is_refused_before_anything_is_stored(tmp_path):
    """With windows shorter than `context` there is no probe text: every neuron would be explained
    from nothing, and those explanations stored and reused."""
    ctx = _ctx(tiny_model("llama"))
    ctx.forget_windows, ctx.retain_windows = ctx.forget_windows[:, :40], ctx.retain_windows[:, :40]
    with pytest.raises(UsageError, match="40 tokens of text, fewer than the 64-token probe windows"):
        KeywordScorer(KeywordOptions(store=str(tmp_path / "e.sqlite"), keywords=["def"])).score(ctx)
    assert not (tmp_path / "e.sqlite").exists()


class SometimesSilent(TokensExplainer):
    """Answers nothing for neurons of layer 0 (an LLM that returned an empty message)."""

    asked: list[NeuronId] = []
    silent = lambda n: n.layer == 0  # noqa: E731

    def explain(self, neurons):
        SometimesSilent.asked += [r.neuron for r in neurons]
        return ["  " if SometimesSilent.silent(r.neuron) else text
                for r, text in zip(neurons, super().explain(neurons), strict=True)]


def test_empty_answers_are_not_stored_and_are_asked_again(tmp_path):
    ctx = _ctx(tiny_model("llama"))
    ctx.components = dict(ctx.components, explainer={
        "silent": ComponentSpec("explainer", "silent", "test", lambda **o: SometimesSilent())})
    options = KeywordOptions(explainer="silent", store=str(tmp_path / "e.sqlite"), keywords=["def"],
                             concepts=["code"])
    scorer = KeywordScorer(options)
    scorer.score(ctx)
    assert scorer.info()["explained"] == 48 and scorer.info()["empty_answers"] == 48
    assert len(SometimesSilent.asked) == 96
    SometimesSilent.asked = []
    scorer = KeywordScorer(options)
    scorer.score(ctx)
    assert sorted(SometimesSilent.asked) == [NeuronId(0, i) for i in range(48)]  # only the unanswered
    assert scorer.info()["reused_from_store"] == 48
    SometimesSilent.asked, SometimesSilent.silent = [], lambda n: True
    with pytest.raises(UsageError, match="gave no explanation for any of the 96 neurons"):
        KeywordScorer(options.model_copy(update={"explainer_options": {"top": 3}})).score(ctx)
    db = sqlite3.connect(tmp_path / "e.sqlite")
    rows = db.execute("SELECT explainer, COUNT(*), MIN(LENGTH(TRIM(explanation))) FROM explanations"
                      " GROUP BY explainer").fetchall()
    db.close()
    assert rows == [("silent", 48, rows[0][2])] and rows[0][2] > 0


# ---- the openai explainer end to end: store keys, secrets, --quiet --------------------------------

def _explaining_server(word: str):
    from openai_server import FakeOpenAI, last_user_message

    def reply(body):
        if "What concepts" in last_user_message(body):
            return "1. Python code\n2. loops"
        return f" {word} number {len(body['messages'])}."

    return FakeOpenAI(reply=reply)


def test_explanations_of_one_endpoint_or_model_are_not_reused_for_another(tmp_path, monkeypatch):
    """The store key names the endpoint and the model the explainer resolves to (OPENAI_BASE_URL
    included); once it said only 'openai', and a second endpoint silently got the first's answers."""
    from unlearn_snip.method import explainer_key

    chat = "/v1/chat/completions"
    ctx = _ctx(tiny_model("llama"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def explained(server, **options):
        opts = KeywordOptions(explainer="openai", store=str(tmp_path / "e.sqlite"), keywords=["def"],
                              concepts=["code"], max_neurons=3,
                              explainer_options={"base_url": server.base_url, "backoff": 0.01, **options})
        found, _ = KeywordScorer(opts).explanations(ctx)
        return set(found.values())

    with _explaining_server("alpha") as a, _explaining_server("beta") as b:
        assert explained(a) == {"alpha number 8"} and len(a.received(chat)) == 3
        assert explained(b) == {"beta number 8"} and len(b.received(chat)) == 3  # not alpha's
        assert explained(a, model="other-model") == {"alpha number 8"} and len(a.received(chat)) == 6
        assert explained(a, concurrency=2, api_key="sk-other") == {"alpha number 8"}  # how, not what
        assert explained(a, model="other-model") == {"alpha number 8"}
        assert len(a.received(chat)) == 6 and len(b.received(chat)) == 3  # all from the store
        assert [r.body["model"] for r in a.received(chat)] == ["gpt-4o"] * 3 + ["other-model"] * 3

    assert explainer_key("openai", {}) == 'openai:{"base_url": "https://api.openai.com/v1", "model": "gpt-4o"}'
    monkeypatch.setenv("OPENAI_BASE_URL", "http://u:p@127.0.0.1:8000/v1/")
    assert explainer_key("openai", {}) == 'openai:{"base_url": "http://127.0.0.1:8000/v1", "model": "gpt-4o"}'
    assert explainer_key("tokens", {}) == "tokens" and explainer_key("tokens", {"progress": False}) == "tokens"
    assert explainer_key("local", {"model": "x", "batch_size": 4}) == 'local:{"model": "x"}'


def test_explain_with_credentials_keeps_them_out_of_the_store_and_output(tiny_folder, text_corpora, tmp_path,
                                                                        capfd):
    import base64

    from unlearn_core.cli import main

    forget, retain = text_corpora
    store = tmp_path / "e.sqlite"
    secrets = ["sk-option-KEY-1234", "pw-URL-5678", "query-KEY-9012"]
    with _explaining_server("gamma") as server:
        url = server.base_url.replace("http://", f"http://alice:{secrets[1]}@") + f"?api_key={secrets[2]}"
        assert main(["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
                     "--tokens", "512", "--window", "64", "--store", str(store), "--max-neurons", "4",
                     "--explainer", "openai", "-O", f"base_url={url}", "-O", f"api_key={secrets[0]}",
                     "--quiet"]) == 0
        sent = server.received("/v1/chat/completions")
    assert len(sent) == 5 and sent[0].query == {"api_key": secrets[2]}  # 4 neurons and the concepts
    out, err = capfd.readouterr()
    assert "4 explanations" in out and err == ""  # --quiet: no progress bar
    assert f"127.0.0.1:{server.base_url.split(':')[2]}" in out
    forms = [*secrets, f"alice:{secrets[1]}", base64.b64encode(f"alice:{secrets[1]}".encode()).decode()]
    files = [p for p in tmp_path.iterdir() if p.name.startswith("e.sqlite")]
    written = b"".join(p.read_bytes() for p in files) + out.encode()
    assert [s for s in forms if s.encode() in written] == []
    db = sqlite3.connect(store)
    (key,) = {k for (k,) in db.execute("SELECT DISTINCT explainer FROM explanations")}
    db.close()
    assert key == f'openai:{{"base_url": "{server.base_url}?api_key=***", "model": "gpt-4o"}}'


@pytest.mark.parametrize("quiet", [True, False])
def test_explain_quiet_shows_no_progress(tiny_folder, text_corpora, tmp_path, capfd, monkeypatch, quiet):
    from unlearn_core.cli import main

    forget, retain = text_corpora
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with _explaining_server("delta") as server:
        server.fail_next(503)  # a retry prints nothing either
        assert main(["explain", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
                     "--tokens", "512", "--window", "64", "--store", str(tmp_path / "e.sqlite"),
                     "--max-neurons", "3", "--explainer", "openai", "-O", f"base_url={server.base_url}",
                     "-O", "backoff=0.01", *(["--quiet"] if quiet else [])]) == 0
    err = capfd.readouterr().err
    assert ("explaining neurons" in err) is not quiet
    if quiet:
        assert err == ""
