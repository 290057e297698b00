"""What the standalone server lets a browser or client do, as one ASGI middleware.

SD.Next puts our routes under its own server and its own `--auth`; the standalone app
(`framepack_cli.py serve`) is its own server, so it answers these questions itself:

- **Who**: with credentials (`--auth USER:PASS` or `--auth-file`), the REST API and its docs
  need HTTP Basic auth; the tab uses Gradio's own login page (the same credentials).
- **From where**: a web page on another site must not drive a local server. A request that
  changes something (POST, PUT, PATCH, DELETE) or opens a WebSocket from another origin is
  refused (403); with a loopback bind, a `Host` header naming another machine (DNS
  rebinding) is refused (400). No response carries permissive CORS headers.
- **What the page loads**: Gradio's page template asks a font CDN and a script CDN for assets;
  those tags are removed and a Content-Security-Policy keeps the page on its own server.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from typing import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
)
"""Gradio 3 needs inline scripts and styles and evaluates `_js` snippets; everything else is 'self'."""

_EXTERNAL_TAG = re.compile(
    rb"<(?:link|script)\b[^>]*?\b(?:href|src)\s*=\s*[\"']?(?:https?:)?//[^>]*>(?:\s*</script>)?",
    re.IGNORECASE,
)
"""A <link> or <script> tag whose address is on another host (the template's CDN links)."""
_CORS_HEADERS = (b"access-control-allow-origin", b"access-control-allow-credentials",
                 b"access-control-allow-methods", b"access-control-allow-headers", b"access-control-expose-headers")


class Credentials:
    """USER:PASS pairs, compared in constant time."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.pairs = [(user, password) for user, password in pairs]
        if not self.pairs:
            raise ValueError("no credentials given")

    def check(self, user: str, password: str) -> bool:
        found = False
        for known_user, known_password in self.pairs:  # every pair is compared: no early exit
            user_ok = secrets.compare_digest(user.encode(), known_user.encode())
            password_ok = secrets.compare_digest(password.encode(), known_password.encode())
            found |= user_ok and password_ok
        return found

    def check_header(self, value: str | None) -> bool:
        """True for an `Authorization: Basic ...` header naming a known pair."""
        scheme, _, encoded = (value or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        return bool(colon) and self.check(user, password)


def parse_credentials(text: str, where: str = "--auth", one_per_line: bool = False) -> list[tuple[str, str]]:
    """`USER:PASS[,USER:PASS...]`, or one pair per line (an auth file, where a password may hold
    commas); blank and # lines are skipped."""
    pairs = []
    for piece in (text.splitlines() if one_per_line else text.split(",")):
        piece = piece.strip()
        if not piece or piece.startswith("#"):
            continue
        user, colon, password = piece.partition(":")
        if not colon or not user or not password:
            raise ValueError(f"{where}: write each login as USER:PASSWORD (got {user or '?'}:...)")
        pairs.append((user, password))
    if not pairs:
        raise ValueError(f"{where}: no USER:PASSWORD given")
    return pairs


class Guard:
    """The ASGI middleware: host check, cross-origin refusal, API auth, page hardening."""

    def __init__(self, app: ASGIApp, *, credentials: Credentials | None = None,
                 protected: tuple[str, ...] = (), allowed_hosts: Iterable[str] | None = None,
                 plain_pages: tuple[str, ...] = ()):
        self.app = app
        self.credentials = credentials
        self.protected = protected  # path prefixes that need Basic auth ("" = every path)
        self.allowed_hosts = None if allowed_hosts is None else {host.lower() for host in allowed_hosts}
        self.plain_pages = plain_pages  # HTML pages left as they are (/docs loads Swagger UI from its CDN)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await self._refuse(scope, receive, send, *refusal)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Hardened(send, harden_html=scope["path"] not in self.plain_pages))

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, dict] | None:
        host = _host_name(headers.get("host", ""))
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            return 400, f"this server answers only to {', '.join(sorted(self.allowed_hosts))}", {}
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS
        origin = headers.get("origin")
        if unsafe and origin is not None and not _same_origin(origin, headers.get("host", ""), scope):
            return 403, "cross-origin requests are refused: use the page this server serves", {}
        if self.credentials is not None and self._needs_auth(scope["path"]):
            if not self.credentials.check_header(headers.get("authorization")):
                return 401, "authentication required", {"www-authenticate": 'Basic realm="FramePack"'}
        return None

    def _needs_auth(self, path: str) -> bool:
        return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") or prefix == ""
                   for prefix in self.protected)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str, extra: dict) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = ('{"detail":"' + detail.replace('"', "'") + '"}').encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(key.encode(), value.encode()) for key, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Hardened:
    """Wraps `send`: drops CORS headers, and for HTML pages strips CDN tags and adds a CSP."""

    def __init__(self, send: Send, harden_html: bool = True):
        self.send = send
        self.harden_html = harden_html
        self.html = False
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _CORS_HEADERS]
            self.html = self.harden_html and any(k.lower() == b"content-type" and v.lower().startswith(b"text/html")
                                                 for k, v in headers)
            message = {**message, "headers": headers}
            if not self.html:
                await self.send(message)
                return
            self.start = message
            return
        if message["type"] == "http.response.body" and self.html:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = _EXTERNAL_TAG.sub(b"", b"".join(self.chunks))
            headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
            headers += [(b"content-length", str(len(page)).encode()),
                        (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                        (b"x-frame-options", b"SAMEORIGIN"), (b"x-content-type-options", b"nosniff")]
            await self.send({**self.start, "headers": headers})
            await self.send({"type": "http.response.body", "body": page})
            return
        await self.send(message)


def _host_name(host_header: str) -> str:
    """`127.0.0.1:7870` -> `127.0.0.1`, `[::1]:7870` -> `::1`."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(origin: str, host_header: str, scope: Scope) -> bool:
    """The Origin names this server: the host and port the client itself addressed (Host header).

    The scheme is not compared, so a TLS-terminating proxy that passes the Host header on works.
    """
    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == host_header.strip().lower()  # "null" origins never match
