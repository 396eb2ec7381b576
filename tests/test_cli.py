"""Bad input ends in one clear line and exit status 2; listing commands work."""

import json
import os
import subprocess
import sys

import pytest

from unlearn_core.cli import main


def _err(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["bench", "--method", "selectiv"], "unknown method 'selectiv' (did you mean 'selective'?)"),
    (["bench", "--method", "selective", "--forget", "pyhton"], "did you mean 'python'?"),
    (["bench", "--method", "selective", "--retain", "text:/no/such/file"], "not a readable file"),
    (["bench", "--method", "selective", "--fraction", "0"], "--fraction must be in (0, 1]"),
    (["bench", "--method", "selective", "--fraction", "1.5"], "--fraction must be in (0, 1]"),
    (["bench", "--method", "selective", "--fraction", "abc"], "invalid float value: 'abc'"),
    (["bench", "--method", "selective", "--steps", "0"], "--steps must be at least 1"),
    (["bench", "--method", "selective", "--steps", "60", "--fraction", "0.02"], "at most 100%"),
    (["bench", "--method", "selective", "--tokens", "-5"], "--tokens must be positive"),
    (["bench", "--method", "selective", "--importance", "mean"], "bad option selective.importance"),
    (["bench", "--method", "selective", "-O", "selective.epz=1"], "bad option selective.epz"),
    (["bench", "--method", "selective", "-O", "random=1"], "expects METHOD.KEY=VALUE"),
    (["bench", "--method", "random", "--importance", "abs"],
     "none of the methods (random) has an importance option"),
    (["bench", "--method", "selective", "--preset", "gpu"], "unknown preset 'gpu'"),
    (["bench", "--method", "selective", "--site", "values"], "unknown neuron site 'values'"),
    (["bench", "--method", "selective,selective"], "named twice"),
    (["bench", "--method", "random", "--model", "/no/such/model.gguf"], "does not exist"),
    (["bench", "--method", "random", "--model", "./no/such/folder"], "neither a model folder"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["bench", "--method", "selective", "--count", "0"], "--count must be at least 1"),
    (["bench", "--method", "snip", "-O", "snip.explainer=tokns"], "unknown explainer 'tokns' (did you mean"),
    (["bench", "--method", "snip", "-O", "snip.embedder=bert"], "unknown embedder 'bert'"),
    (["bench", "--method", "snip", "-O", 'snip.explainer_options={"tpo": 3}'],
     "bad options for explainer 'tokens'"),
    (["explain", "--explainer", "gpt"], "unknown explainer 'gpt'"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    code, err = _err(capsys, argv)
    assert code == 2
    assert err.startswith("unlearn: error: ") and "\n" not in err
    assert message in err


def test_near_miss_of_an_embedded_model_fails_fast(capsys):
    code, err = _err(capsys, ["bench", "--method", "random", "--model", "smolm2"])
    assert code == 2 and "\n" not in err
    assert "unknown model 'smolm2' (did you mean 'smollm2'?)" in err


@pytest.mark.parametrize("argv", [["--model", "nobody/no-such-model"], ["--model", "m/nope"],
                                  ["--forget", "hf:nobody/nothing"]])
def test_an_unreachable_hub_is_said_at_once(tmp_path, argv):
    """No offline switch set, and a hub that refuses connections (as a machine without network
    does): decided once, one line, instead of a minute of printed retries."""
    exe = os.path.join(os.path.dirname(sys.executable), "unlearn")
    env = {k: v for k, v in os.environ.items() if "OFFLINE" not in k and "PROXY" not in k.upper()}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: nothing listens there
    out = subprocess.run([exe, "bench", "--method", "random", *argv, "--out", str(tmp_path), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("unlearn: error: ") and "hub cannot be reached" in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert not list(tmp_path.iterdir())


def test_model_folder_without_config(capsys, tmp_path):
    code, err = _err(capsys, ["bench", "--method", "random", "--model", str(tmp_path)])
    assert code == 2 and "has no config.json" in err


def test_corpus_too_small_through_cli(capsys, tmp_path, tiny_folder):
    small = tmp_path / "small.txt"
    small.write_text("a b c\n")
    code, err = _err(capsys, ["bench", "--method", "random", "--model", str(tiny_folder),
                              "--forget", f"text:{small}", "--window", "128", "--out", str(tmp_path / "out"),
                              "--quiet"])
    assert code == 2 and "too small" in err and "\n" not in err


def test_console_script_exits_2_without_traceback():
    exe = os.path.join(os.path.dirname(sys.executable), "unlearn")
    out = subprocess.run([exe, "bench", "--method", "nope"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_ls_and_plugins_json(capsys):
    assert main(["ls", "methods"]) == 0
    listing = capsys.readouterr().out
    assert "selective" in listing and "random" in listing
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {p["name"]: p for p in data["plugins"]}
    assert names["selective"]["registered"] == {"methods": ["selective"]}
    assert names["random"]["registered"] == {"methods": ["random"]}
    assert "python" in names["unlearn_core"]["registered"]["corpora"]
    assert names["snip"]["registered"]["explainers"] == ["tokens", "local", "openai"]
    assert names["snip"]["registered"]["embedders"] == ["sentence-transformers", "openai"]
    assert names["evals"]["registered"]["classifiers"] == ["detoxify", "profanity"]


def test_ls_lists_each_component_kind_under_its_plural(capsys):
    for section, names in (("explainers", ["tokens", "local", "openai"]),
                           ("embedders", ["sentence-transformers", "openai"]),
                           ("classifiers", ["detoxify", "profanity"])):
        assert main(["ls", section]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == f"{section}:" and [x.split()[0] for x in lines[1:]] == names
    assert main(["--plugins", "", "ls", "classifiers"]) == 0  # none registered: the header alone
    assert capsys.readouterr().out == "classifiers:\n"
    assert main(["ls"]) == 0
    headers = [x for x in capsys.readouterr().out.splitlines() if not x.startswith(" ")]
    assert headers == ["methods:", "corpora:", "architectures:", "models:", "presets:", "classifiers:",
                       "embedders:", "explainers:", "evaluations:"]


def test_missing_openai_key_fails_before_loading_anything(capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, err = _err(capsys, ["bench", "--method", "snip", "-O", "snip.explainer=openai"])
    assert code == 2 and "no OpenAI API key" in err and "\n" not in err
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    code, err = _err(capsys, ["bench", "--method", "snip", "-O", "snip.embedder=openai",
                              "-O", 'snip.embedder_options={"modl": "x"}'])
    assert code == 2 and "bad options for embedder 'openai'" in err and "sk-test-secret" not in err
