"""SNIP's neuron-explainer prompts and OpenAI backend, over real HTTP to a local fake server."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import torch
from openai_server import FakeOpenAI, hash_embedding, last_user_message

from unlearn_core import ActivationRecord, Embedder, Explainer, NeuronId, NeuronRecords
from unlearn_core.errors import UsageError
from unlearn_snip.openai_backend import OpenAIEmbedder, OpenAIExplainer, endpoint, safe_url
from unlearn_snip.prompts import (
    EXPLANATION_PREFIX,
    FEW_SHOT_EXAMPLES,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    clean_explanation,
    explanation_messages,
    format_records,
    parse_concepts,
    parse_rating,
    scale_activations,
)

KEY = "sk-test-SECRET-0123456789"
CHAT = "/v1/chat/completions"
FINAL = f"\nExplanation of neuron 4 behavior: {EXPLANATION_PREFIX}"
ZEROS = "Same activations, but with all zeros filtered out:"


def neuron(index: int, tokens: list[str], acts: list[float]) -> NeuronRecords:
    return NeuronRecords(NeuronId(0, index), [ActivationRecord(tokens, acts)])


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def explainer(server: FakeOpenAI, **kw) -> OpenAIExplainer:
    return OpenAIExplainer(model="test-model", base_url=server.base_url, api_key=KEY, backoff=0.01,
                           progress=False, **kw)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- the prompt format ----------------------------------------------------------------------

def test_scale_activations_hand_computed():
    assert scale_activations([-1.0, 0.0, 0.5, 1.0, 1.99, 2.0, 3.0], 2.0) == [0, 0, 2, 5, 9, 10, 10]
    assert scale_activations([0.05, 0.15], 1.0) == [0, 1]
    assert scale_activations([1.0, 2.0], 0.0) == [0, 0]
    assert scale_activations([1.0], -1.0) == [0]


def test_format_records_hand_computed():
    records = [ActivationRecord(["A", " b"], [1.0, -0.3]), ActivationRecord(["C"], [2.0])]
    assert format_records(records, 2.0) == "<start>\nA\t5\n b\t0\n<end>\n<start>\nC\t10\n<end>\n"
    assert format_records(records, 2.0, omit_zeros=True) == "<start>\nA\t5\n<end>\n<start>\nC\t10\n<end>\n"
    with pytest.raises(ValueError):  # tokens and activations must pair up
        format_records([ActivationRecord(["A"], [1.0, 2.0])], 2.0)


def test_explanation_prompt_matches_the_neuron_explainer():
    messages = explanation_messages(neuron(7, ["x", "y", "z", "w", "v", "u"], [0.0, 4.0, 0.0, 0.0, -1.0, 0.0]))
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert messages[0]["content"] == SYSTEM_PROMPT
    assert SYSTEM_PROMPT.startswith("We're studying neurons in a neural network.")
    assert [m["content"] for m in messages[2:7:2]] == [
        " present tense verbs ending in 'ing'.", " words related to physical medical conditions.",
        " phrases related to community."]
    # 1 of 6 tokens non-zero (< 20 %): the non-zero pairs are repeated
    assert messages[-1]["content"] == (
        "\n\nNeuron 4\nActivations:\n<start>\nx\t0\ny\t10\nz\t0\nw\t0\nv\t0\nu\t0\n<end>\n"
        f"\n{ZEROS}\n<start>\ny\t10\n<end>\n{FINAL}")
    # the few-shot examples keep every token of the source (token counts per record)
    assert [len(r.tokens) for records, _ in FEW_SHOT_EXAMPLES for r in records] == [34, 22, 21, 37, 11, 21]
    assert "\n arrest\t10\n" in messages[3]["content"] and "\nigo\t9\n" in messages[3]["content"]


@pytest.mark.parametrize("acts, repeated", [
    ([1.0, 0, 0, 0, 0, 0], True),    # 1/6 < 20 %
    ([1.0, 0, 0, 0, 0], False),      # 1/5 = 20 %: not below
    ([1.0, 0.5, 0, 0, 0], False),
    ([10.0, 0.5, 0, 0, 0, 0], True),  # 0.5 scales to 0: still 1/6
])
def test_zero_filtered_block_only_below_20_percent(acts, repeated):
    text = explanation_messages(neuron(0, [f"t{i}" for i in range(len(acts))], acts))[-1]["content"]
    assert (ZEROS in text) is repeated
    assert text.endswith(FINAL)


def test_without_few_shot_the_neuron_is_number_one():
    messages = explanation_messages(neuron(0, ["a"], [1.0]), few_shot=False)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].startswith("\n\nNeuron 1\nActivations:\n<start>\na\t10\n<end>\n")
    assert messages[1]["content"].endswith(f"Explanation of neuron 1 behavior: {EXPLANATION_PREFIX}")


@pytest.mark.parametrize("answer, cleaned", [
    (" words about cats.", "words about cats"),
    ("the main thing this neuron does is find words about cats.", "words about cats"),
    ("Explanation of neuron 4 behavior: the main thing this neuron does is find  dates\n", "dates"),
    ('"verbs ending in \'ing\'."', "verbs ending in 'ing'"),
    ("verbs ending in 'ing'", "verbs ending in 'ing'"),
])
def test_clean_explanation(answer, cleaned):
    assert clean_explanation(answer) == cleaned


def test_parse_concepts_and_rating():
    reply = "Concepts:\n1. Python syntax\n- python syntax\n* **Recursion**\n\n2) loops.\n• Type hints"
    assert parse_concepts(reply, 10) == ["Python syntax", "Recursion", "loops", "Type hints"]
    assert parse_concepts(reply, 2) == ["Python syntax", "Recursion"]
    assert parse_concepts("sorting, graphs, sorting", 5) == ["sorting", "graphs"]
    assert parse_rating("7") == 7.0
    assert parse_rating("Rating: 8.5/10") == 8.5
    assert parse_rating("12") == 10.0
    with pytest.raises(ValueError, match="no rating"):
        parse_rating("hard to say")


# ---- the explainer over HTTP ----------------------------------------------------------------

def test_explain_keeps_order_and_sends_the_neuron_explainer_prompt():
    def reply(body):  # later neurons answer sooner, so completion order differs from input order
        text = last_user_message(body)
        i = int(text.split("<start>\ntok")[1].split("\t")[0])
        time.sleep(0.03 * (5 - i))
        return f" the main thing this neuron does is find tokens number {i}."

    neurons = [neuron(i, [f"tok{i}", "pad"], [1.0 + i, 0.0]) for i in range(5)]
    with FakeOpenAI(reply=reply) as server:
        out = explainer(server, concurrency=5).explain(neurons)
        assert out == [f"tokens number {i}" for i in range(5)]
        requests = server.received(CHAT)
    assert len(requests) == 5
    for request in requests:
        body = request.body
        assert request.headers["authorization"] == f"Bearer {KEY}"
        assert body["model"] == "test-model" and body["temperature"] == 0
        assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        last = body["messages"][-1]["content"]
        i = int(last.split("<start>\ntok")[1].split("\t")[0])
        assert f"\n<start>\ntok{i}\t10\npad\t0\n<end>\n" in last  # scaled, tab-separated, in a record
        assert ZEROS not in last  # 1 of 2 non-zero
        assert last.endswith(FINAL)
        assert body["messages"] == explanation_messages(neurons[i])


def test_a_429_then_a_500_is_retried(server):
    server.fail_next(429, 500)
    assert explainer(server).explain([neuron(0, ["a"], [1.0])]) == ["things"]
    assert [r.status for r in server.received(CHAT)] == [429, 500, 200]


def test_exhausted_retries_end_in_one_line(server):
    server.fail_next(503, 503, 503)
    with pytest.raises(UsageError) as e:
        explainer(server, max_retries=2).explain([neuron(0, ["a"], [1.0])])
    assert "503" in str(e.value) and "3 attempts" in str(e.value)
    assert KEY not in str(e.value) and "\n" not in str(e.value)
    assert len(server.received(CHAT)) == 3


def test_rejected_key_is_not_retried_and_not_echoed(server):
    server.fail_next(401)
    with pytest.raises(UsageError, match="rejected the API key") as e:
        explainer(server).explain([neuron(0, ["a"], [1.0])])
    assert KEY not in str(e.value) and len(server.received(CHAT)) == 1


def test_missing_key_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for make in (OpenAIExplainer, OpenAIEmbedder):
        with pytest.raises(UsageError, match="OPENAI_API_KEY") as e:
            make(base_url="http://127.0.0.1:9/v1")
        assert "\n" not in str(e.value)


def test_key_and_url_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    made = OpenAIExplainer(model="m", progress=False)
    assert made.explain([neuron(0, ["a"], [1.0])]) == ["things"]
    assert server.received(CHAT)[0].headers["authorization"] == f"Bearer {KEY}"
    info = made.info()
    assert info["base_url"] == "127.0.0.1" and info["prompt_version"] == PROMPT_VERSION
    assert info["temperature"] == 0.0 and KEY not in repr(info) and KEY not in repr(made)


def test_unreachable_url_is_a_usage_error_naming_it():
    url = closed_port_url()
    made = OpenAIExplainer(base_url=url, api_key=KEY, max_retries=2, backoff=0.01, progress=False)
    start = time.perf_counter()
    with pytest.raises(UsageError, match="cannot reach") as e:
        made.explain([neuron(0, ["a"], [1.0])])
    assert url in str(e.value) and KEY not in str(e.value) and "\n" not in str(e.value)
    assert time.perf_counter() - start < 5
    embedder = OpenAIEmbedder(base_url=url, api_key=KEY, max_retries=1, backoff=0.01, progress=False)
    with pytest.raises(UsageError, match="cannot reach"):
        embedder.embed(["x"])


def test_safe_url_drops_credentials():
    assert safe_url("https://user:pw@example.com:8443/v1") == "https://example.com:8443/v1"
    assert safe_url("http://u:p@[::1]:8000/v1?api_key=k1&api-version=2") == "http://[::1]:8000/v1?api_key=***&api-version=2"
    assert endpoint("http://u:p@host/v1/") == endpoint("http://host/v1") == "http://host/v1"


# ---- odd answers, bad URLs and secrets --------------------------------------------------------

HTML = b"<!DOCTYPE html><html><body>Please log in</body></html>"


def _embedding(vector: list[float], index: int = 0) -> dict:
    return {"object": "embedding", "index": index, "embedding": vector}


@pytest.mark.parametrize("path, answer, content_type, said", [
    (CHAT, HTML, "text/html; charset=utf-8", "with an HTML page, not JSON"),
    (CHAT, HTML, "application/json", "with an HTML page, not JSON"),
    (CHAT, b'{"choices": [', "application/json", "a body that is not JSON"),
    (CHAT, b"", "application/json", "with an empty body"),
    (CHAT, b"[" * 200_000, "application/json", "nested too deeply"),
    (CHAT, b"\xff\xfe{}", "application/json", "not UTF-8"),
    (CHAT, {"id": "x", "object": "chat.completion"}, "application/json", "no 'choices' list"),
    (CHAT, {"choices": []}, "application/json", "no 'choices' list"),
    (CHAT, {"error": {"message": "model is overloaded"}}, "application/json",
     "no 'choices' list: model is overloaded"),
    (CHAT, [1, 2], "application/json", "JSON that is not an object"),
    (CHAT, {"choices": [{"message": {"content": 5}}]}, "application/json", "without a text message"),
    (CHAT, {"choices": ["text"]}, "application/json", "without a text message"),
    (EMBEDDINGS := "/v1/embeddings", HTML, "text/html", "with an HTML page, not JSON"),
    (EMBEDDINGS, b"{'data': []}", "application/json", "a body that is not JSON"),
    (EMBEDDINGS, {"object": "list"}, "application/json", "no 'data' list"),
    (EMBEDDINGS, {"data": None}, "application/json", "no 'data' list"),
    (EMBEDDINGS, {"data": [_embedding([1.0, 2.0])]}, "application/json", "1 embeddings for 2 texts"),
    (EMBEDDINGS, {"data": [_embedding([1.0, 2.0]), _embedding([1.0], 1)]}, "application/json",
     "embeddings of different sizes (1, 2)"),
    (EMBEDDINGS, {"data": [_embedding("AAAA"), _embedding([1.0], 1)]}, "application/json",
     "data[0] without an 'embedding' list of finite numbers"),
    (EMBEDDINGS, {"data": [_embedding([1.0, True]), _embedding([1.0, 2.0], 1)]}, "application/json",
     "finite numbers"),
    (EMBEDDINGS, {"data": [_embedding([]), _embedding([1.0], 1)]}, "application/json", "finite numbers"),
    (EMBEDDINGS, {"data": [_embedding([1.0, 2.0]), _embedding([3.0, 4.0])]}, "application/json",
     "'index' values that are not 0 to 1"),
])
def test_odd_answers_with_http_200_are_one_line_usage_errors(server, path, answer, content_type, said):
    """A login page, a proxy's error page or a server that is not OpenAI-compatible answers HTTP 200
    too: the user learns which endpoint answered what, in one line, and nothing is retried."""
    server.rewrite = lambda path_, body, ok: answer
    server.content_type = content_type
    with pytest.raises(UsageError) as e:
        if path == CHAT:
            explainer(server).explain([neuron(0, ["a"], [1.0])])
        else:
            OpenAIEmbedder(model="emb", base_url=server.base_url, api_key=KEY, progress=False).embed(["x", "y"])
    message = str(e.value)
    assert said in message and f"the API at {server.base_url}{path[3:]} answered" in message
    assert "\n" not in message and KEY not in message and len(message) < 400
    assert len(server.received(path)) == 1


def test_embeddings_of_different_sizes_in_two_batches_are_refused(server):
    def rewrite(path, body, answer):  # 'a' gets 3 numbers, every other text 4
        return {"data": [_embedding([1.0] * (3 if text == "a" else 4), i)
                         for i, text in enumerate(body["input"])]}

    server.rewrite = rewrite
    embedder = OpenAIEmbedder(base_url=server.base_url, api_key=KEY, batch_size=1, concurrency=1,
                              progress=False)
    assert embedder.embed(["b", "c"]).shape == (2, 4)
    with pytest.raises(UsageError, match=r"embeddings of different sizes \(3, 4\)"):
        embedder.embed(["a", "b"])


USER, PASSWORD, QUERY_KEY = "alice", "pw-0123-SECRET", "query-key-987654"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{PASSWORD}@") + f"?api_key={QUERY_KEY}&api-version=7"


def _leaks(text: str) -> list[str]:
    return [s for s in (KEY, PASSWORD, f"{USER}:{PASSWORD}", BASIC, BASIC.rstrip("="), QUERY_KEY) if s in text]


@pytest.mark.parametrize("failures, said", [
    ((401,), "rejected the API key (HTTP 401)"),
    ((400,), "answered HTTP 400"),
    ((503, 503), "kept failing (HTTP 503"),
])
def test_credentials_in_the_base_url_are_sent_but_never_echoed(server, failures, said):
    """user:password@ goes as Basic auth and the URL's query with every request; the server's error
    message echoes both (as some proxies do), the UsageError masks them, base64 form included."""
    server.fail_next(*failures)
    made = OpenAIExplainer(model="m", base_url=_with_credentials(server.base_url), api_key=KEY,
                           max_retries=len(failures) - 1, backoff=0.01, progress=False)
    with pytest.raises(UsageError) as e:
        made.explain([neuron(0, ["a"], [1.0])])
    sent = server.received(CHAT)[0]
    assert sent.headers["authorization"] == f"Basic {BASIC}"
    assert sent.query == {"api_key": QUERY_KEY, "api-version": "7"}
    message = str(e.value)
    assert said in message and "injected failure" in message and "Basic ***" in message
    assert f"{server.base_url}/chat/completions?api_key=***&api-version=7" in message
    assert _leaks(message) == [] and _leaks(repr(made)) == [] and _leaks(json.dumps(made.info())) == []


def test_the_query_of_the_base_url_goes_with_every_request(server):
    made = OpenAIExplainer(model="m", base_url=server.base_url + "?api-version=2024-06-01", api_key=KEY,
                           progress=False)
    assert made.explain([neuron(0, ["a"], [1.0])]) == ["things"]
    embedder = OpenAIEmbedder(base_url=server.base_url + "/?api-version=3", api_key=KEY, progress=False)
    assert embedder.embed(["x"]).shape == (1, 8)
    assert [(r.path, r.query) for r in server.requests] == [(CHAT, {"api-version": "2024-06-01"}),
                                                           ("/v1/embeddings", {"api-version": "3"})]


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/v1", "http://", "http://[::1",
                                 "http://example.com:99999/v1", "http://exa mple.com/v1", "/v1",
                                 "http//alice:pw-0123-SECRET@example.com/v1", "http://h\n/v1"])
def test_malformed_base_urls_are_refused_at_once(url, monkeypatch):
    for make in (OpenAIExplainer, OpenAIEmbedder):
        with pytest.raises(UsageError, match="base_url must be an http") as e:
            make(base_url=url, api_key=KEY, progress=False)
        assert PASSWORD not in str(e.value) and KEY not in str(e.value)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    with pytest.raises(UsageError, match="OPENAI_BASE_URL must be an http"):
        OpenAIExplainer(api_key=KEY, progress=False)


def test_a_key_no_header_can_carry_is_refused_unechoed():
    for key in ("sk-line\nbreak", "sk-ключ"):
        with pytest.raises(UsageError, match="cannot carry") as e:
            OpenAIExplainer(base_url="http://127.0.0.1:9/v1", api_key=key)
        assert key not in str(e.value)


def test_concepts_and_ratings(server):
    def reply(body):
        text = last_user_message(body)
        if "What concepts" in text:
            assert "<sample 2>\nclass Foo: pass\n</sample 2>" in text
            return "1. Python syntax\n2. classes\n- python syntax\n3. recursion"
        return "9" if "snakes" in text else "Relevance: 2/10"

    server.reply = reply
    made = explainer(server)
    assert made.concepts(["def f(): return 1", "class Foo: pass"], 2) == ["Python syntax", "classes"]
    assert made.rate(["snakes and pythons", "dates", "snakes"], "Python") == [9.0, 2.0, 9.0]
    assert isinstance(made, Explainer) and made.name == "openai"


def test_unparseable_rating_is_a_usage_error(server):
    server.reply = lambda body: "I cannot say."
    with pytest.raises(UsageError, match="answered without a rating") as e:
        explainer(server).rate(["x"], "topic")
    assert "I cannot say." in str(e.value) and "\n" not in str(e.value)


# ---- the embedder -----------------------------------------------------------------------------

def test_embeddings_are_unit_rows_in_order_and_retried():
    texts = ["alpha", "beta", "gamma", "delta", ""]
    with FakeOpenAI(dim=6) as server:
        server.fail_next(500)
        embedder = OpenAIEmbedder(model="emb", base_url=server.base_url, api_key=KEY, batch_size=2,
                                  backoff=0.01, progress=False)
        vectors = embedder.embed(texts)
        requests = server.received("/v1/embeddings")
    assert vectors.shape == (5, 6) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=1), torch.ones(5), atol=1e-6)
    expected = torch.nn.functional.normalize(torch.tensor([hash_embedding(t or " ", 6) for t in texts]), dim=1)
    assert torch.allclose(vectors, expected, atol=1e-6)
    assert [r.status for r in requests].count(500) == 1 and len(requests) == 4  # 3 batches + 1 retry
    assert all(r.body["model"] == "emb" and len(r.body["input"]) <= 2 for r in requests)
    assert isinstance(embedder, Embedder) and embedder.name == "openai"
    assert embedder.embed([]).shape == (0, 0)
