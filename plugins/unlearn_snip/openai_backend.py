"""OpenAI (or any OpenAI-compatible server) as SNIP's explainer and embedder.

    explainer = OpenAIExplainer(model="gpt-4o")          # key from OPENAI_API_KEY
    texts = explainer.explain(neuron_records)             # one explanation per neuron, in order
    vectors = OpenAIEmbedder().embed(texts)               # float32 [n, d], unit rows

`base_url` (or OPENAI_BASE_URL) points both at a local server such as vLLM or llama.cpp; its
query (e.g. `?api-version=...`) is sent with every request, and `user:password@` in it is sent as
HTTP Basic auth. Requests run on a thread pool; 408/409/429/5xx answers and connection failures are
retried with exponential backoff and jitter by `with_retries` (the openai client's own retries are
off). Answers are read as JSON by this module, not the client, and checked: an HTML page, broken
JSON or an answer without `choices` / `data` is a one-line UsageError naming the endpoint. Every
problem a user can fix (no key, a rejected key, an unreachable or malformed URL, an unknown model,
an odd answer) is a one-line UsageError in which the key, URL credentials and their Basic-auth form
are masked.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import openai
import torch
from torch import Tensor
from tqdm.auto import tqdm

from unlearn_core import REDACTED, NeuronRecords, UsageError, loads_json, mask, redact_url, secrets_in

from .option_types import Backoff, Count, Name, Retries, Seconds
from .prompts import (
    PROMPT_VERSION,
    clean_explanation,
    concepts_messages,
    explanation_messages,
    parse_concepts,
    parse_rating,
    rating_messages,
)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_CHAT_MODEL = "gpt-4o"
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
RETRY_STATUS = {408, 409, 429}  # and every 5xx
EXPLAIN_MAX_TOKENS = 60  # as in the neuron-explainer
CONCEPTS_MAX_TOKENS = 400
RATE_MAX_TOKENS = 8


def resolve_base_url(base_url: str | None) -> str:
    """The endpoint a client talks to: `base_url`, else OPENAI_BASE_URL, else OpenAI's."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL


def safe_url(url: str) -> str:
    """`url` without user:password@ and with secret query values (api_key=...) as *** (for
    messages, records and store keys)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.netloc:
        return redact_url(url)
    return redact_url(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())


def endpoint(base_url: str | None) -> str:
    """The endpoint `base_url` resolves to, without credentials and a final '/': what identifies it
    in store keys."""
    url = resolve_base_url(base_url)
    try:
        parts = urlsplit(url)
        url = parts._replace(path=parts.path.rstrip("/"), fragment="").geturl()
    except ValueError:
        return REDACTED
    return safe_url(url)


def _check_base_url(url: str, source: str) -> None:
    """A URL the client can use; never echoed, as it may hold credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        parts = None
    if (parts is None or parts.scheme not in ("http", "https") or not parts.hostname
            or not url.isascii() or not url.isprintable() or " " in url):
        raise UsageError(f"{source} must be an http(s) URL such as http://localhost:8000/v1")


def _secret_forms(key: str, base_url: str) -> list[str]:
    """Every form in which the key or the URL's credentials could be echoed (mask adds base64)."""
    found = [key, *secrets_in({"base_url": base_url})]
    return [form for s in found for form in {s, unquote(s), quote(s, safe="")}]


