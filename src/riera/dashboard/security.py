"""The dashboard's rules, applied to every request before any route (an ASGI middleware).

- **Read-only:** GET and HEAD only; anything else gets 405.
- **Host allow-list**, even on loopback: a page on another site that rebinds its DNS name to
  127.0.0.1 sends its own ``Host`` header, and gets 421.
- **No cross-site requests:** a page of another site can make the browser send GETs to
  127.0.0.1 (an ``<img src=…>``) with the right ``Host``; it cannot read the answers, but the
  server would still run them. Requests the browser marks ``Sec-Fetch-Site: cross-site`` or
  ``same-site``, or whose ``Origin`` is not one of the allowed hosts, get 403 — except a plain
  navigation to the page itself (a link to the dashboard), which runs nothing.
- **Token:** required when the server listens beyond loopback (``serve`` generates one if none
  was given, and prints it once; a given one must have 16 characters at least). ``/?token=T``
  trades it for an ``HttpOnly``, ``SameSite=Strict`` cookie named after the port (two
  dashboards on one host keep theirs) that holds an HMAC of the token, never the token, and
  redirects to a URL without it; values are compared in constant time. Without a valid cookie:
  401.
- **Headers:** ``Content-Security-Policy: default-src 'self'; frame-ancestors 'none'``,
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "riera_dashboard"
MIN_TOKEN = 16
CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


def allowed_hosts(bind: str, port: int, extra: Iterable[str] = ()) -> set[str]:
    """``Host`` header values accepted: loopback names (and the bind address) with the port."""
    names = {*LOOPBACK, bind, *extra}
    return {f"{n}:{port}" for n in names} | {n for n in names if n}


def cookie_value(token: str) -> str:
    """What the cookie holds: an HMAC of the token (a stolen cookie does not give the token)."""
    return hmac.new(token.encode(), b"riera dashboard cookie", hashlib.sha256).hexdigest()


def machine_names() -> list[str]:
    """The names a wildcard bind (0.0.0.0, ::) is reached by from other machines: the host
    name and every non-loopback address of the machine's interfaces (IPv6 in brackets)."""
    import socket

    import psutil

    names = [socket.gethostname(), socket.getfqdn()]
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                names.append(a.address)
            elif a.family == socket.AF_INET6 and a.address != "::1" and "%" not in a.address:
                names.append(f"[{a.address}]")
    return list(dict.fromkeys(n for n in names if n))


class Guard:
    def __init__(self, app: ASGIApp, *, hosts: set[str], token: str | None,
                 port: int | None = None) -> None:  # fmt: skip
        if token is not None and len(token) < MIN_TOKEN:
            raise ValueError(f"a dashboard token needs {MIN_TOKEN} characters at least "
                             f"(got {len(token)}); leave it out and one is generated")  # fmt: skip
        self.app, self.hosts, self.token = app, hosts, token
        self.cookie = COOKIE if port is None else f"{COOKIE}_{port}"
        self.held = cookie_value(token) if token is not None else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, "the dashboard is read-only: GET and HEAD only",
                         [(b"allow", b"GET, HEAD")])  # fmt: skip
            return
        if headers.get("host", "") not in self.hosts:
            await _plain(send, 421, "unknown Host: open the dashboard by the address it printed")
            return
        site = headers.get("sec-fetch-site", "")
        origin = headers.get("origin", "")
        navigation = scope["path"] == "/" and headers.get("sec-fetch-mode", "") == "navigate"
        foreign_origin = bool(origin) and origin.split("://", 1)[-1] not in self.hosts
        if (site in ("cross-site", "same-site") and not navigation) or foreign_origin:
            await _plain(send, 403, "cross-site request refused: open the dashboard itself")
            return
        if self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [None])[0]
            if given is not None:
                if not hmac.compare_digest(given.encode(), self.token.encode()):
                    await _plain(send, 401, "wrong token")
                    return
                rest = {k: v for k, v in query.items() if k != "token"}
                location = scope["path"] + (f"?{urlencode(rest, doseq=True)}" if rest else "")
                cookie = (f"{self.cookie}={self.held}; HttpOnly; SameSite=Strict; Path=/").encode()
                await _plain(send, 303, "signed in",
                             [(b"location", location.encode()), (b"set-cookie", cookie)])  # fmt: skip
                return
            jar: SimpleCookie = SimpleCookie()
            jar.load(headers.get("cookie", ""))
            held = jar[self.cookie].value if self.cookie in jar else ""
            if not held or not hmac.compare_digest(held.encode(), self.held.encode()):
                await _plain(send, 401, "open the URL with ?token=… that the dashboard printed")
                return

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, guarded_send)


async def _plain(send: Send, status: int, text: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            *(extra or []), *HEADERS]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
