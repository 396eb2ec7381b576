"""Keeping secrets out of records, stores, logs, errors and leaderboards.

    redact({"explainer_options": {"api_key": "sk-1", "base_url": "http://u:p@host/v1"}})
    # -> {"explainer_options": {"api_key": "***", "base_url": "http://***@host/v1"}}
    mask("401 for Basic dTpw", ["p", "u:p"])   # -> "401 for Basic ***" (base64 forms too)

A value is secret when its name says so (a part of the name, split at '_', '-' and '.', is key,
token, secret, password, ...: `api_key`, `hf_token`, but not `tokens` or `max_tokens`), or when it
is the user:password part or a secret-named query parameter of a URL.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

REDACTED = "***"

_SECRET_PARTS = {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "auth",
                 "authorization", "credential", "credentials", "bearer", "cookie", "session"}
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def is_secret_name(name: str) -> bool:
    """Whether an option or parameter called `name` holds a secret ('api_key' yes, 'tokens' no)."""
    parts = [p for p in re.split(r"[_\-.\s]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", str(name))) if p]
    return any(p.lower() in _SECRET_PARTS for p in parts)


def redact_url(url: str) -> str:
    """`url` with its user:password@ and secret-named query values replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_name(k) for k, _ in pairs):
            query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (see redact_url)."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def redact(value: Any) -> Any:
    """A copy of `value` (options, a config, JSON) with secret-named entries and URL credentials
    replaced by ***; what is not secret is returned as is."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(k) and value_present(v) else redact(v))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return redact_text(value)
    return value


def value_present(v: Any) -> bool:
    return v not in (None, "", [], {})


def secrets_in(value: Any) -> list[str]:
    """The secret strings inside `value` (secret-named values, URL passwords and user:password
    pairs), to mask wherever they might be echoed (see mask)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if is_secret_name(k) and isinstance(v, str) and v:
                found.append(v)
            else:
                found += secrets_in(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            found += secrets_in(v)
    elif isinstance(value, str):
        for m in _URL.finditer(value):
            try:
                parts = urlsplit(m.group(0))
            except ValueError:
                continue
            if parts.password:
                found += [parts.password, f"{parts.username}:{parts.password}"]
            elif parts.username:
                found.append(parts.username)
            found += [v for k, v in parse_qsl(parts.query) if is_secret_name(k) and v]
    return found


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret, its base64 form (Basic auth) and any URL credentials as ***."""
    text = redact_text(str(text))
    forms: set[str] = set()
    for s in secrets:
        if s and len(s) >= 3:  # shorter strings would mask ordinary words
            forms.add(s)
            forms.add(base64.b64encode(s.encode()).decode())
            forms.add(base64.b64encode(s.encode()).decode().rstrip("="))
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text
