"""Helpers for the web API tests: a logged-in user's headers, waiting for what the service does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.web.browser import PASSWORD, LiveService


def as_user(live: LiveService, name: str) -> dict[str, str]:
    """The Authorization header of a session of `name` (one of the users `add_users` made, with their password)."""
    token = httpx.post(f"{live.url}/api/login", json={"name": name, "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """`check()`'s first truthy answer, asked every 0.1 s; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
