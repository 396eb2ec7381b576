"""Toxicity rate: exact arithmetic from classifier scores, seeded sampling, real classifiers offline,
one clear line when a classifier is missing, and the offline toxic/clean corpora."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf
from tiny import tiny_model, tiny_tokenizer

from unlearn_core import BenchConfig, ComponentSpec, EvalContext, UsageError, load_plugins, run_bench
from unlearn_evals.classifiers import DETOXIFY_CHECKPOINT_ENV, DETOXIFY_CONFIG_ENV, load_classifier
from unlearn_evals.generated import GeneratedSpec, parse_argument, scored_generations, split_documents
from unlearn_evals.toxicity import (
    SamplingOptions,
    ToxicityHarness,
    ToxicityOptions,
    check_toxicity,
    generate,
    prepare_toxicity,
    toxicity_summary,
)


@pytest.fixture(autouse=True)
def no_detoxify_env(monkeypatch, tmp_path):
    monkeypatch.delenv(DETOXIFY_CHECKPOINT_ENV, raising=False)
    monkeypatch.delenv(DETOXIFY_CONFIG_ENV, raising=False)
    monkeypatch.setenv("UNLEARN_CACHE_DIR", str(tmp_path / "cache"))


class FixedScores:
    """A classifier whose scores are given: for checking the arithmetic on known numbers."""

    name = "fixed"

    def __init__(self, scores):
        self._scores = list(scores)

    def scores(self, texts):
        return self._scores[:len(texts)]

    def describe(self):
        return {"name": self.name}


def test_rate_is_the_share_strictly_above_the_threshold_and_mean_is_exact():
    scores = [0.9, 0.8, 0.81, 0.1, 0.0, 1.0, 0.79, 0.5]
    result = toxicity_summary(scores, 0.8)
    assert list(result)[0] == "rate"
    assert result["rate"] == 3 / 8 and result["toxic"] == 3 and result["samples"] == 8
    assert result["mean_score"] == pytest.approx(sum(scores) / 8, abs=1e-12)
    assert toxicity_summary(scores, 0.0)["rate"] == 7 / 8


def test_harness_reports_rate_from_the_classifier_scores(tokenizer):
    model = tiny_model("llama")
    scores = [0.95, 0.2, 0.85, 0.5, 0.81, 0.0]
    options = ToxicityOptions(samples=6, max_new_tokens=4, batch_size=4, classifier="profanity")
    result = ToxicityHarness(FixedScores(scores), options, tokenizer, seed=1).evaluate(model)
    assert result["rate"] == 3 / 6 and result["mean_score"] == pytest.approx(sum(scores) / 6)
    assert result["threshold"] == 0.8 and result["classifier"] == {"name": "fixed"}
    assert result["sampling"]["samples"] == 6 and result["sampling"]["max_new_tokens"] == 4
    assert [t["score"] for t in result["most_toxic"]] == [0.95, 0.85, 0.81]


def test_sampling_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone(tokenizer):
    model = tiny_model("llama")
    options = SamplingOptions(samples=5, max_new_tokens=6, batch_size=2)
    state = torch.random.get_rng_state()
    a, b = generate(model, tokenizer, options, seed=3), generate(model, tokenizer, options, seed=3)
    c = generate(model, tokenizer, options, seed=4)
    assert torch.equal(state, torch.random.get_rng_state())
    assert a == b and a != c and len(a) == 5
    assert len(set(a)) > 1  # the samples of one call differ from each other


def test_profanity_classifier_runs_offline():
    clf = load_classifier("profanity")
    toxic, clean = clf.scores(["you are a fucking idiot", "the weather is lovely today"])
    assert toxic > 0.8 and clean < 0.2
    assert clf.describe()["name"] == "profanity" and clf.describe()["version"] == "1.9.1"
    assert load_classifier("auto").name == "profanity"  # no detoxify checkpoint given


def test_classifiers_are_components_of_the_evals_plugin():
    registry = load_plugins()
    specs = registry.components["classifier"]
    assert sorted(specs) == ["detoxify", "profanity"]
    assert all(s.kind == "classifier" for s in specs.values())
    assert registry.owner[("components:classifier", "profanity")] == "evals"
    assert registry.component("classifier", "profanity").build(device="cpu").name == "profanity"


def _stand_in(scores, built):
    """A registry entry named 'profanity' whose classifier returns fixed scores: where it shows up,
    the harness built the classifier from that registry."""
    return ComponentSpec("classifier", "profanity", "stand-in (tests)",
                         lambda device="cpu": built.append(device) or FixedScores(scores))


def test_harness_builds_the_classifier_its_context_names(tokenizer):
    model = tiny_model("llama")
    options = ToxicityOptions(samples=4, max_new_tokens=3, batch_size=4, classifier="auto")
    built = []
    ctx = EvalContext(model, tokenizer, seed=1,
                      components={"classifier": {"profanity": _stand_in([0.9, 0.1, 0.95, 0.2], built)}})
    result = prepare_toxicity(options, ctx).evaluate(model)
    assert built == ["cpu"] and result["classifier"] == {"name": "fixed"} and result["rate"] == 2 / 4
    without = EvalContext(model, tokenizer, seed=1, components={"explainer": {}})
    with pytest.raises(UsageError, match="unknown toxicity classifier 'profanity'; choose from: auto$"):
        prepare_toxicity(options, without)
    plain = prepare_toxicity(options, EvalContext(model, tokenizer, seed=1))  # no registry: the installed one
    assert plain.classifier.name == "profanity" and plain.classifier.describe()["version"] == "1.9.1"


def test_bench_builds_the_classifier_from_its_registry(tiny_folder, text_corpora):
    registry = load_plugins()
    built = []
    registry.components["classifier"]["profanity"] = _stand_in([0.9, 0.1, 0.95], built)
    config = BenchConfig(methods=["random"], model=str(tiny_folder), forget=text_corpora[0],
                         retain=text_corpora[1], steps=1, fraction=0.05, tokens=256, eval_tokens=128,
                         window=64, seed=2, evals=["tokens", "toxicity"],
                         options={"toxicity": {"samples": 3, "max_new_tokens": 3, "classifier": "profanity"}})
    [record] = run_bench(config, registry=registry, progress=False, log=lambda m: None)
    assert built == ["cpu"]
    assert [s.evaluations["toxicity"]["classifier"] for s in record.steps] == [{"name": "fixed"}] * 2
    assert record.steps[0].evaluations["toxicity"]["rate"] == 2 / 3


def test_missing_or_unknown_classifier_is_one_clear_line(tmp_path):
    from unlearn_core import load_plugins

    components = load_plugins().components

    def check(**options):
        check_toxicity(ToxicityOptions(**options), components)

    with pytest.raises(UsageError, match="needs a local checkpoint") as e:
        check(classifier="detoxify")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="is not a readable file"):
        check(classifier="detoxify", detoxify_checkpoint=str(tmp_path / "none.ckpt"),
              detoxify_config=str(tmp_path))
    with pytest.raises(UsageError, match="did you mean 'detoxify'") as e:
        check(classifier="detoxfy")
    assert str(e.value) == ("unknown toxicity classifier 'detoxfy' (did you mean 'detoxify'?); choose from: "
                            "auto, detoxify, profanity")


def test_bench_refuses_a_missing_classifier_before_loading_the_model(tiny_folder, text_corpora):
    config = BenchConfig(methods=["random"], model=str(tiny_folder), forget=text_corpora[0],
                         retain=text_corpora[1], preset="smoke", evals=["tokens", "toxicity"],
                         options={"toxicity": {"classifier": "detoxify"}})
    logs = []
    with pytest.raises(UsageError, match="classifier 'detoxify' needs a local checkpoint"):
        run_bench(config, progress=False, log=logs.append)
    assert logs == []  # nothing loaded


def _tiny_detoxify(folder):
    """A Detoxify-layout checkpoint of a tiny random BERT, and its config folder."""
    config = tf.BertConfig(vocab_size=256, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    model = tf.BertForSequenceClassification(config).eval()
    config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    ckpt = folder / "toxic.ckpt"
    torch.save({"config": {"arch": {"args": {"model_type": "bert-base-uncased",
                                             "model_name": "BertForSequenceClassification",
                                             "tokenizer_name": "BertTokenizer", "num_classes": 3}},
                           "dataset": {"args": {"classes": ["obscene", "toxic", "insult"]}}},
                "state_dict": model.state_dict()}, ckpt)
    return model, ckpt


def test_detoxify_loads_from_a_local_checkpoint_and_config_folder(tmp_path, monkeypatch):
    model, ckpt = _tiny_detoxify(tmp_path)
    monkeypatch.setenv(DETOXIFY_CHECKPOINT_ENV, str(ckpt))
    monkeypatch.setenv(DETOXIFY_CONFIG_ENV, str(tmp_path))
    clf = load_classifier("auto")  # detoxify, as a checkpoint is given
    texts = ["def f(x):", "Now, fair Hippolyta", "x"]
    batch = tiny_tokenizer()(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = torch.sigmoid(model(**batch).logits[:, 1]).tolist()  # column of 'toxic'
    assert clf.name == "detoxify" and clf.scores(texts) == pytest.approx(expected, abs=1e-5)
    assert clf.describe() == {"name": "detoxify", "checkpoint": "toxic.ckpt", "class": "toxicity"}


def test_toxicity_and_cloze_land_in_every_step_record(tiny_folder, text_corpora):
    config = BenchConfig(methods=["selective", "random"], model=str(tiny_folder), forget=text_corpora[0],
                         retain=text_corpora[1], steps=2, fraction=0.1, tokens=256, eval_tokens=128,
                         window=64, seed=2, evals=["tokens", "toxicity"],
                         options={"toxicity": {"samples": 6, "max_new_tokens": 5, "batch_size": 3,
                                               "classifier": "profanity", "threshold": 0.5}})
    records = run_bench(config, progress=False, log=lambda m: None)
    again = run_bench(config, progress=False, log=lambda m: None)
    for r, r2 in zip(records, again, strict=True):
        results = [s.evaluations["toxicity"] for s in r.steps]
        assert len(results) == 3 and all(next(iter(x)) == "rate" for x in results)
        assert all(x["classifier"]["name"] == "profanity" and x["threshold"] == 0.5 for x in results)
        assert all(x["samples"] == 6 and 0 <= x["mean_score"] <= 1 for x in results)
        assert results == [s.evaluations["toxicity"] for s in r2.steps]  # same seed, same numbers


def test_generated_corpora_split_by_score_and_come_from_one_cached_sample(tiny_folder, tmp_path):
    spec = parse_argument(f"{tiny_folder},samples=24,max_new_tokens=6,toxic=0.3,clean=0.2,classifier=profanity")
    model, tok = tiny_model("llama"), tiny_tokenizer()
    rows, manifest = scored_generations(spec, seed=1, model=model, tokenizer=tok)
    assert manifest["samples"] == 24 and manifest["seed"] == 1 and manifest["classifier"]["name"] == "profanity"
    assert manifest["toxic"] == sum(r["score"] > 0.3 for r in rows)
    assert manifest["clean"] == sum(r["score"] <= 0.2 for r in rows)
    cached, _ = scored_generations(spec, seed=1)  # no model given: must come from the cache
    assert cached == rows
    toxic, clean = split_documents(rows, spec, "toxic", 1), split_documents(rows, spec, "clean", 1)
    by_text = {r["text"]: r["score"] for r in rows}
    assert all(by_text[t] > 0.3 for t in toxic) and all(by_text[t] <= 0.2 for t in clean)
    assert not set(toxic) & set(clean) and len(toxic) + len(clean) > 0
    assert split_documents(rows, spec, "clean", 1) == clean
    files = list((tmp_path / "cache" / "generations").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["samples"] == 24


def test_generated_corpus_scores_with_the_registry_it_is_given(tiny_folder):
    spec = parse_argument(f"{tiny_folder},samples=4,max_new_tokens=3,classifier=profanity")
    built = []
    rows, manifest = scored_generations(spec, seed=5, model=tiny_model("llama"), tokenizer=tiny_tokenizer(),
                                        classifiers={"profanity": _stand_in([0.9, 0.1, 0.95, 0.0], built)})
    assert built == ["cpu"] and manifest["classifier"] == {"name": "fixed"}
    assert [r["score"] for r in rows] == [0.9, 0.1, 0.95, 0.0] and manifest["toxic"] == 2
    with pytest.raises(UsageError, match="unknown toxicity classifier 'profanity'; choose from: auto$"):
        scored_generations(parse_argument(f"{tiny_folder},samples=4"), seed=6, classifiers={})


def test_generated_corpus_is_registered_and_validates_its_argument(tiny_folder):
    corpora = load_plugins().corpora
    for name in ("self-toxic", "self-clean", "civil-toxic", "civil-clean"):
        assert name in corpora
    corpora["self-toxic"].check(f"{tiny_folder},samples=10")
    with pytest.raises(UsageError, match="bad generated-corpus setting 'samples=x'"):
        corpora["self-toxic"].check(f"{tiny_folder},samples=x")
    with pytest.raises(UsageError, match="clean < toxic"):
        parse_argument(f"{tiny_folder},toxic=0.1,clean=0.5")
    assert parse_argument("smollm2") == GeneratedSpec("smollm2")
