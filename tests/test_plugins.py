"""Plugins load through entry points, can be chosen by env var, and fail one at a time."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from unlearn_core import Architecture, ComponentSpec, MethodSpec, hookimpl, load_plugins, mlp_site
from unlearn_core.errors import UsageError


def test_builtin_methods_come_from_entry_points():
    registry = load_plugins(only="")
    assert registry.methods == {}  # nothing but the core when no entry point is chosen
    registry = load_plugins()
    assert registry.owner[("methods", "selective")] == "selective"
    assert registry.owner[("methods", "random")] == "random"
    assert registry.plugin_of("methods", "selective").package == "unlearn"
    assert registry.failed == {}


def test_env_var_chooses_plugins(monkeypatch):
    monkeypatch.setenv("UNLEARN_PLUGINS", "random")
    registry = load_plugins()
    assert set(registry.methods) == {"random"}
    monkeypatch.setenv("UNLEARN_PLUGINS", "rando")
    with pytest.raises(UsageError, match="did you mean 'random'"):
        load_plugins()


class InlinePlugin:
    @hookimpl
    def register_methods(self, register):
        register(MethodSpec(name="inline", description="test", scorer=lambda options: None))


def test_inline_plugin_registers_beside_builtins():
    registry = load_plugins(extra=[("inline", InlinePlugin())])
    assert {"inline", "selective", "random"} <= set(registry.methods)
    assert registry.plugins["inline"].hooks == ["register_methods"]


def test_duplicate_name_names_both_plugins():
    class Clash:
        @hookimpl
        def register_methods(self, register):
            register(MethodSpec(name="random", description="again", scorer=lambda o: None))

    with pytest.raises(UsageError, match="'random' and by 'clash'"):
        load_plugins(extra=[("clash", Clash())])


def test_duplicate_component_names_both_plugins():
    class Local:
        @hookimpl
        def register_components(self, register):
            register(ComponentSpec("explainer", "local", "another local explainer", lambda: None))

    with pytest.raises(UsageError) as e:
        load_plugins(extra=[("mine", Local())])
    assert str(e.value) == "explainer 'local' is registered twice: by 'snip' and by 'mine'"

    class OtherKind:  # the same name under another kind is another component
        @hookimpl
        def register_components(self, register):
            register(ComponentSpec("reranker", "local", "a reranker", lambda: None))

    registry = load_plugins(extra=[("mine", OtherKind())])
    assert registry.component("reranker", "local").description == "a reranker"
    assert registry.component("explainer", "local").description != "a reranker"


def test_component_without_a_usable_kind_fails_its_plugin_only():
    class NoKind:
        @hookimpl
        def register_components(self, register):
            register(ComponentSpec("", "x", "no kind", lambda: None))

    class MethodKind:
        @hookimpl
        def register_components(self, register):
            register(ComponentSpec("method", "x", "would hide the methods in `unlearn ls`", lambda: None))

    registry = load_plugins(extra=[("nokind", NoKind()), ("methodkind", MethodKind())])
    assert "register_components failed: TypeError" in registry.failed["nokind"]
    assert "has kind 'method'" in registry.failed["methodkind"]
    assert "" not in registry.components and "method" not in registry.components
    assert "selective" in registry.methods and "tokens" in registry.components["explainer"]


def test_architecture_claiming_a_claimed_model_type_names_both_plugins():
    class Mine:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture("my-gpt", ("my-gpt", "gpt2"), {
                "mlp": mlp_site(("transformer.h",), ("mlp.c_fc",), "mlp.c_proj")}))

    with pytest.raises(UsageError) as e:
        load_plugins(extra=[("mine", Mine())])
    assert str(e.value) == ("model type 'gpt2' is claimed twice: by architecture 'gpt2' of 'unlearn_core' "
                            "and by architecture 'my-gpt' of 'mine'")

    class Again:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture("gpt2", ("gpt2-new",), {}))

    with pytest.raises(UsageError, match="architecture 'gpt2' is registered twice: by 'unlearn_core' and by"):
        load_plugins(extra=[("again", Again())])


def test_misspelled_hook_is_reported_not_ignored():
    class Typo:
        @hookimpl
        def register_method(self, register):  # missing 's'
            pass

    registry = load_plugins(extra=[("typo", Typo())])
    assert "typo" in registry.failed and "register_method" in registry.failed["typo"]
    assert "selective" in registry.methods


def _fake_distribution(root, name, module_source):
    """A real installed distribution (dist-info + module) on a path of its own."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[unlearn]\n{name} = {name}\n")


