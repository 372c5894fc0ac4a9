"""The HTTP server a box and central serve their app with: uvicorn, as the CLI and the app want it."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from bridge.config import ConfigError, WebConfig

if TYPE_CHECKING:
    import uvicorn


def http_server(app: Any, web: WebConfig) -> uvicorn.Server:
    """A server for `app` on web.host:web.port, checked to be free (ConfigError otherwise). Proxy headers are the
    app's business (uvicorn would believe X-Forwarded-For from any local process; the app decides whom to believe:
    web.trusted_proxies, bridge/web/security.py), signals the CLI's. Build it in a worker thread: loading the config
    imports uvicorn's protocol modules, a tenth of a second or more that would stall the event loop."""
    import uvicorn

    check_can_listen(web.host, web.port)
    config = uvicorn.Config(app, host=web.host, port=web.port, log_level="warning", lifespan="off", proxy_headers=False)
    config.load()
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    return server


def check_can_listen(host: str, port: int) -> None:
    """uvicorn ends the process from inside the event loop (sys.exit in its task) when it cannot bind: the rest of the
    service then stops half-way, or hangs in shutdown with its channels open (a second `make run` beside the first,
    stop 34). Probed first: a clear error, raised before the channels open."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will bind it
                probe.bind(address)
    except OSError as e:
        raise ConfigError(f"web: cannot listen on {host}:{port}: {e.strerror or e} (another jingbao running there? "
                          "web.port and web.host choose where the console is served)") from e