def _one_line(text: str, secrets: Iterable[str], limit: int = 200) -> str:
    """`text` on one line, secrets masked before it is shortened (a cut secret would leak its start)."""
    text = " ".join(mask(str(text), secrets).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _retry_after(error: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait (Retry-After header), if any."""
    value = error.response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def with_retries(call: Callable[[], T], *, url: str, secrets: Iterable[str] = (), max_retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on 408/409/429/5xx and connection errors with exponential backoff plus
    jitter (backoff * 2**attempt, capped, times 0.5-1.5). Failures end in a one-line UsageError
    naming `url`, with `secrets` masked."""
    secrets = list(secrets)
    attempts, last = max_retries + 1, ""
    for attempt in range(attempts):
        wait: float | None = None
        try:
            return call()
        except openai.APIStatusError as e:
            code = e.status_code
            detail = _one_line(getattr(e, "message", "") or "", secrets)
            if code in (401, 403):
                raise UsageError(f"the API at {url} rejected the API key (HTTP {code}): {detail}") from None
            if code not in RETRY_STATUS and code < 500:
                raise UsageError(f"the API at {url} answered HTTP {code}: {detail}") from None
            last = f"HTTP {code}: {detail}"
            wait = _retry_after(e)
        except openai.APITimeoutError:
            last = "timed out"
        except openai.APIConnectionError:
            last = "connection failed"
        except openai.APIError as e:  # any other failure of the client: one line, masked
            raise UsageError(f"the API at {url} failed: {_one_line(str(e), secrets)}") from None
        if attempt + 1 < attempts:
            delay = min(max_backoff, backoff * 2.0 ** min(attempt, 60)) * random.uniform(0.5, 1.5)
            sleep(max(delay, min(wait or 0.0, max_backoff)))
    if last in ("timed out", "connection failed"):
        raise UsageError(f"cannot reach the OpenAI-compatible API at {url} ({last} after {attempts} "
                         "attempts); check base_url / OPENAI_BASE_URL and the network")
    raise UsageError(f"the API at {url} kept failing ({last}) after {attempts} attempts")


class _OpenAIClient:
    """What the explainer and the embedder share: key, URL, client, retries and the thread pool."""

    name = "openai"

    def __init__(self, model: str, base_url: str | None, api_key: str | None, concurrency: int,
                 max_retries: int, timeout: float, backoff: float, progress: bool) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise UsageError("no OpenAI API key: set OPENAI_API_KEY (any non-empty value for a local "
                             "server) or pass api_key")
        if not (key.isascii() and key.isprintable()):  # an HTTP header cannot carry it
            raise UsageError("the OpenAI API key (api_key or OPENAI_API_KEY) has characters an HTTP "
                             "header cannot carry (a line break, a control or non-ASCII character)")
        if not model:
            raise UsageError("OpenAI backend: model must not be empty")
        if not (concurrency >= 1 and 0 <= max_retries <= 100 and 0 < timeout < math.inf
                and 0 <= backoff < math.inf):
            raise UsageError("OpenAI backend: concurrency must be >= 1, max_retries 0-100, timeout > 0 "
                             "and backoff >= 0")
        url = resolve_base_url(base_url)
        _check_base_url(url, "base_url" if base_url else "OPENAI_BASE_URL")
        parts = urlsplit(url)
        self.model = model
        self.base_url = parts._replace(query="", fragment="").geturl().rstrip("/")
        self.concurrency, self.max_retries, self.backoff = concurrency, max_retries, backoff
        self.progress = progress
        self._secrets = _secret_forms(key, url)
        self._safe_url = safe_url(url)  # what messages show
        self._url_parts = parts._replace(fragment="")
        self._model = _one_line(model, self._secrets, 80)  # as messages show it
        try:  # the URL's query goes with every request (the client would put paths after it)
            self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout,
                                         default_query=dict(parse_qsl(parts.query, keep_blank_values=True)))
        except Exception as e:  # e.g. httpx refusing the URL
            raise UsageError(f"cannot use the OpenAI-compatible API at {self._safe_url}: "
                             f"{_one_line(str(e), self._secrets)}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self._safe_url!r})"

    def _where(self, endpoint: str) -> str:
        """The URL of `endpoint` (e.g. 'chat/completions') as messages show it."""
        parts = self._url_parts
        return safe_url(parts._replace(path=f"{parts.path.rstrip('/')}/{endpoint}").geturl())

    def _post(self, endpoint: str, create: Callable[[], Any]) -> Any:
        """The JSON of one request's answer; retried, and checked to be JSON (an HTML login page
        or a proxy's error page answers HTTP 200 too)."""
        where = self._where(endpoint)
        raw = with_retries(create, url=where, secrets=self._secrets, max_retries=self.max_retries,
                           backoff=self.backoff)
        content_type = str(raw.headers.get("content-type", ""))
        body: bytes = raw.content
        try:
            return loads_json(body.decode("utf-8"))
        except UnicodeDecodeError:
            what = "bytes that are not UTF-8 text"
        except ValueError as e:
            if "html" in content_type.lower() or body.lstrip()[:1] == b"<":
                what = "an HTML page"
            elif not body.strip():
                what = "an empty body"
            else:
                what = f"a body that is not JSON ({_one_line(getattr(e, 'msg', str(e)), self._secrets, 80)})"
        raise UsageError(f"the API at {where} answered HTTP {raw.status_code} with {what}, not JSON; is "
                         "the base URL an OpenAI-compatible API (e.g. http://localhost:8000/v1)?")

    def _odd(self, endpoint: str, payload: Any, what: str) -> UsageError:
        """A UsageError for an answer in JSON that is not what `endpoint` answers."""
        error = payload.get("error") if isinstance(payload, dict) else None
        said = error.get("message") if isinstance(error, dict) else error
        detail = f": {_one_line(str(said), self._secrets, 160)}" if said else ""
        return UsageError(f"the API at {self._where(endpoint)} answered with {what}{detail}; is it an "
                          f"OpenAI-compatible API that serves model {self._model!r}?")

    def _map(self, fn: Callable[[T], R], items: Sequence[T], desc: str) -> list[R]:
        """`fn` over `items` on the thread pool; results in input order. The first error stops the rest."""
        if not items:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)))
        try:
            return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, leave=False,
                             disable=not self.progress))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def info(self) -> dict[str, Any]:
        """What a run record should know about this backend (no secrets)."""
        return {"backend": self.name, "model": self.model, "base_url": urlsplit(self.base_url).hostname}


