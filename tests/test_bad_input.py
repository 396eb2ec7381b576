"""Hostile and careless input, one table: every case ends in exit status 2 and one line
`unlearn: error: ...` naming the problem, with no traceback, and leaves every file as it was.

Each case runs `unlearn` in-process on tiny models and corpora in its own folder, which holds a
copy of a finished run's records; the folder's files (bytes and modes) must be the same after the
case, and no file may appear. Areas: bench, corpora, models, records, leaderboard, explain,
plugins, openai (an OpenAI-compatible server on 127.0.0.1 that answers badly).
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from unlearn_core import CorpusSpec, EvaluationSpec, Figure, MethodSpec, hookimpl
from unlearn_core.cli import main
from unlearn_core.hub import hub_offline
from unlearn_core.testing import save_tiny

SECRET = "sk-canary-7Qx9"  # must never be printed


@dataclass(frozen=True)
class Case:
    area: str
    argv: tuple[str, ...]  # {name} is replaced by the world's paths (see `world`)
    says: str  # what the one line must contain
    setup: Callable[[dict[str, Path]], None] | None = None  # edits the case's folder first
    plugins: tuple[tuple[str, object], ...] = ()  # inline plugins loaded beside the installed ones


def run(*argv: str) -> tuple[str, ...]:
    return ("bench", "--method", "random", "--model", "{tiny}", "--forget", "{code}", "--retain",
            "{prose}", "--preset", "smoke", "--quiet", *argv)


def resume(*argv: str) -> tuple[str, ...]:
    return run("--out", "{results}", *argv)


def explain(*argv: str) -> tuple[str, ...]:
    return ("explain", "--model", "{tiny}", "--forget", "{code}", "--retain", "{prose}", "--preset",
            "smoke", "--store", "{tmp}/store.sqlite", "--quiet", *argv)


def openai(path: str, *argv: str) -> tuple[str, ...]:
    return explain("--explainer", "openai", "-O", f"api_key={SECRET}",
                   "-O", f"base_url=http://user:{SECRET}@127.0.0.1:{{port}}/{path}/v1", *argv)


# ----------------------------------------------------------------- setups: edit the case's folder

def write(name: str, data: bytes | str) -> Callable[[dict[str, Path]], None]:
    def setup(p: dict[str, Path]) -> None:
        path = p["tmp"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return setup


def edit_record(change: Callable[[dict], object]) -> Callable[[dict[str, Path]], None]:
    """Edit the finished record's JSON in place with `change(raw)`."""
    def setup(p: dict[str, Path]) -> None:
        path = next(p["results"].glob("random-*.json"))
        raw = json.loads(path.read_text())
        change(raw)
        path.write_text(json.dumps(raw))
    return setup


def replace_record(content: Callable[[dict], bytes | str]) -> Callable[[dict[str, Path]], None]:
    """Replace the finished record by `content(raw)`."""
    def setup(p: dict[str, Path]) -> None:
        path = next(p["results"].glob("random-*.json"))
        new = content(json.loads(path.read_text()))
        path.write_bytes(new if isinstance(new, bytes) else new.encode())
    return setup


def set_key(key: str, value) -> Callable[[dict], None]:
    return lambda raw: raw.__setitem__(key, value)


NESTED = "[" * 200_000


def _method_plugin(name: str):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_methods(register):
            register(MethodSpec(name, "a method with a hostile name", lambda o: None))
    return Plugin


def _evaluation_plugin(key: str):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_evaluations(register):
            register(EvaluationSpec("evil", "a figure with a hostile key", lambda o, c: None,
                                    figures=(Figure(key=key, title="x"),)))
    return Plugin


def _corpus_plugin(name: str):
    class Plugin:
        @staticmethod
        @hookimpl
        def register_corpora(register):
            register(CorpusSpec(name, "a corpus with a hostile name", lambda a, s: ["x"]))
    return Plugin


