"""OpenAI (or any OpenAI-compatible server) as SNIP's explainer and embedder.

    explainer = OpenAIExplainer(model="gpt-4o")          # key from OPENAI_API_KEY
    texts = explainer.explain(neuron_records)             # one explanation per neuron, in order
    vectors = OpenAIEmbedder().embed(texts)               # float32 [n, d], unit rows

`base_url` (or OPENAI_BASE_URL) points both at a local server such as vLLM or llama.cpp. Requests run
on a thread pool; 408/409/429/5xx answers and connection failures are retried with exponential
backoff and jitter by `with_retries` (the openai client's own retries are off). Problems a user can
fix (no key, a rejected key, an unreachable URL, an unknown model) raise a one-line UsageError that
never contains the key.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import openai
import torch
from torch import Tensor
from tqdm.auto import tqdm

from unlearn_core import NeuronRecords, UsageError

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
RETRY_STATUS = {408, 409, 429}  # and every 5xx
EXPLAIN_MAX_TOKENS = 60  # as in the neuron-explainer
CONCEPTS_MAX_TOKENS = 400
RATE_MAX_TOKENS = 8


def safe_url(url: str) -> str:
    """`url` without user:password@ (for messages and records)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl() if parts.scheme else url


def _one_line(text: str, secret: str, limit: int = 200) -> str:
    text = " ".join(str(text).split()).replace(secret, "***") if secret else " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _retry_after(error: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait (Retry-After header), if any."""
    value = error.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(call: Callable[[], T], *, url: str, secret: str = "", max_retries: int = 6,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on 408/409/429/5xx and connection errors with exponential backoff plus
    jitter (backoff * 2**attempt, capped, times 0.5-1.5). Failures end in a one-line UsageError
    naming `url`, with `secret` masked."""
    attempts, last = max_retries + 1, ""
    for attempt in range(attempts):
        wait: float | None = None
        try:
            return call()
        except openai.APIStatusError as e:
            code = e.status_code
            detail = _one_line(getattr(e, "message", "") or "", secret)
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
        if attempt + 1 < attempts:
            delay = min(max_backoff, backoff * 2 ** attempt) * random.uniform(0.5, 1.5)
            sleep(max(delay, min(wait or 0.0, max_backoff)))
    if last in ("timed out", "connection failed"):
        raise UsageError(f"cannot reach the OpenAI-compatible API at {url} ({last} after {attempts} "
                         "attempts); check --base-url / OPENAI_BASE_URL and the network")
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
        if concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise UsageError("OpenAI backend: concurrency must be >= 1, max_retries >= 0, timeout > 0 "
                             "and backoff >= 0")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.concurrency, self.max_retries, self.backoff = concurrency, max_retries, backoff
        self.progress = progress
        self._secret = key
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    def _call(self, call: Callable[[], T]) -> T:
        return with_retries(call, url=safe_url(self.base_url), secret=self._secret,
                            max_retries=self.max_retries, backoff=self.backoff)

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
        return {"backend": self.name, "model": self.model,
                "base_url": urlsplit(self.base_url).hostname or self.base_url}


class OpenAIExplainer(_OpenAIClient):
    """SNIP explainer on the chat completions API (temperature 0)."""

    def __init__(self, model: str = "gpt-4o", base_url: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, max_retries: int = 6, timeout: float = 60.0, backoff: float = 0.5,
                 progress: bool = True) -> None:
        super().__init__(model, base_url, api_key, concurrency, max_retries, timeout, backoff, progress)

    def _chat(self, messages: list[dict[str, str]], max_tokens: int) -> str:
        response = self._call(lambda: self._client.chat.completions.create(
            model=self.model, messages=messages, temperature=0.0, max_tokens=max_tokens))  # type: ignore[arg-type]
        if not response.choices:
            raise UsageError(f"the API at {safe_url(self.base_url)} returned no choices for model {self.model}")
        return response.choices[0].message.content or ""

    def explain(self, neurons: Sequence[NeuronRecords]) -> list[str]:
        """One explanation per neuron, in order: the text after 'the main thing this neuron does is find'."""
        return self._map(lambda n: clean_explanation(self._chat(explanation_messages(n), EXPLAIN_MAX_TOKENS)),
                         neurons, "explaining neurons")

    def concepts(self, samples: Sequence[str], n: int) -> list[str]:
        """Up to `n` concepts a model needs to handle texts like `samples`."""
        reply = self._chat(concepts_messages(samples, n), CONCEPTS_MAX_TOKENS)
        found = parse_concepts(reply, n)
        if not found:
            raise UsageError(f"model {self.model} at {safe_url(self.base_url)} listed no concepts "
                             f"(reply: {_one_line(reply, self._secret, 80)!r})")
        return found

    def rate(self, explanations: Sequence[str], topic: str) -> list[float]:
        """Relevance of each explanation to `topic`, 0-10 (ValueError on a reply without a number)."""
        return self._map(lambda e: parse_rating(self._chat(rating_messages(e, topic), RATE_MAX_TOKENS)),
                         explanations, "rating explanations")

    def info(self) -> dict[str, Any]:
        return {**super().info(), "prompt_version": PROMPT_VERSION, "few_shot": "original",
                "temperature": 0.0, "max_tokens": {"explain": EXPLAIN_MAX_TOKENS,
                                                   "concepts": CONCEPTS_MAX_TOKENS, "rate": RATE_MAX_TOKENS}}


class OpenAIEmbedder(_OpenAIClient):
    """SNIP embedder on the embeddings API: float32 rows of unit length."""

    def __init__(self, model: str = "text-embedding-3-small", base_url: str | None = None,
                 api_key: str | None = None, batch_size: int = 256, concurrency: int = 4,
                 max_retries: int = 6, timeout: float = 60.0, backoff: float = 0.5,
                 progress: bool = True) -> None:
        if batch_size < 1:
            raise UsageError("OpenAI embedder: batch_size must be >= 1")
        super().__init__(model, base_url, api_key, concurrency, max_retries, timeout, backoff, progress)
        self.batch_size = batch_size

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        inputs = [t if t.strip() else " " for t in texts]  # the API rejects empty strings
        response = self._call(lambda: self._client.embeddings.create(
            model=self.model, input=inputs, encoding_format="float"))
        rows = sorted(response.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise UsageError(f"the API at {safe_url(self.base_url)} returned {len(rows)} embeddings "
                             f"for {len(texts)} texts")
        return [row.embedding for row in rows]

    def embed(self, texts: Sequence[str]) -> Tensor:
        """float32 [len(texts), d], each row of unit length ([0, 0] for no texts)."""
        batches = [list(texts[i:i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        rows = [row for batch in self._map(self._embed_batch, batches, "embedding") for row in batch]
        if not rows:
            return torch.zeros(0, 0)
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "batch_size": self.batch_size}
