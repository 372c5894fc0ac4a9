"""The HTTP server a box and central serve their app with: uvicorn on sockets bound first, as the CLI and the app
want it."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.config import ConfigError, WebConfig

if TYPE_CHECKING:
    import uvicorn


@dataclass
class HttpServer:
    """uvicorn, and the sockets it serves on (bound by `bind`)."""

    server: uvicorn.Server
    sockets: list[socket.socket]

    async def serve(self) -> None:
        await self.server.serve(sockets=self.sockets)


def bind(web: WebConfig) -> list[socket.socket]:
    """web.host:web.port bound now, each address it resolves to, before the service opens anything else; ConfigError
    when it cannot be. (Left to uvicorn, a failed bind calls sys.exit from inside the event loop: the rest of the
    service stopped half-way, or hung in shutdown with its channels open: a second `make run` beside the first, stop
    34.) The caller closes them if it never serves them."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(web.host or None, web.port, type=socket.SOCK_STREAM,
                                                                   flags=socket.AI_PASSIVE):  # fmt: skip
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's own server would
            if family == socket.AF_INET6:  # as asyncio's: "::" is IPv6 only, beside an IPv4 listener on the port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as e:
        close(sockets)
        where = f"[{web.host}]:{web.port}" if ":" in web.host else f"{web.host}:{web.port}"
        raise ConfigError(f"web: cannot listen on {where}: {e.strerror or e} (another jingbao running there? web.port "
                          "and web.host choose where the console is served)") from e
    return sockets


def close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()


def http_server(app: Any, sockets: list[socket.socket]) -> HttpServer:
    """A server for `app` on `sockets` (`bind`). Proxy headers are the app's business (uvicorn would believe
    X-Forwarded-For from any local process; the app decides whom to believe: web.trusted_proxies,
    bridge/web/security.py), signals the CLI's. Build it in a worker thread: loading the config imports uvicorn's
    protocol modules, a tenth of a second or more that would stall the event loop."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="off", proxy_headers=False)
    config.load()
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return HttpServer(server, sockets)
