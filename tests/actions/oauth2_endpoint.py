"""A real OAuth2 token endpoint for tests (client credentials, RFC 6749 4.4) on a local
HttpSink, and a receiver's answer that checks the bearer tokens it issued.

::

    with TokenEndpoint(lifetime=2) as endpoint, HttpSink() as receiver:
        receiver.respond = endpoint.guard       # 200 for a live token, 401 otherwise
        ...
        assert endpoint.calls == 1
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from urllib.parse import parse_qs

from tests.httpsink import Answer, HttpSink, Recorded

JSON = {"Content-Type": "application/json"}


class TokenEndpoint:
    """Checks the client's HTTP Basic credentials and the grant type; issues tokens that
    live ``lifetime`` seconds. ``explain`` is added to the error_description of a refused
    client (to see that whatever an endpoint says is masked where it must be)."""

    def __init__(
        self,
        client_id: str = "relay",
        client_secret: str = "client-s3cret-value",
        lifetime: float = 60,
        explain: str = "",
    ) -> None:
        self.client_id, self.client_secret, self.lifetime = client_id, client_secret, lifetime
        self.explain = explain
        self.sink = HttpSink()
        self.sink.respond = self._respond
        self.issued: dict[str, float] = {}  #: token → when it expires (time.monotonic())
        self.revoked: set[str] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> TokenEndpoint:
        self.sink.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sink.close()

    @property
    def url(self) -> str:
        return self.sink.url("/oauth2/token")

    @property
    def calls(self) -> int:
        return len(self.sink.requests)

    def live(self, token: str) -> bool:
        with self._lock:
            expiry = self.issued.get(token)
            return expiry is not None and time.monotonic() < expiry and token not in self.revoked

    def revoke(self, token: str) -> None:
        with self._lock:
            self.revoked.add(token)

    def guard(self, request: Recorded) -> Answer:
        """A receiver's answer: 200 for a live bearer token, else a 401 quoting what it got."""
        given = (request.header("Authorization") or "").removeprefix("Bearer ")
        if self.live(given):
            return Answer(200)
        return Answer(401, {"Content-Type": "text/plain"}, f"token {given} is not valid")

    def _respond(self, request: Recorded) -> Answer:
        expected = f"{self.client_id}:{self.client_secret}".encode()
        if request.header("Authorization") != "Basic " + base64.b64encode(expected).decode():
            description = "Client authentication failed" + self.explain
            body = {"error": "invalid_client", "error_description": description}
            return Answer(401, {**JSON, "WWW-Authenticate": "Basic"}, json.dumps(body))
        if parse_qs(request.body.decode()).get("grant_type") != ["client_credentials"]:
            return Answer(400, JSON, json.dumps({"error": "unsupported_grant_type"}))
        token = "tok-" + secrets.token_hex(12)
        with self._lock:
            self.issued[token] = time.monotonic() + self.lifetime
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}
        return Answer(200, JSON, json.dumps(body))
