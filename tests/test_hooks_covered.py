"""Every hook spec has a test of its own (datasette's rule), and here they are.

`test_every_hook_has_a_test` fails when a hook in unlearn_core/hookspecs.py has no test function
named `test_hook_<hook name>` anywhere under tests/, so a new hook cannot ship untested. Each
`test_hook_*` below registers an inline plugin implementing that one hook and uses what it
registered the way a user would (the CLI, the bench's pieces, the conformance kit).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from unlearn_core import (
    Architecture,
    CommandSpec,
    ComponentSpec,
    CorpusSpec,
    EvaluationSpec,
    MethodSpec,
    UsageError,
    hookimpl,
    hookspecs,
    load_plugins,
    plugins,
)
from unlearn_core.architectures import resolve_site
from unlearn_core.bench import plan_evaluations
from unlearn_core.cli import main
from unlearn_core.config import BenchConfig
from unlearn_core.corpora import build_windows
from unlearn_core.sites import mlp_site
from unlearn_core.testing import check_method, tiny_model, tiny_tokenizer

TESTS = Path(__file__).resolve().parent


def _hook_names() -> list[str]:
    return sorted(n for n, f in vars(hookspecs).items() if callable(f) and hasattr(f, "unlearn_spec"))


def _test_names() -> set[str]:
    names = set()
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                names.add(node.name)
    return names


def test_every_hook_has_a_test():
    hooks = _hook_names()
    assert "register_methods" in hooks and len(hooks) >= 6
    tests = _test_names()
    missing = [h for h in hooks if f"test_hook_{h}" not in tests]
    assert not missing, f"hooks without a test_hook_<name> test: {', '.join(missing)}"
    stale = sorted(t for t in tests if t.startswith("test_hook_") and t[len("test_hook_"):] not in hooks)
    assert not stale, f"tests named after hooks that no longer exist: {', '.join(stale)}"


@pytest.fixture
def with_plugin(monkeypatch):
    """Make every load_plugins() (the CLI's included) also load the given inline plugin."""
    real = plugins.load_plugins

    def install(name: str, plugin: object) -> None:
        monkeypatch.setattr(plugins, "load_plugins",
                            lambda only=None, extra=None: real(only, [*(extra or []), (name, plugin)]))

    return install


def test_misspelled_hook_is_named_by_unlearn_plugins(with_plugin, capsys):
    class Typo:
        @hookimpl
        def register_corpus(self, register):  # the spec is register_corpora
            pass

    with_plugin("typo", Typo())
    assert main(["plugins"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("typo:"))
    assert "FAILED" in line and "register_corpus" in line


class _Scorer:
    def __init__(self, options):
        self.options = options

    def score(self, ctx):
        return ctx.statistics("forget").importance("freq") * self.options.scale


def test_hook_register_methods(with_plugin, capsys):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = 2.0

    class Methods:
        @hookimpl
        def register_methods(self, register):
            register(MethodSpec("freq-only", "share of forget tokens a neuron fires on", _Scorer, Options))

    with_plugin("freq", Methods())
    assert main(["ls", "methods"]) == 0
    assert "freq-only" in capsys.readouterr().out
    registry = plugins.load_plugins()
    assert registry.plugins["freq"].registered == {"methods": ["freq-only"]}
    check_method("freq-only", "gpt2", {"scale": 3.0}, registry)


def test_hook_register_corpora(with_plugin, capsys):
    def documents(argument, seed):
        yield from (f"{argument} line {i} of seed {seed}.\n" for i in range(500))

    class Corpora:
        @hookimpl
        def register_corpora(self, register):
            register(CorpusSpec("echo", "the argument, repeated", documents, argument="WORD"))

    with_plugin("echo", Corpora())
    assert main(["ls", "corpora"]) == 0
    assert "echo:WORD" in capsys.readouterr().out
    registry = plugins.load_plugins()
    windows = build_windows("echo:hello", registry.corpora, tiny_tokenizer(), 128, 64, 32, seed=0)
    assert windows.stats.shape == (4, 32) and "hello" in tiny_tokenizer().decode(windows.stats[0])
    with pytest.raises(UsageError, match="echo"):
        build_windows("echo", registry.corpora, tiny_tokenizer(), 128, 64, 32, seed=0)


def test_hook_register_architectures(with_plugin, capsys):
    class Toy:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture("toy", ("toy",), {
                "mlp": mlp_site(("transformer.h",), ("mlp.c_fc",), "mlp.c_proj"),
                "first-half": lambda model: _half_site(model),
            }))

    with_plugin("toy", Toy())
    assert main(["ls", "architectures"]) == 0
    assert "toy" in capsys.readouterr().out
    registry = plugins.load_plugins()
    model = tiny_model("gpt2")
    model.config.model_type = "toy"
    site = resolve_site(model, "mlp", registry.architectures)
    assert site.shape == (2, 48)
    assert resolve_site(model, "first-half", registry.architectures).shape == (1, 48)


def _half_site(model):
    site = mlp_site(("transformer.h",), ("mlp.c_fc",), "mlp.c_proj")(model)
    site.n_layers = 1  # only the first block's neurons
    return site


class _Echo:
    """An explainer with no model: a neuron's explanation is its first record's tokens."""

    calls: list[int] = []

    def explain(self, neurons):
        _Echo.calls.append(len(neurons))
        return ["python code " + "".join(n.records[0].tokens[:3]) for n in neurons]

    def concepts(self, samples, n):
        return ["python code"][:n]

    def rate(self, explanations, topic):
        return [float(len(e) % 11) for e in explanations]


def test_hook_register_components(with_plugin, tmp_path, capsys):
    class Parts:
        @hookimpl
        def register_components(self, register):
            register(ComponentSpec("explainer", "echo", "first tokens of the top record", lambda: _Echo()))
            register(ComponentSpec("reranker", "identity", "a kind no built-in uses", lambda: None))

    with_plugin("parts", Parts())
    assert main(["ls", "explainers"]) == 0
    out = capsys.readouterr().out
    assert "echo" in out and "first tokens of the top record" in out and "tokens" in out
    assert main(["ls"]) == 0  # a kind of its own gets a section of its own, named by its plural
    assert "rerankers:\n  identity" in capsys.readouterr().out
    assert main(["ls", "rerankers"]) == 0 and capsys.readouterr().out.startswith("rerankers:\n  identity")
    assert main(["ls", "rerankrs"]) == 2
    assert "unknown section 'rerankrs' (did you mean 'rerankers'" in capsys.readouterr().err
    registry = plugins.load_plugins()
    assert registry.component("explainer", "echo").description == "first tokens of the top record"
    assert registry.components["explainer"]["echo"].kind == "explainer"
    assert registry.plugins["parts"].registered == {"explainers": ["echo"], "rerankers": ["identity"]}
    assert registry.owner[("components:explainer", "echo")] == "parts"
    with pytest.raises(UsageError, match="unknown reranker 'identiy' \\(did you mean 'identity'"):
        registry.component("reranker", "identiy")
    _Echo.calls.clear()
    check_method("keyword", "llama", {"explainer": "echo", "store": str(tmp_path / "s.sqlite"),
                                      "max_neurons": 8}, registry)
    assert _Echo.calls == [8]  # the second run reads the store
    with pytest.raises(UsageError, match="unknown explainer 'ecko'"):
        check_method("keyword", "llama", {"explainer": "ecko"}, registry)


class _Bag:
    """Bag-of-letters embeddings: unit rows, no model."""

    def embed(self, texts):
        rows = torch.zeros(len(texts), 26)
        for i, t in enumerate(texts):
            for ch in t.lower():
                if "a" <= ch <= "z":
                    rows[i, ord(ch) - 97] += 1
        return torch.nn.functional.normalize(rows + 1e-3, dim=1)


def test_registered_embedder_is_built_by_snip(with_plugin, tmp_path):
    built = []

    class Embedders:
        @hookimpl
        def register_components(self, register):
            register(ComponentSpec("embedder", "bag", "bag of letters", lambda: built.append(1) or _Bag()))

    with_plugin("bag", Embedders())
    registry = plugins.load_plugins()
    check_method("snip", "gpt2", {"embedder": "bag", "explainer": "tokens", "store": str(tmp_path / "s.sqlite"),
                                  "max_neurons": 8, "concepts": ["python code"]}, registry)
    assert built == [1, 1]  # one scorer per run, each builds its embedder once


_SHOUT_PLUGIN = """
from unlearn_core import ComponentSpec, hookimpl

BUILT = []


class Shout:
    # A toxicity classifier with no model: the share of a text's letters that are capitals.
    name = "shout"

    def scores(self, texts):
        return [sum(c.isupper() for c in t) / max(1, sum(c.isalpha() for c in t)) for t in texts]

    def describe(self):
        return {"name": self.name, "rule": "share of capitals"}


@hookimpl
def register_components(register):
    register(ComponentSpec("classifier", "shout", "share of capital letters",
                           lambda device="cpu": BUILT.append(device) or Shout()))
"""


def test_third_party_classifier_is_used_by_the_toxicity_evaluation(tmp_path, monkeypatch, tiny_folder,
                                                                   text_corpora):
    """An installed distribution (dist-info with an entry point, as pip leaves it) registers a
    classifier; `-O toxicity.classifier=shout` validates and builds it by name, the bench's numbers
    are its scores."""
    from unlearn_core import run_bench
    from unlearn_evals.toxicity import ToxicityOptions, generate

    (tmp_path / "unlearn_shout.py").write_text(_SHOUT_PLUGIN)
    info = tmp_path / "unlearn_shout-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: unlearn-shout\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unlearn]\nshout = unlearn_shout\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("UNLEARN_PLUGINS", raising=False)
    registry = load_plugins()
    assert registry.owner[("components:classifier", "shout")] == "shout"
    assert set(registry.components["classifier"]) == {"detoxify", "profanity", "shout"}
    typo = BenchConfig(methods=["random"], evals=["tokens", "toxicity"],
                       options={"toxicity": {"classifier": "shuot"}})
    with pytest.raises(UsageError, match="unknown toxicity classifier 'shuot' \\(did you mean 'shout'"):
        plan_evaluations(typo, registry)  # before any model loads

    sampling = {"samples": 6, "max_new_tokens": 5, "batch_size": 3}
    config = BenchConfig(methods=["random"], model=str(tiny_folder), forget=text_corpora[0],
                         retain=text_corpora[1], steps=1, fraction=0.05, tokens=256, eval_tokens=128,
                         window=64, seed=2, evals=["tokens", "toxicity"],
                         options={"toxicity": {**sampling, "classifier": "shout", "threshold": 0.1}})
    [record] = run_bench(config, registry=registry, progress=False, log=lambda m: None)
    import unlearn_shout

    assert unlearn_shout.BUILT == ["cpu"]  # built once, by name, on the model's device
    base = record.steps[0].evaluations["toxicity"]
    assert base["classifier"] == {"name": "shout", "rule": "share of capitals"}
    texts = generate(tiny_model("llama"), tiny_tokenizer(), ToxicityOptions(**sampling, classifier="shout"), 2)
    scores = unlearn_shout.Shout().scores(texts)
    assert base["samples"] == 6 and base["mean_score"] == pytest.approx(sum(scores) / 6)
    assert base["rate"] == sum(s > 0.1 for s in scores) / 6 and 0 < base["rate"] < 1


def test_an_inline_classifier_is_checked_against_the_bench_registry():
    """The toxicity options are checked against the registry the bench runs with (EvaluationSpec.check),
    so a classifier registered by an inline plugin, not installed, is accepted, and missing otherwise."""
    import types

    inline = types.ModuleType("inline_shout")
    exec(_SHOUT_PLUGIN, inline.__dict__)
    config = BenchConfig(methods=["random"], evals=["tokens", "toxicity"],
                         options={"toxicity": {"classifier": "shout"}})
    assert plan_evaluations(config, load_plugins(only="evals", extra=[("inline", inline)]))[
        "toxicity"].classifier == "shout"
    with pytest.raises(UsageError, match="unknown toxicity classifier 'shout'"):
        plan_evaluations(config, load_plugins(only="evals"))


def test_hook_register_commands(with_plugin, capsys):
    class Hello:
        @hookimpl
        def register_commands(self, register):
            register(CommandSpec("hello", "say hello", lambda p: p.add_argument("--name", default="you"),
                                 lambda args: print(f"hello {args.name}") or 0))

    with_plugin("hello", Hello())
    assert main(["hello", "--name", "plugin"]) == 0
    assert capsys.readouterr().out == "hello plugin\n"
    assert main(["hello", "--nme", "x"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_hook_register_evaluations(with_plugin, capsys):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        n: int = 3

    class Evaluations:
        @hookimpl
        def register_evaluations(self, register):
            register(EvaluationSpec("count", "counts to n", lambda options, ctx: None, Options))

    with_plugin("count", Evaluations())
    assert main(["ls", "evaluations"]) == 0
    assert "counts to n" in capsys.readouterr().out
    registry = load_plugins(extra=[("count", Evaluations())])
    config = BenchConfig(methods=["random"], evals=["tokens", "count"], options={"count": {"n": 5}})
    assert plan_evaluations(config, registry)["count"].n == 5
    bad = BenchConfig(methods=["random"], evals=["tokens", "count"], options={"count": {"m": 5}})
    with pytest.raises(UsageError, match="bad option count.m"):
        plan_evaluations(bad, registry)
