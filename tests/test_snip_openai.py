"""SNIP's neuron-explainer prompts and OpenAI backend, over real HTTP to a local fake server."""

from __future__ import annotations

import socket
import time

import pytest
import torch
from openai_server import FakeOpenAI, hash_embedding, last_user_message

from unlearn_core import ActivationRecord, Embedder, Explainer, NeuronId, NeuronRecords
from unlearn_core.errors import UsageError
from unlearn_snip.openai_backend import OpenAIEmbedder, OpenAIExplainer, safe_url
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


def test_unparseable_rating_raises(server):
    server.reply = lambda body: "I cannot say."
    with pytest.raises(ValueError, match="no rating"):
        explainer(server).rate(["x"], "topic")


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
