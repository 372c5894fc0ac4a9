"""What guards the web app as a whole, before any route runs (ASGI middleware, `create_app` installs it).

- `ClientAddressMiddleware`: which address a request comes from. The connection's peer, unless the peer is one of
  `web.trusted_proxies`: then the right-most address of X-Forwarded-For that is not a trusted proxy (what comes left
  of that is whatever the client chose to write). Every use of `request.client` (login throttling, sessions, the audit
  log, log lines) sees the result. uvicorn's own handling of the header is off (`bridge/web/server.py`): it trusted
  any request from localhost, so anyone on the machine, or a proxy passing the header on, could name any address.
- `OriginCheckMiddleware`: cross-site requests. A request that changes something (POST, PUT, PATCH, DELETE) and a
  WebSocket handshake are refused when their Origin (or, without one, their Referer) is neither the console's own
  (the Host the request was sent to) nor one of `web.allowed_origins`: a page on another site cannot make a logged-in
  browser act (CSRF), open a live feed, or log the browser in to an account of the attacker's (login CSRF). A
  state-changing request that carries the session cookie and says nothing of where it comes from is refused too;
  without the cookie (API clients with a bearer token, curl) nothing needs saying.
- `SecurityHeadersMiddleware`: headers on every response that tell the browser what the pages may do. The Content
  Security Policy allows only what the pages use: scripts, styles, audio and the AudioWorklet from the console
  itself (no inline script or style anywhere), images from it, `data:` (the empty favicon, Leaflet's blank tile) and
  the map tile server of `web.tile_url`, connections (fetch, WebSockets) to it. Injected markup can then run nothing
  and send nothing elsewhere. No page may be framed (clickjacking), no response is content-sniffed, and the Referer
  goes to the console only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from urllib.parse import urlsplit

from fastapi import status
from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Network = IPv4Network | IPv6Network
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")  # what may go into a CSP source


def canonical_address(text: str) -> IPv4Address | IPv6Address | None:
    """The address written in `text` (an IPv4 address mapped into IPv6 as plain IPv4), None when it is not one."""
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    return (address.ipv4_mapped or address) if isinstance(address, IPv6Address) else address


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client's address: walk the chain `X-Forwarded-For..., peer` from the right while the hop is a trusted
    proxy; the first hop that is not one is the client (all trusted: the left-most)."""
    client = peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    while hops and _is_trusted(client, trusted):
        hop = canonical_address(hops.pop())
        if hop is None:  # a proxy we trust writes addresses: this was written by someone else, so it is not believed
            break
        client = str(hop)
    return client


def _is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    parsed = canonical_address(address)
    return parsed is not None and any(parsed in network for network in trusted)


class ClientAddressMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if self.trusted and scope["type"] in ("http", "websocket") and peer:
            client = forwarded_client(peer[0], Headers(scope=scope).getlist("x-forwarded-for"), self.trusted)
            if client != peer[0]:
                scope = dict(scope, client=(client, 0))  # the client's port is not known, only the proxy's
        await self.app(scope, receive, send)


class OriginCheckMiddleware:
    def __init__(self, app: ASGIApp, allowed_origins: Sequence[str], session_cookie: str) -> None:
        self.app = app
        self.allowed = frozenset(allowed_origins)
        self.session_cookie = session_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        websocket = scope["type"] == "websocket"
        if websocket or (scope["type"] == "http" and scope["method"] in UNSAFE_METHODS):
            refusal = self.refusal(Headers(scope=scope), websocket)
            if refusal and websocket:
                await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION, "reason": refusal})
                return
            if refusal:
                await JSONResponse({"detail": refusal}, status.HTTP_403_FORBIDDEN)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers, websocket: bool) -> str | None:
        """Why the request is refused, or None."""
        origin = headers.get("origin") or _origin_of(headers.get("referer"))
        if origin is not None:
            return None if self.ours(origin, headers.get("host", "")) else f"cross-site request from {origin} refused"
        # a browser always sends Origin on a WebSocket handshake; without one, it is not a page that is asking
        if not websocket and self.session_cookie in cookie_parser(headers.get("cookie", "")) and not _bearer(headers):
            return "a request with the session cookie must carry Origin or Referer"
        return None

    def ours(self, origin: str, host: str) -> bool:
        parts = urlsplit(origin.lower())
        return bool(parts.netloc) and (parts.netloc == host.lower() or f"{parts.scheme}://{parts.netloc}" in self.allowed)


def _origin_of(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _bearer(headers: Headers) -> bool:
    """An Authorization: Bearer header, which authenticates the request instead of the cookie (bridge.web.auth); a
    page on another site cannot add one (it would need a CORS preflight, which this app never answers)."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(credentials.strip())


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, tile_url: str | None) -> None:
        self.app = app
        self.img_src = " ".join(["'self'", "data:", *_tile_source(tile_url)])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = self.headers(Headers(scope=scope).get("host", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in headers.items() if k.lower().encode() not in present]
                message = message | {"headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def headers(self, host: str) -> dict[str, str]:
        # 'self' covers ws:/wss: to the same host in CSP 3; older browsers (phones' WebViews) need them named
        sockets = f" ws://{host} wss://{host}" if HOST.match(host) else ""
        policy = {
            "default-src": "'self'",
            "img-src": self.img_src,
            "connect-src": f"'self'{sockets}",
            "object-src": "'none'",
            "base-uri": "'none'",
            "form-action": "'self'",
            "frame-ancestors": "'none'",
        }
        return {
            "Content-Security-Policy": "; ".join(f"{k} {v}" for k, v in policy.items()),
            "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",  # the Origin check may need it; the tile server never sees a page's URL
        }


def _tile_source(tile_url: str | None) -> list[str]:
    """The CSP source of the map tile server: none when the tiles come from the console itself (a relative URL); a
    Leaflet `{s}` subdomain becomes `*`."""
    parts = urlsplit(tile_url or "")
    if not parts.netloc:
        return []
    host = parts.netloc.replace("{s}", "*")
    return [f"{parts.scheme}://{host}" if parts.scheme else host]
