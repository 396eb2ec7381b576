"""What a results tool is trusted with: no secret in any file a run writes, no record rewritten
except by appending the steps of its own resumed run, files with the umask's mode, plugin names
that cannot escape --out, and valid input accepted."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
import torch
from openai_server import FakeOpenAI, last_user_message

from unlearn_core import MethodSpec, hookimpl, load_plugins
from unlearn_core.cli import main

CANARY = "sk-canary-Zq81x"
USER = "alice"


def _forms(secret: str) -> list[str]:
    """The secret as it could leak: plain, in a user:secret pair, and base64 (Basic auth)."""
    pair = f"{USER}:{secret}"
    return [secret, base64.b64encode(pair.encode()).decode().rstrip("="),
            base64.b64encode(secret.encode()).decode().rstrip("=")]


def _bench(tiny_folder, text_corpora, out, *extra: str) -> list[str]:
    forget, retain = text_corpora
    return ["bench", "--model", str(tiny_folder), "--forget", forget, "--retain", retain,
            "--preset", "smoke", "--quiet", "--out", str(out), *extra]


def _reply(body) -> str:
    text = last_user_message(body)
    return "def, return, code" if "concept" in text.lower() else "python code"


def test_no_secret_in_any_file_a_run_writes(tiny_folder, text_corpora, tmp_path, capfd):
    """An api key given as an option and credentials in base_url reach neither records, plots, the
    explanation store, the leaderboards, nor anything printed."""
    with FakeOpenAI(reply=_reply, dim=8) as server:
        url = server.base_url.replace("http://", f"http://{USER}:{CANARY}@")
        secret_options = json.dumps({"api_key": CANARY, "base_url": url, "model": "m"})
        code = main(_bench(tiny_folder, text_corpora, tmp_path / "results", "--method", "snip,random",
                           "-O", "snip.explainer=openai", "-O", f"snip.explainer_options={secret_options}",
                           "-O", "snip.embedder=openai", "-O", f"snip.embedder_options={secret_options}",
                           "-O", f"snip.store={tmp_path / 'store.sqlite'}", "-O", "snip.max_neurons=8"))
        assert code == 0, capfd.readouterr().err
        assert server.requests, "the explainer never asked the server"
        sent = " ".join(r.headers.get("authorization", "") for r in server.requests)
        assert any(form in sent for form in _forms(CANARY)), sent  # the secret was used, in some form
    for fmt in ("md", "html", "csv"):
        assert main(["leaderboard", str(tmp_path / "results"), "--out", str(tmp_path / f"board.{fmt}")]) == 0
    out, err = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".json", ".png", ".sqlite", ".md", ".html", ".csv"} <= kinds, kinds
    for path in written:
        data = path.read_bytes()
        for form in _forms(CANARY):
            assert form.encode() not in data, f"{form!r} in {path}"
    for form in _forms(CANARY):
        assert form not in out and form not in err
    record = json.loads(next((tmp_path / "results").glob("snip-*.json")).read_text())
    assert record["options"]["explainer_options"]["api_key"] == "***"
    assert record["options"]["explainer_options"]["base_url"].startswith("http://***@127.0.0.1")
    assert record["config"]["options"]["snip"]["embedder_options"]["api_key"] == "***"


def test_rerunning_a_finished_run_leaves_its_record_untouched(tiny_folder, text_corpora, tmp_path):
    argv = _bench(tiny_folder, text_corpora, tmp_path, "--method", "random")
    assert main(argv) == 0
    path = next(tmp_path.glob("random-*.json"))
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    assert main(argv) == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before


FAIL_AT = {"step": 0}  # the flaky method's scorer raises at this step (0: never)


class _Flaky:
    def score(self, ctx):
        if ctx.step == FAIL_AT["step"]:
            raise RuntimeError("flaky")
        return torch.rand(ctx.site.shape, generator=torch.Generator().manual_seed(ctx.step))


class FlakyPlugin:
    @staticmethod
    @hookimpl
    def register_methods(register):
        register(MethodSpec("flaky", "fails at FAIL_AT['step']", lambda options: _Flaky()))


def test_resume_appends_steps_and_keeps_fields_it_does_not_know(tiny_folder, text_corpora, tmp_path,
                                                                monkeypatch, capfd):
    import unlearn_core.plugins as plugins

    real = plugins.load_plugins
    monkeypatch.setattr(plugins, "load_plugins", lambda only=None: real(only, extra=[("flaky", FlakyPlugin)]))
    argv = _bench(tiny_folder, text_corpora, tmp_path, "--method", "flaky")
    FAIL_AT["step"] = 2
    try:
        assert main(argv) == 1  # a plugin's own crash: exit 1, named
        assert "method 'flaky' (plugin 'flaky'" in capfd.readouterr().err
        path = next(tmp_path.glob("flaky-*.json"))
        raw = json.loads(path.read_text())
        assert len(raw["steps"]) == 2 and not raw["complete"]
        raw["x_note"] = {"by": "hand"}  # fields a newer unlearn or a person added
        raw["steps"][1]["x_gpu_seconds"] = 1.5
        raw["model"]["x_license"] = "apache-2.0"
        path.write_text(json.dumps(raw, indent=2))
        FAIL_AT["step"] = 0
        assert main(argv) == 0
    finally:
        FAIL_AT["step"] = 0
    done = json.loads(path.read_text())
    assert done["complete"] and len(done["steps"]) == 3
    assert done["x_note"] == {"by": "hand"} and done["steps"][1]["x_gpu_seconds"] == 1.5
    assert done["model"]["x_license"] == "apache-2.0"
    assert done["steps"][:2] == [{k: v for k, v in s.items()} for s in raw["steps"]]  # old steps as they were


def test_files_get_the_umasks_mode(tiny_folder, text_corpora, tmp_path):
    old = os.umask(0o022)
    try:
        assert main(_bench(tiny_folder, text_corpora, tmp_path / "out", "--method", "random")) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").iterdir() if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o644}, \
        {p.name: oct(p.stat().st_mode & 0o777) for p in files}


def test_count_below_the_presets_fraction_is_accepted(tiny_folder, text_corpora, tmp_path):
    """--count 1 --steps 25 deletes 25 of 96 neurons: valid, whatever the preset's fraction says."""
    assert main(_bench(tiny_folder, text_corpora, tmp_path, "--method", "random", "--count", "1",
                       "--steps", "25", "--eval-tokens", "128")) == 0
    record = json.loads(next(tmp_path.glob("random-*.json")).read_text())
    assert record["site"]["schedule"] == list(range(1, 26)) and record["complete"]


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", "..", "x y", "", "é" * 3, "a" * 81])
def test_unsafe_plugin_names_are_refused_and_the_plugin_named(name):
    class Evil:
        @staticmethod
        @hookimpl
        def register_methods(register):
            register(MethodSpec(name, "hostile", lambda o: None))

    registry = load_plugins(extra=[("evil", Evil)])
    assert name not in registry.methods
    assert "not allowed" in registry.failed["evil"] and "selective" in registry.methods


def test_a_plugins_crash_outside_a_method_is_exit_1_naming_it(tiny_folder, text_corpora, tmp_path, capfd,
                                                              monkeypatch):
    from unlearn_core import EvaluationSpec

    class Broken:
        @staticmethod
        @hookimpl
        def register_evaluations(register):
            def prepare(options, ctx):
                raise ZeroDivisionError("oops")
            register(EvaluationSpec("broken", "crashes while preparing", prepare))

    import unlearn_core.plugins as plugins

    real = plugins.load_plugins
    monkeypatch.setattr(plugins, "load_plugins", lambda only=None: real(only, extra=[("brk", Broken)]))
    code = main(_bench(tiny_folder, text_corpora, tmp_path / "out", "--method", "random", "--eval", "broken"))
    err = capfd.readouterr().err.strip()
    assert code == 1 and "\n" not in err and "Traceback" not in err
    assert err.startswith("unlearn: error: evaluation 'broken' (plugin 'brk'")
    assert "ZeroDivisionError: oops" in err
    assert not Path(tmp_path / "out").exists()
