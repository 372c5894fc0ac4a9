"""Helpers for the web API tests: a logged-in user's headers."""

from __future__ import annotations

import httpx

from tests.web.browser import PASSWORD, LiveService


def as_user(live: LiveService, name: str) -> dict[str, str]:
    """The Authorization header of a session of `name` (one of the users `add_users` made, with their password)."""
    token = httpx.post(f"{live.url}/api/login", json={"name": name, "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}
