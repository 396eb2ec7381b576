"""A real local HTTP server that speaks enough of the OpenAI API for tests.

    with FakeOpenAI(reply=lambda body: "cats", dim=8) as server:
        client = OpenAI(api_key="k", base_url=server.base_url)
        server.fail_next(429, 500)      # the next two requests fail, the third is answered
        ...
        server.requests                 # every request received, failed ones included
        server.rewrite = lambda path, body, answer: b"<html>login</html>"   # odd answers, HTTP 200
        server.content_type = "text/html"

It serves POST /v1/chat/completions (reply text from `reply(body)`) and POST /v1/embeddings
(vectors from a hash of each input, see `hash_embedding`; "float" or "base64" encoding). Like
some proxies, its error messages echo the request's path and Authorization header, so tests see
whether a client masks them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    path: str  # without the query
    headers: dict[str, str]
    body: dict[str, Any]
    status: int = 200  # what the server answered
    query: dict[str, str] = field(default_factory=dict)


def hash_embedding(text: str, dim: int) -> list[float]:
    """A deterministic, not normalised vector for `text`."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    return [rng.gauss(0.0, 1.0) + 0.5 for _ in range(dim)]


def last_user_message(body: dict[str, Any]) -> str:
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


class FakeOpenAI:
    """OpenAI-compatible server on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, reply: Callable[[dict[str, Any]], str] = lambda body: "things", dim: int = 8) -> None:
        self.reply, self.dim = reply, dim
        # (path, request body, answer) -> what to send instead with HTTP 200: a JSON value, or bytes
        # sent as they are with `content_type` (an HTML page, broken JSON).
        self.rewrite: Callable[[str, dict[str, Any], dict[str, Any]], Any] | None = None
        self.content_type = "application/json"
        self.requests: list[Request] = []
        self._failures: deque[int] = deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def fail_next(self, *codes: int) -> None:
        """Answer the next len(codes) requests with these HTTP status codes."""
        with self._lock:
            self._failures.extend(codes)

    def received(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- protocol ----

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/chat/completions":
            text = self.reply(body)
            return 200, {
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        if path == "/v1/embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = []
            for i, text in enumerate(inputs):
                vector: Any = hash_embedding(text, self.dim)
                if body.get("encoding_format") == "base64":
                    vector = base64.b64encode(struct.pack(f"<{self.dim}f", *vector)).decode()
                data.append({"object": "embedding", "index": i, "embedding": vector})
            return 200, {"object": "list", "data": data, "model": body["model"],
                         "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        return 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                url = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(url.path, headers, body, query=dict(parse_qsl(url.query)))
                with server._lock:
                    server.requests.append(request)
                    failure = server._failures.popleft() if server._failures else None
                content_type = "application/json"
                if failure is not None:  # echoes what it was sent, as some proxies do
                    message = (f"injected failure {failure} for {self.path} with authorization "
                               f"{headers.get('authorization')}")
                    status, answer = failure, {"error": {"message": message, "type": "server_error",
                                                         "code": None}}
                else:
                    status, answer = server._answer(url.path, body)
                    if status == 200 and server.rewrite is not None:
                        answer, content_type = server.rewrite(url.path, body, answer), server.content_type
                request.status = status
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        return Handler
