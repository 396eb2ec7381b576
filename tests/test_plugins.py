"""Plugins load through entry points, can be chosen by env var, and fail one at a time."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from unlearn_core import MethodSpec, hookimpl, load_plugins
from unlearn_core.errors import UsageError


def test_builtin_methods_come_from_entry_points():
    registry = load_plugins(only="")
    assert registry.methods == {}  # nothing but the core when no entry point is chosen
    registry = load_plugins()
    assert registry.owner[("methods", "selective")] == "selective"
    assert registry.owner[("methods", "random")] == "baselines"
    assert registry.plugin_of("methods", "selective").package == "unlearn"
    assert registry.failed == {}


def test_env_var_chooses_plugins(monkeypatch):
    monkeypatch.setenv("UNLEARN_PLUGINS", "baselines")
    registry = load_plugins()
    assert set(registry.methods) == {"random"}
    monkeypatch.setenv("UNLEARN_PLUGINS", "baseline")
    with pytest.raises(UsageError, match="did you mean 'baselines'"):
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

    with pytest.raises(UsageError, match="'baselines' and by 'clash'"):
        load_plugins(extra=[("clash", Clash())])


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
