"""Which values are secrets, and how they are hidden (unlearn_core.redact)."""

import base64

import pytest

from unlearn_core.redact import REDACTED, is_secret_name, mask, redact, redact_url, secrets_in


@pytest.mark.parametrize("name", ["api_key", "apiKey", "key", "OPENAI_API_KEY", "hf_token", "access-token",
                                  "secret", "client.secret", "password", "auth", "Authorization", "cookie"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["tokens", "max_tokens", "eval_tokens", "keywords", "monkey", "model",
                                  "base_url", "authority", "passage", "tokenizer"])
def test_names_that_are_not_secret(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize("url, safe", [
    ("http://user:pw@host:8080/v1", "http://***@host:8080/v1"),
    ("https://token@host/v1", "https://***@host/v1"),
    ("https://host/v1?api_key=abc&x=1", "https://host/v1?api_key=***&x=1"),
    ("https://host/v1?x=1", "https://host/v1?x=1"),
    ("https://host/v1", "https://host/v1"),
    ("not a url", "not a url"),
])
def test_redact_url(url, safe):
    assert redact_url(url) == safe


def test_redact_walks_options_and_keeps_what_is_not_secret():
    options = {"snip": {"explainer_options": {"api_key": "sk-1", "base_url": "http://u:p@h/v1", "model": "m",
                                              "max_tokens": 60}, "concepts": ["python"]}, "empty_key": ""}
    assert redact(options) == {"snip": {"explainer_options": {"api_key": REDACTED, "base_url": "http://***@h/v1",
                                                              "model": "m", "max_tokens": 60},
                                        "concepts": ["python"]}, "empty_key": ""}
    assert options["snip"]["explainer_options"]["api_key"] == "sk-1"  # a copy: the method keeps its key


def test_mask_hides_each_form_of_a_secret():
    found = secrets_in({"api_key": "sk-abc", "base_url": "http://al:pw123@h/v1"})
    assert set(found) == {"sk-abc", "pw123", "al:pw123"}
    basic = base64.b64encode(b"al:pw123").decode()
    text = f"key sk-abc, header Basic {basic}, url http://al:pw123@h/v1, bare pw123"
    masked = mask(text, found)
    for secret in ("sk-abc", basic, "pw123", "al:"):
        assert secret not in masked
    assert masked == "key ***, header Basic ***, url http://***@h/v1, bare ***"