class OpenAIExplainer(_OpenAIClient):
    """SNIP explainer on the chat completions API (temperature 0)."""

    def __init__(self, model: Name = DEFAULT_CHAT_MODEL, base_url: Name | None = None,
                 api_key: Name | None = None, concurrency: Count = 8, max_retries: Retries = 6,
                 timeout: Seconds = 60.0, backoff: Backoff = 0.5, progress: bool = True) -> None:
        super().__init__(model, base_url, api_key, concurrency, max_retries, timeout, backoff, progress)

    def _chat(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        """The reply's text ('' when the model gave none)."""
        payload = self._post("chat/completions", lambda: self._client.chat.completions.with_raw_response.create(
            model=self.model, messages=messages, temperature=0.0, max_tokens=max_tokens))  # type: ignore[arg-type]
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices:
            raise self._odd("chat/completions", payload, "no 'choices' list" if isinstance(payload, dict)
                            else "JSON that is not an object")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(content, str | None):
            raise self._odd("chat/completions", payload, "a choice without a text message")
        return content or ""

    def explain(self, neurons: Sequence[NeuronRecords]) -> list[str]:
        """One explanation per neuron, in order: the text after 'the main thing this neuron does is find'
        ('' where the model answered nothing)."""
        return self._map(lambda n: clean_explanation(self._chat(explanation_messages(n), EXPLAIN_MAX_TOKENS)),
                         neurons, "explaining neurons")

    def concepts(self, samples: Sequence[str], n: int) -> list[str]:
        """Up to `n` concepts a model needs to handle texts like `samples`."""
        reply = self._chat(concepts_messages(samples, n), CONCEPTS_MAX_TOKENS)
        found = parse_concepts(reply, n)
        if not found:
            raise UsageError(f"model {self._model} at {self._safe_url} listed no concepts "
                             f"(reply: {_one_line(reply, self._secrets, 80)!r})")
        return found

    def rate(self, explanations: Sequence[str], topic: str) -> list[float]:
        """Relevance of each explanation to `topic`, 0-10 (UsageError on a reply without a number)."""
        return self._map(lambda e: self._rating(self._chat(rating_messages(e, topic), RATE_MAX_TOKENS)),
                         explanations, "rating explanations")

    def _rating(self, reply: str) -> float:
        try:
            return parse_rating(reply)
        except ValueError:
            raise UsageError(f"model {self._model} at {self._safe_url} answered without a rating from 0 to "
                             f"10 (reply: {_one_line(reply, self._secrets, 80)!r})") from None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "prompt_version": PROMPT_VERSION, "few_shot": "original",
                "temperature": 0.0, "max_tokens": {"explain": EXPLAIN_MAX_TOKENS,
                                                   "concepts": CONCEPTS_MAX_TOKENS, "rate": RATE_MAX_TOKENS}}


class OpenAIEmbedder(_OpenAIClient):
    """SNIP embedder on the embeddings API: float32 rows of unit length."""

    def __init__(self, model: Name = DEFAULT_EMBEDDING_MODEL, base_url: Name | None = None,
                 api_key: Name | None = None, batch_size: Count = 256, concurrency: Count = 4,
                 max_retries: Retries = 6, timeout: Seconds = 60.0, backoff: Backoff = 0.5,
                 progress: bool = True) -> None:
        if batch_size < 1:
            raise UsageError("OpenAI embedder: batch_size must be >= 1")
        super().__init__(model, base_url, api_key, concurrency, max_retries, timeout, backoff, progress)
        self.batch_size = batch_size

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        inputs = [t if t.strip() else " " for t in texts]  # the API rejects empty strings
        endpoint = "embeddings"
        payload = self._post(endpoint, lambda: self._client.embeddings.with_raw_response.create(
            model=self.model, input=inputs, encoding_format="float"))
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise self._odd(endpoint, payload, "no 'data' list" if isinstance(payload, dict)
                            else "JSON that is not an object")
        if len(data) != len(texts):
            raise self._odd(endpoint, payload, f"{len(data)} embeddings for {len(texts)} texts")
        rows: list[tuple[int, list[float]]] = []
        for position, item in enumerate(data):
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not (isinstance(vector, list) and vector and all(_is_number(x) for x in vector)):
                raise self._odd(endpoint, payload,
                                f"data[{position}] without an 'embedding' list of finite numbers")
            index = item.get("index", position)
            rows.append((index if isinstance(index, int) and not isinstance(index, bool) else -1, vector))
        if sorted(i for i, _ in rows) != list(range(len(texts))):
            raise self._odd(endpoint, payload, f"'index' values that are not 0 to {len(texts) - 1}")
        if len({len(v) for _, v in rows}) != 1:
            raise self._odd(endpoint, payload, "embeddings of different sizes "
                            f"({', '.join(str(n) for n in sorted({len(v) for _, v in rows}))})")
        return [vector for _, vector in sorted(rows, key=lambda row: row[0])]

    def embed(self, texts: Sequence[str]) -> Tensor:
        """float32 [len(texts), d], each row of unit length ([0, 0] for no texts)."""
        batches = [list(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        rows = [row for batch in self._map(self._embed_batch, batches, "embedding") for row in batch]
        if not rows:
            return torch.zeros(0, 0)
        sizes = sorted({len(row) for row in rows})
        if len(sizes) > 1:  # each batch was consistent, but not with the others
            raise UsageError(f"the API at {self._where('embeddings')} answered embeddings of different sizes "
                             f"({', '.join(map(str, sizes))}) for model {self._model!r}")
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "batch_size": self.batch_size}


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