CASES: list[Case] = [
    # bench: flags, numbers, devices, windows, --out
    Case("bench", run("--device", "cuda"), "CUDA is not available"),
    Case("bench", run("--device", "cuda:9"), "--device cuda:9"),
    Case("bench", run("--device", "tpu"), "'tpu' is not a torch device"),
    Case("bench", run("--device", "meta"), "'meta' holds no weights"),
    Case("bench", run("--device", ""), "'' is not a torch device"),
    Case("bench", run("--seed", str(2**70)), "bad value for --seed"),
    Case("bench", run("--seed", "-1"), "bad value for --seed"),
    Case("bench", run("--seed", "1e3"), "argument --seed: invalid int value"),
    Case("bench", run("--window", "4096"), "--window 4096 is longer than model"),
    Case("bench", run("--model", "{gpt2}", "--window", "200"), "(128 tokens)"),
    Case("bench", run("--window", "1"), "--window must be at least 2"),
    Case("bench", run("--out", "{file}"), "is a file, not a folder"),
    Case("bench", run("--out", "{file}/sub/dir"), "is a file, not a folder"),
    Case("bench", run("--fractoin", "0.1"), "did you mean '--fraction'?"),
    Case("bench", ("bnech", "--method", "random"), "did you mean 'bench'?"),
    Case("bench", run("--batch-size", "0"), "--batch-size must be positive"),
    Case("bench", run("--eval-tokens", "0"), "--eval-tokens must be positive"),
    Case("bench", run("--eval", "tokens,nope"), "unknown evaluation 'nope'"),
    Case("bench", ("bench", "--method", ",", "--quiet"), "name at least one method"),
    Case("bench", run("-O", "random.nope=1"), "bad option random.nope"),
    Case("bench", run("-O", "random=1"), "expects METHOD.KEY=VALUE"),
    Case("bench", run("-O", SECRET), "expects METHOD.KEY=VALUE"),  # a key pasted alone: not echoed
    Case("bench", run("-O", "random.x=" + "[" * 100_000), "nested too deeply"),
    Case("bench", run("--reference", "random.selectivity=[1]"), "bad value for --reference random.selectivity"),
    Case("bench", run("--reference", "nope.selectivity=1"), "references given for 'nope'"),
    Case("bench", run("--count", "1000"), "more than the site's 96"),
    Case("bench", run("--tokens", "100000000"), "too small"),
    Case("bench", run("--preset", ""), "unknown preset ''"),
    Case("bench", run("--site", "nope"), "unknown neuron site 'nope'"),
    Case("bench", run("--site", "mlp,atn-value"),
         "unknown neuron site 'atn-value' (did you mean 'attn-value'?); choose from: attn-head, "
         "attn-pre-out, attn-value, mlp"),
    Case("bench", run("--site", "mlp,mlp"), "site 'mlp' is named twice"),
    Case("bench", run("--site", ""), "name at least one neuron site"),
    Case("bench", run("--site", "mlp,,attn-head"), "an empty name in the comma list"),
    Case("bench", run("--site", "mlp,attn-head", "--count", "5"),
         "site 'attn-head' (2 layers x 4): --steps 2 x --count 5 is 10 neurons, more than the site's 8"),
    Case("bench", run("--importance", "abs"), "none of the methods (random) has an importance option"),
    Case("bench", run("--method", "selective", "--importance", "abs,nope"), "bad option selective.importance"),
    Case("bench", run("--method", "selective", "--importance", "abs,abs"), "importance 'abs' is named twice"),
    Case("bench", run("--method", "selective", "--importance", "abs", "-O", "selective.importance=rms"),
         "the importance of 'selective' is given twice"),
    Case("bench", run("--steps", "3", "--fraction", "0.5"), "at most 100%"),
    # corpora
    Case("corpora", run("--forget", "jsonl:{tmp}/bad.jsonl"), "bad.jsonl:2: not UTF-8",
         write("bad.jsonl", b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')),
    Case("corpora", run("--forget", "jsonl:{tmp}/deep.jsonl"), "deep.jsonl:1: not JSON",
         write("deep.jsonl", NESTED + "\n")),
    Case("corpora", run("--forget", "jsonl:{tmp}/nofield.jsonl"), "no field 'text'",
         write("nofield.jsonl", '{"body": "x"}\n')),
    Case("corpora", run("--forget", "jsonl:{tmp}/number.jsonl"), "field 'text' is a int, not text",
         write("number.jsonl", '{"text": 5}\n')),
    Case("corpora", run("--forget", "jsonl:{tmp}/broken.jsonl"), "broken.jsonl:1: not JSON",
         write("broken.jsonl", '{"text": \n')),
    Case("corpora", run("--forget", "jsonl:{tmp}/missing.jsonl"), "is not a readable file"),
    Case("corpora", run("--retain", "text:{tmp}/missing"), "is not a readable file or folder"),
    Case("corpora", run("--retain", "text:{tmp}/empty"), "has no files",
         lambda p: (p["tmp"] / "empty").mkdir()),
    Case("corpora", run("--forget", "hf:nobody/nothing"), "hub cannot be reached"),
    Case("corpora", run("--forget", "pile"), "hub cannot be reached"),
    Case("corpora", run("--forget", "hf:"), "corpus 'hf' needs an argument"),
    Case("corpora", run("--forget", "pyhton"), "did you mean 'python'?"),
    # models
    Case("models", run("--model", "m/nope"), "model 'm/nope' is no folder here"),
    Case("models", run("--model", "nobody/no-such-model"), "hub cannot be reached"),
    Case("models", run("--model", "{tmp}/no.gguf"), "does not exist"),
    Case("models", run("--model", "{tmp}/noconfig"), "has no config.json",
         lambda p: (p["tmp"] / "noconfig").mkdir()),
    Case("models", run("--model", "{tmp}/garbage"), "cannot load model",
         write("garbage/config.json", "{not json")),
    Case("models", run("--model", "{tmp}/deepconfig"), "cannot load model",
         write("deepconfig/config.json", NESTED)),
    Case("models", run("--model", "{tmp}/fake.gguf"), "cannot load model",
         write("fake.gguf", b"GGUF\x00\x01garbage")),
    Case("models", run("--model", "{tmp}/t5"), "not a causal language model",
         write("t5/config.json", json.dumps({"model_type": "t5", "d_model": 8, "num_layers": 1}))),
    Case("models", run("--model", ""), "--model is empty"),
    Case("models", run("--model", "smolm2"), "did you mean 'smollm2'?"),
    Case("models", run("--model", "a/b/c"), "not a hub id"),
    # records: the finished run's own record, edited, then the same command is run again
    Case("records", resume(), "cannot resume", replace_record(lambda raw: '{"hello": "world"}')),
    Case("records", resume(), "nested too deeply", replace_record(lambda raw: NESTED)),
    Case("records", resume(), "not UTF-8", replace_record(lambda raw: b'{"method": "\xff"}')),
    Case("records", resume(), "not JSON", replace_record(lambda raw: json.dumps(raw)[:-40])),
    Case("records", resume(), "newer unlearn (schema 99", edit_record(set_key("schema_version", 99))),
    Case("records", resume(), "schema_version must be a whole number",
         edit_record(set_key("schema_version", "2"))),
    Case("records", resume(), "schema_version must be a whole number",
         edit_record(set_key("schema_version", True))),
    Case("records", resume(), "names neuron 999 of layer 0",
         edit_record(lambda raw: raw["pruned_neurons"][0].append(999))),
    Case("records", resume(), "names neuron -1 of layer 1",
         edit_record(lambda raw: raw["pruned_neurons"][1].append(-1))),
    Case("records", resume(), "pruned_neurons has 3 layers", edit_record(
        lambda raw: raw["pruned_neurons"].append([]))),
    Case("records", resume(), "the schedule has", edit_record(
        lambda raw: raw["pruned_neurons"][0].pop())),
    # leaderboard
    Case("leaderboard", ("leaderboard", "{tmp}/nowhere"), "no such folder"),
    Case("leaderboard", ("leaderboard", "{tmp}/empty"), "no run records",
         lambda p: (p["tmp"] / "empty").mkdir()),
    Case("leaderboard", ("leaderboard", "{results}", "--sort", "nope"), "nope"),
    Case("leaderboard", ("leaderboard", "{results}", "--format", "xls"), "xls"),
    Case("leaderboard", ("leaderboard", "{results}", "--format", "md", "--out", "{record}"), "input"),
    Case("leaderboard", ("leaderboard", "{results}", "--out", "{file}/board.md"), "{file}"),
    # explain
    Case("explain", explain("--tokens", "0"), "--tokens"),
    Case("explain", explain("--max-neurons", "0"), "--max-neurons"),
    Case("explain", explain("--import", "{tmp}/deep.jsonl"), "deep.jsonl", write("deep.jsonl", NESTED)),
    Case("explain", explain("--import", "{tmp}/bytes.jsonl"), "bytes.jsonl",
         write("bytes.jsonl", b"\xff\xfe\x00garbage\n")),
    Case("explain", explain("--import", "{tmp}/far.jsonl"), "far.jsonl", write("far.jsonl", json.dumps(
        {"layer": 7, "neuron": 3, "explanation": "cats"}) + "\n")),
    Case("explain", explain("--import", "{tmp}/neg.jsonl"), "neg.jsonl", write("neg.jsonl", json.dumps(
        {"layer": 0, "neuron": -2, "explanation": "cats"}) + "\n")),
    Case("explain", explain("--explainer", "gpt"), "unknown explainer 'gpt'"),
    Case("explain", explain("-O", "nope"), "KEY=VALUE"),
    # plugins
    Case("plugins", ("--plugins", "nope", "ls"), "unknown plugin 'nope'"),
    Case("plugins", run("--method", "../../x", "--out", "{tmp}/out"), "unknown method '../../x'",
         plugins=(("evil", _method_plugin("../../x")),)),
    Case("plugins", run("--method", "/abs/x", "--out", "{tmp}/out"), "unknown method '/abs/x'",
         plugins=(("evil", _method_plugin("/abs/x")),)),
    Case("plugins", run("--eval", "evil"), "unknown evaluation 'evil'",
         plugins=(("evil", _evaluation_plugin("../x")),)),
    Case("plugins", run("--forget", "a:b:x"), "unknown corpus",
         plugins=(("evil", _corpus_plugin("a:b")),)),
    Case("plugins", run("-O", "snip.concepts=[]", "--method", "snip"), "snip.concepts"),
    Case("plugins", run("--method", "snip", "-O", 'snip.explainer_options={{"temperature": "hot"}}',
                        "-O", "snip.explainer=local"), "temperature"),
    Case("plugins", run("--method", "snip", "-O", "snip.explainer_options=[1]"), "explainer_options"),
    # openai: an OpenAI-compatible endpoint that answers badly
    Case("openai", openai("html"), "127.0.0.1"),
    Case("openai", openai("brokenjson"), "127.0.0.1"),
    Case("openai", openai("nochoices"), "127.0.0.1"),
    Case("openai", openai("echo401"), "127.0.0.1"),
    Case("openai", explain("--explainer", "openai", "-O", f"api_key={SECRET}",
                           "-O", "base_url=http://127.0.0.1:9/v1", "-O", "max_retries=0"), "127.0.0.1:9"),
]


# ----------------------------------------------------------------- a server that answers badly

class _BadServer(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        kind = self.path.strip("/").split("/")[0]
        status, body, ctype = 200, b"", "application/json"
        if kind == "html":
            body, ctype = b"<html><body>Welcome to nginx!</body></html>", "text/html"
        elif kind == "brokenjson":
            body = b'{"choices": [{"message": '
        elif kind == "nochoices":
            body = b'{"id": "x", "object": "chat.completion"}'
        elif kind == "echo401":  # what some proxies do: echo the request's headers in the error
            status = 401
            body = json.dumps({"error": {"message": f"bad credentials: {self.headers.get('authorization')}"}
                               }).encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def bad_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BadServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


# ----------------------------------------------------------------- the world and the runner

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Tiny models, two text corpora and the records of one finished tiny run."""
    root = tmp_path_factory.mktemp("world")
    paths = {"tiny": save_tiny(root / "tiny"), "gpt2": save_tiny(root / "gpt2", "gpt2"),
             "code": root / "code.txt", "prose": root / "prose.txt", "results": root / "results"}
    paths["code"].write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(600)))
    paths["prose"].write_text("".join(f"Now, fair Hippolyta, our hour number {i} draws on apace.\n"
                                      for i in range(600)))
    argv = [a.format(tiny=paths["tiny"], code=f"text:{paths['code']}", prose=f"text:{paths['prose']}",
                     results=paths["results"]) for a in resume()]
    assert main(argv) == 0
    return paths


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Decide "no network" for every machine the suite runs on, as hub.py would here.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_offline.cache_clear()
    yield
    hub_offline.cache_clear()


def run_case(case: Case, world: dict[str, Path], tmp: Path, port: int, capfd, monkeypatch) -> tuple[int, str]:
    shutil.copytree(world["results"], tmp / "results")
    (tmp / "afile.txt").write_text("not a folder\n")
    paths = {"tmp": tmp, "results": tmp / "results", "file": tmp / "afile.txt"}
    if case.setup:
        case.setup(paths)
    if case.plugins:
        import unlearn_core.plugins as plugins

        real = plugins.load_plugins
        monkeypatch.setattr(plugins, "load_plugins", lambda only=None: real(only, extra=list(case.plugins)))
    record = next((tmp / "results").glob("random-*.json"))
    names = dict(tiny=world["tiny"], gpt2=world["gpt2"], code=f"text:{world['code']}",
                 prose=f"text:{world['prose']}", tmp=tmp, results=tmp / "results", file=tmp / "afile.txt",
                 record=record, port=port)
    argv = [a.format(**names) for a in case.argv]
    says = case.says.format(**names)
    capfd.readouterr()
    before = snapshot(tmp)
    code = main(argv)
    out, err = capfd.readouterr()
    assert snapshot(tmp) == before, f"{argv}: files changed"
    return code, err, says, out


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}-{i}" for i, c in enumerate(CASES)])
def test_bad_input(case: Case, world, tmp_path, bad_server, capfd, monkeypatch):
    code, err, says, out = run_case(case, world, tmp_path, bad_server, capfd, monkeypatch)
    line = err.strip()
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert "Traceback" not in err
    assert line.startswith("unlearn: error: ") and "\n" not in line, f"not one line: {err[-2000:]}"
    assert says in line, line
    for secret in (SECRET, base64.b64encode(f"user:{SECRET}".encode()).decode()):
        assert secret not in err and secret not in out


def test_the_table_covers_every_area():
    areas = {c.area for c in CASES}
    assert areas == {"bench", "corpora", "models", "records", "leaderboard", "explain", "plugins", "openai"}
    assert len(CASES) >= 60
