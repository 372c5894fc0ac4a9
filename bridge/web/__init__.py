"""The web side of jingbao: users, sessions and roles, the HTTP/WebSocket API, search, replay and the audit log.

`create_app` is imported lazily (PEP 562) so that `jingbao user ...` and other command-line paths that only need
the user store do not load the web stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from bridge.web.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
