"""What guards the web app as a whole, before any route runs (ASGI middleware, `create_app` installs it).

- `ClientAddressMiddleware`: which address a request comes from. The connection's peer, unless the peer is one of
  `web.trusted_proxies`: then the right-most address of X-Forwarded-For that is not a trusted proxy (what comes left
  of that is whatever the client chose to write). Every use of `request.client` (login throttling, sessions, the audit
  log, log lines) sees the result. uvicorn's own handling of the header is off (`Service._http_server`): it trusted
  any request from localhost, so anyone on the machine, or a proxy passing the header on, could name any address.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

Network = IPv4Network | IPv6Network


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
