"""Login, sessions (cookie and bearer), the login throttle, and role checks on endpoints and WebSockets."""

from __future__ import annotations

import io
import json
from typing import Annotated

import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.testclient import TestClient
from httpx import Response
from starlette.websockets import WebSocketDisconnect

from bridge.cli import main
from bridge.web import create_app
from bridge.web.auth import SESSION_COOKIE, require
from bridge.web.sessions import LoginThrottle
from bridge.web.users import Role, User, UserStore, demo_password


def test_login_sets_an_httponly_session_cookie_and_me_answers(fresh_app):
    client = TestClient(fresh_app)
    assert client.get("/api/me").status_code == 401
    response = client.post("/api/login", json={"name": "auditor", "password": "auditor-demo"})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/api/me").json()["role"] == "auditor"


def test_web_secure_cookies_marks_the_session_cookie_secure(service, monkeypatch):
    assert "Secure" not in log_in(create_app(service), "auditor", "auditor-demo").headers["set-cookie"]  # plain HTTP
    web = service.config.web.model_copy(update={"secure_cookies": True})
    monkeypatch.setattr(service, "config", service.config.model_copy(update={"web": web}))
    client = TestClient(create_app(service))
    cookie = client.post("/api/login", json={"name": "auditor", "password": "auditor-demo"}).headers["set-cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    cleared = client.post("/api/logout", headers={"Authorization": f"Bearer {token}"}).headers["set-cookie"]
    assert "; Secure" in cleared and f'{SESSION_COOKIE}=""' in cleared


def test_form_login_and_bearer_token(fresh_app):
    form_type = {"content-type": "application/x-www-form-urlencoded"}
    form = TestClient(fresh_app).post("/api/login", content="name=operator&password=operator-demo", headers=form_type)
    assert form.status_code == 200 and "token" not in form.json()  # a browser form gets the cookie only
    token = TestClient(fresh_app).post("/api/login", json={"name": "officer", "password": "officer-demo"}).json()["token"]
    bearer = TestClient(fresh_app)
    assert bearer.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "officer"
    assert bearer.get("/api/me", headers={"Authorization": "Bearer forged"}).status_code == 401


def test_wrong_password_unknown_user_and_malformed_bodies_are_refused_cleanly(fresh_app):
    client = TestClient(fresh_app)
    assert client.post("/api/login", json={"name": "auditor", "password": "nope"}).status_code == 401
    assert client.post("/api/login", json={"name": "nobody", "password": "whatever"}).status_code == 401
    assert client.post("/api/login", content=b"\xff\xfe{", headers={"content-type": "application/json"}).status_code == 400
    assert client.post("/api/login", json={"name": ["x"], "password": 1}).status_code == 400


def test_logout_revokes_the_session(login):
    client = login("operator", fresh=True)
    token = client.cookies[SESSION_COOKIE]
    assert client.post("/api/logout").status_code == 204
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(fresh_app: FastAPI) -> Clock:
    """`fresh_app`'s login throttle on a clock the test moves."""
    clock = Clock()
    fresh_app.state.web.throttle = LoginThrottle(clock)
    return clock


def log_in(app: FastAPI, name: str, password: str, address: str = "198.51.100.1") -> Response:
    return TestClient(app, client=(address, 50000)).post("/api/login", json={"name": name, "password": password})


def test_guessing_a_name_from_one_address_never_keeps_its_user_out_from_another(fresh_app):
    for _ in range(8):
        log_in(fresh_app, "guard", "wrong-password", address="203.0.113.66")
    assert log_in(fresh_app, "guard", demo_password("guard"), address="203.0.113.66").status_code == 429
    assert log_in(fresh_app, "guard", demo_password("guard"), address="198.51.100.7").status_code == 200


def test_failures_in_a_row_back_off_1_2_4_seconds_and_a_success_starts_afresh(fresh_app, clock):
    for _ in range(LoginThrottle.FREE_FAILURES):  # typos cost nothing
        assert log_in(fresh_app, "auditor", "wrong-password").status_code == 401
    for wait_s in (1, 2, 4):
        refused = log_in(fresh_app, "auditor", demo_password("auditor"))  # refused unchecked, even the right password
        assert (refused.status_code, refused.headers["retry-after"]) == (429, str(wait_s))
        clock.now += wait_s
        assert log_in(fresh_app, "auditor", "wrong-password").status_code == 401
    assert log_in(fresh_app, "auditor", demo_password("auditor")).status_code == 429
    clock.now += 8
    assert log_in(fresh_app, "auditor", demo_password("auditor")).status_code == 200
    assert log_in(fresh_app, "auditor", "wrong-password").status_code == 401  # counting from nothing again
    assert log_in(fresh_app, "auditor", "wrong-password").status_code == 401


def test_failures_spread_over_many_names_hold_up_the_address_only(fresh_app, clock):
    for n in range(LoginThrottle.ADDRESS_MAX_FAILURES):
        assert log_in(fresh_app, f"guess{n}", "x" * 8).status_code == 401
    refused = log_in(fresh_app, "operator", demo_password("operator"))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == LoginThrottle.ADDRESS_WINDOW_S
    assert log_in(fresh_app, "operator", demo_password("operator"), address="198.51.100.2").status_code == 200
    clock.now += LoginThrottle.ADDRESS_WINDOW_S
    assert log_in(fresh_app, "operator", demo_password("operator")).status_code == 200


def test_the_throttle_counts_a_try_before_the_password_is_checked_and_caps_its_wait():
    clock = Clock()
    throttle = LoginThrottle(clock)
    # tries sent at once, before any has been answered: only the free ones get to the password check
    waits = [throttle.attempt("admin", "192.0.2.1") for _ in range(LoginThrottle.FREE_FAILURES + 2)]
    assert waits[: LoginThrottle.FREE_FAILURES] == [0.0] * LoginThrottle.FREE_FAILURES and min(waits[-2:]) > 0
    for _ in range(20):
        clock.now += LoginThrottle.MAX_DELAY_S
        assert throttle.attempt("admin", "192.0.2.1") == 0.0
    assert throttle.attempt("admin", "192.0.2.1") == LoginThrottle.MAX_DELAY_S
    # one IPv6 subscriber's addresses (a /64) are one address; the name's case makes no difference
    for n in range(LoginThrottle.ADDRESS_MAX_FAILURES):
        throttle.attempt(f"user{n}", f"2001:db8:1:2::{n:x}")
    assert throttle.attempt("ADMIN", "2001:db8:1:2::ffff") > 0 and throttle.attempt("admin", "2001:db8:1:3::1") == 0.0


@pytest.mark.parametrize(
    ("role", "method", "path", "expected"),
    [
        ("guard", "get", "/api/search?q=打架", 403),  # a guard cannot search the archive
        ("officer", "get", "/api/search?q=打架", 403),
        ("operator", "get", "/api/search?q=打架", 200),
        ("auditor", "get", "/api/search?q=打架", 200),
        ("admin", "get", "/api/search?q=打架", 200),  # admins pass every check
        ("operator", "get", "/api/search/export.csv?q=打架", 403),  # export is for auditors
        ("guard", "get", "/api/audit", 403),
        ("operator", "get", "/api/audit", 403),
        ("auditor", "get", "/api/audit", 200),
        ("operator", "get", "/api/archive/verify", 403),
        ("auditor", "get", "/api/archive/verify", 200),
        ("guard", "get", "/api/utterances/none/audio", 403),
        ("auditor", "get", "/api/users", 403),
        ("admin", "get", "/api/users", 200),
        ("guard", "get", "/api/channels", 200),  # any logged-in user sees channel state
        ("auditor", "post", "/api/incidents/INC-none/status", 403),  # an auditor cannot dispatch (the console's route)
    ],
)
def test_role_checks(login, role, method, path, expected):
    assert getattr(login(role), method)(path).status_code == expected


def test_without_a_session_everything_but_health_is_401(app):
    client = TestClient(app)
    assert client.get("/healthz").status_code == 200
    for path in ("/api/channels", "/api/search?q=打架", "/api/audit", "/api/archive/verify", "/api/openapi.json"):
        assert client.get(path).status_code == 401, path


@pytest.fixture(scope="module")
def operator_only(app: FastAPI) -> FastAPI:
    """An operator-only endpoint and WebSocket declared the way the console's are (the dependency under test)."""
    router = APIRouter()

    @router.post("/api/test/dispatch")
    def dispatch(user: Annotated[User, require(Role.OPERATOR)]) -> dict[str, str]:
        return {"by": user.name}

    @router.websocket("/api/test/live")
    async def live(ws: WebSocket, user: Annotated[User, require(Role.OPERATOR)]) -> None:
        await ws.accept()
        await ws.send_json({"hello": user.name})
        await ws.close()

    app.include_router(router)
    return app


def test_an_auditor_cannot_dispatch(operator_only, login):
    assert login("auditor").post("/api/test/dispatch").status_code == 403
    assert login("operator").post("/api/test/dispatch").json() == {"by": "operator"}


def test_websocket_checks_session_role_and_origin(operator_only, login):
    with login("operator").websocket_connect("/api/test/live") as ws:
        assert ws.receive_json() == {"hello": "operator"}
    for client, headers in (
        (login("auditor"), {}),  # wrong role
        (TestClient(operator_only), {}),  # no session
        (login("operator"), {"origin": "http://evil.example"}),  # another site riding on the cookie
    ):
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/api/test/live", headers=headers):
            pass
        assert refused.value.code == 1008


def test_user_cli_adds_and_lists_users(service, monkeypatch, capsys):
    config = str(service.config.storage.data_dir.parent / "config.yaml")
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-password\n"))
    assert main(["user", "add", "zhang.wei", "--role", "guard", "--responder", "g-market-01", "--password-stdin",
                 "--config", config]) == 0  # fmt: skip
    assert main(["user", "add", "zhang.wei", "--role", "guard", "--config", config]) == 2  # taken
    with pytest.raises(SystemExit):
        main(["user", "add", "li", "--role", "janitor", "--config", config])
    capsys.readouterr()
    assert main(["user", "add", "li", "--role", "auditor", "--config", config]) == 0
    generated = capsys.readouterr().out.removeprefix("password: ").strip()
    assert main(["user", "list", "--json", "--config", config]) == 0
    users = {u["name"]: u for u in map(json.loads, capsys.readouterr().out.splitlines())}
    assert users["zhang.wei"] == users["zhang.wei"] | {"role": "guard", "responder_id": "g-market-01"}
    assert UserStore(service.db).authenticate("zhang.wei", "s3cret-password") is not None
    assert UserStore(service.db).authenticate("li", generated) is not None