def test_plugin_that_fails_to_import_is_named_and_others_work(tmp_path):
    _fake_distribution(tmp_path, "brokenplug", "raise RuntimeError('missing weights')\n")
    _fake_distribution(tmp_path, "goodplug", """
        from unlearn_core import MethodSpec, hookimpl

        @hookimpl
        def register_methods(register):
            register(MethodSpec(name="good", description="works", scorer=lambda o: None))
    """)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("UNLEARN_PLUGINS", None)
    out = subprocess.run([sys.executable, "-m", "unlearn_core.cli", "plugins", "--json"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["failed"] == [{"name": "brokenplug",
                               "error": "cannot load: RuntimeError: missing weights"}]
    good = next(p for p in data["plugins"] if p["name"] == "goodplug")
    assert good["registered"] == {"methods": ["good"]} and good["version"] == "0.1"
    assert any(p["name"] == "selective" for p in data["plugins"])


def test_plugins_option_chooses_plugins_over_the_env_var(monkeypatch, capsys):
    from unlearn_core.cli import main

    monkeypatch.setenv("UNLEARN_PLUGINS", "selective")
    assert main(["--plugins", "random", "ls", "methods"]) == 0
    out = capsys.readouterr().out
    assert "random" in out and "selective" not in out
    assert main(["--plugins", "", "plugins", "--json"]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)["plugins"]] == ["unlearn_core"]
    assert main(["--plugins", "rando", "plugins"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'random'" in err


class Exploding:
    """A method whose scorer raises at its second step."""

    @hookimpl
    def register_methods(self, register):
        class Scorer:
            def __init__(self, options):
                pass

            def score(self, ctx):
                if ctx.step == 2:
                    raise RuntimeError("CUDA out of memory\nmore details")
                return __import__("torch").rand(ctx.site.shape, generator=ctx.generator())

        register(MethodSpec(name="boom", description="raises", scorer=Scorer))


def test_method_that_raises_mid_run_is_named_and_the_others_finish(monkeypatch, capsys, tiny_folder,
                                                                  text_corpora, tmp_path):
    from unlearn_core import plugins
    from unlearn_core.cli import main
    from unlearn_core.records import load_record

    real = plugins.load_plugins
    monkeypatch.setattr(plugins, "load_plugins",
                        lambda only=None, extra=None: real(only, [("boom", Exploding())]))
    forget, retain = text_corpora
    code = main(["bench", "--method", "boom,random", "--model", str(tiny_folder), "--forget", forget,
                 "--retain", retain, "--preset", "smoke", "--steps", "3", "--out", str(tmp_path), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == ("unlearn: error: method 'boom' (plugin 'boom', Exploding inline) failed in score at "
                   "step 2: RuntimeError: CUDA out of memory\n")
    assert "| random" in out and "| boom" not in out
    random = load_record(next(tmp_path.glob("random-*.json")))
    boom = load_record(next(tmp_path.glob("boom-*.json")))
    assert random.complete and not boom.complete and len(boom.steps) == 2  # step 0 and step 1 kept


def _unreachable(ctx):
    assert ctx.step == 0 and not ctx.pruned.any()  # prepare sees the original weights
    raise OSError("explainer unreachable")


def test_method_that_fails_to_prepare_is_named_and_the_others_are_written(monkeypatch, capsys, tiny_folder,
                                                                        text_corpora, tmp_path):
    from tiny import method_plugin

    from unlearn_core import plugins
    from unlearn_core.cli import main
    from unlearn_core.records import load_record

    real = plugins.load_plugins
    monkeypatch.setattr(plugins, "load_plugins",
                        lambda only=None, extra=None: real(only, [("unready", method_plugin(
                            "unready", score=lambda ctx: None, prepare=_unreachable))]))
    forget, retain = text_corpora
    code = main(["bench", "--method", "random,unready,selective", "--model", str(tiny_folder), "--forget",
                 forget, "--retain", retain, "--preset", "smoke", "--out", str(tmp_path), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == ("unlearn: error: method 'unready' (plugin 'unready', Plugin inline) failed in "
                   "prepare: OSError: explainer unreachable\n")
    assert "| random" in out and "| selective" in out and "| unready" not in out
    assert all(load_record(next(tmp_path.glob(f"{m}-*.json"))).complete for m in ("random", "selective"))
    assert not list(tmp_path.glob("unready-*.json"))
