"""What guards the web app as a whole (bridge/web/security.py): the client address behind proxies (and the login
throttle counting it), refusing requests another site's page sends, and the security headers (the browser tests
check that the pages run under that Content Security Policy without a violation)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from bridge.config import ConfigError, load_config
from bridge.db import connect
from bridge.service import Service
from bridge.web import create_app
from bridge.web.audit import AuditLog
from bridge.web.auth import SESSION_COOKIE
from bridge.web.routes_console import STATIC
from bridge.web.security import forwarded_client
from bridge.web.server import bind
from bridge.web.sessions import LoginThrottle
from tests.support.broker import free_port
from tests.web.conftest import make_service

PROXY = "127.0.0.2"  # a loopback address of its own: requests sent from it come from the trusted proxy


@dataclass(frozen=True)
class Served:
    service: Service
    url: str

    def client(self, source: str = "127.0.0.1") -> httpx.Client:
        """An HTTP client whose connections come from `source` (any 127.x address is this machine)."""
        return httpx.Client(base_url=self.url, transport=httpx.HTTPTransport(local_address=source), timeout=10)

    def failed_login_from(self, name: str) -> str:
        """The client address the audit log gave the failed login of `name`."""
        (entry,) = AuditLog(connect(self.service.config.storage.database)).list(action="login_failed", user=name)
        return entry.client


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The service's own HTTP server (uvicorn, configured as `jingbao run` does) on a free port, behind one trusted
    proxy."""
    port = free_port()
    service = make_service(tmp_path_factory.mktemp("served"), web={"port": port, "trusted_proxies": [PROXY]})
    http = service._http_server(bind(service.config.web))
    server = http.server
    thread = threading.Thread(target=server.run, args=(http.sockets,), name="uvicorn", daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            thread.join(0.05)
        yield Served(service, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(10)
        service.archive.close()


def test_x_forwarded_for_from_anyone_but_a_trusted_proxy_is_ignored(served: Served) -> None:
    with served.client() as local:  # a process on the same machine, not the proxy
        local.post("/api/login", json={"name": "forger", "password": "x" * 8}, headers={"X-Forwarded-For": "203.0.113.7"})
    assert served.failed_login_from("forger") == "127.0.0.1"


def test_behind_a_trusted_proxy_the_client_is_the_right_most_address_it_did_not_write_itself(served: Served) -> None:
    with served.client(PROXY) as proxy:
        # the client wrote the first address itself; the proxy appended the one it saw
        proxy.post("/api/login", json={"name": "proxied", "password": "x" * 8},
                   headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.8"})  # fmt: skip
    assert served.failed_login_from("proxied") == "203.0.113.8"


def test_naming_a_new_address_on_every_try_does_not_dodge_the_login_throttle(served: Served) -> None:
    with served.client() as local:
        statuses = [
            local.post("/api/login", json={"name": f"spray{n}", "password": "x" * 8},
                       headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(LoginThrottle.ADDRESS_MAX_FAILURES + 1)
        ]  # fmt: skip
    assert statuses[-1] == 429 and set(statuses) == {401, 429}


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("10.0.0.5", ["198.51.100.1"], "10.0.0.5"),  # not a proxy: its header is its own word
        ("10.0.0.1", [], "10.0.0.1"),  # the proxy's own request
        ("10.0.0.1", ["203.0.113.5, 10.0.0.2"], "203.0.113.5"),  # two proxies of ours in a row
        ("10.0.0.1", ["203.0.113.5", "10.0.0.2"], "203.0.113.5"),  # the same in two header lines
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all proxies: the left-most
        ("10.0.0.1", ["203.0.113.5, ::ffff:198.51.100.9"], "198.51.100.9"),  # one address, however written
        ("10.0.0.1", ["203.0.113.5, unknown"], "10.0.0.1"),  # no proxy of ours writes that: not believed
        ("::ffff:10.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_forwarded_client(peer: str, header: list[str], client: str) -> None:
    assert forwarded_client(peer, header, [ip_network("10.0.0.0/30")]) == client


# --- cross-site requests -----------------------------------------------------------------------------------------

EVIL = "http://evil.example"


def test_another_sites_page_cannot_act_with_the_users_session(login) -> None:
    operator = login("operator", fresh=True)
    refused = operator.post("/api/logout", headers={"Origin": EVIL})  # what a form on evil.example would send
    assert refused.status_code == 403 and "cross-site" in refused.json()["detail"]
    assert operator.post("/api/logout", headers={"Origin": "null"}).status_code == 403  # a sandboxed frame, a data: URL
    assert operator.get("/api/me").status_code == 200  # still logged in: the request did nothing
    assert operator.post("/api/logout").status_code == 204  # from the console's own page it goes through


def test_a_request_with_the_session_cookie_must_say_where_it_comes_from(app, login) -> None:
    silent = TestClient(app)
    silent.cookies[SESSION_COOKIE] = login("operator", fresh=True).cookies[SESSION_COOKIE]
    assert silent.post("/api/logout").status_code == 403
    assert silent.post("/api/logout", headers={"Referer": f"{EVIL}/page"}).status_code == 403
    assert silent.post("/api/logout", headers={"Referer": "http://testserver/console"}).status_code == 204


def test_an_api_client_with_a_bearer_token_needs_no_origin(app) -> None:
    client = TestClient(app)  # no cookie, no Origin: a script, not a browser
    token = client.post("/api/login", json={"name": "operator", "password": "operator-demo"}).json()["token"]
    client.cookies.clear()
    assert client.post("/api/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 204


def test_another_sites_page_cannot_log_the_browser_in(app) -> None:
    form = {"content-type": "application/x-www-form-urlencoded", "Origin": EVIL}
    response = TestClient(app).post("/api/login", content="name=operator&password=operator-demo", headers=form)
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_allowed_origins_admit_the_consoles_public_address(service, monkeypatch) -> None:
    public = "https://jingbao.station.example"
    web = service.config.web.model_copy(update={"allowed_origins": [public]})
    monkeypatch.setattr(service, "config", service.config.model_copy(update={"web": web}))
    client = TestClient(create_app(service), headers={"Origin": public})  # a proxy in front sends Host: testserver
    assert client.post("/api/login", json={"name": "operator", "password": "operator-demo"}).status_code == 200
    with client.websocket_connect("/api/events") as ws:
        ws.send_text("ping")  # accepted: the live feed is open
    for origin in (EVIL, "http://jingbao.station.example"):  # another site, or the right host over the wrong scheme
        assert client.post("/api/logout", headers={"Origin": origin}).status_code == 403
        with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/api/events", headers={"Origin": origin}):
            pass
        assert refused.value.code == 1008


@pytest.mark.parametrize("origin", ["jingbao.station.example", "https://jingbao.station.example/console", "ftp://x.example"])
def test_an_allowed_origin_must_be_an_origin(tmp_path, origin: str) -> None:
    path = tmp_path / "config.yaml"
    config = {"jurisdiction": "j.yaml", "channels": [{"id": "a", "source": {"type": "web"}}],
              "web": {"allowed_origins": [origin]}}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="is not an origin"):
        load_config(path)


# --- security headers --------------------------------------------------------------------------------------------


def test_every_response_tells_the_browser_what_the_pages_may_do(app, login) -> None:
    anonymous = TestClient(app)
    responses = [anonymous.get("/login"), anonymous.get("/static/common.js"), anonymous.get("/api/me"),
                 login("operator").get("/api/me"), anonymous.post("/api/logout", headers={"Origin": EVIL})]  # fmt: skip
    assert [r.status_code for r in responses] == [200, 200, 401, 200, 403]
    for response in responses:
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
        policy = dict(d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";"))
        assert policy == {
            "default-src": "'self'", "img-src": "'self' data:", "connect-src": "'self' ws://testserver wss://testserver",
            "object-src": "'none'", "base-uri": "'none'", "form-action": "'self'", "frame-ancestors": "'none'",
        }  # fmt: skip


def test_the_policy_admits_the_configured_map_tile_server(service, monkeypatch) -> None:
    web = service.config.web.model_copy(update={"tile_url": "https://{s}.tiles.example:8443/{z}/{x}/{y}.png"})
    monkeypatch.setattr(service, "config", service.config.model_copy(update={"web": web}))
    policy = TestClient(create_app(service)).get("/login").headers["content-security-policy"]
    assert "img-src 'self' data: https://*.tiles.example:8443;" in policy


def test_a_forged_host_does_not_reach_into_the_policy(app) -> None:
    policy = TestClient(app).get("/login", headers={"Host": "x; script-src *"}).headers["content-security-policy"]
    assert "connect-src 'self';" in policy and "script-src" not in policy


@pytest.mark.parametrize("page", sorted(p.name for p in STATIC.glob("*.html")))
def test_no_page_has_inline_script_or_style(page: str) -> None:
    """What the policy would block (no 'unsafe-inline'): scripts and styles come from files."""
    html = (STATIC / page).read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline <script>"
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html), "an inline style or event handler"


def test_metrics_are_refused_to_all_until_a_token_file_is_configured(tmp_path) -> None:
    """No web.metrics_token_file: 403 to everyone; with one (relative to the config), its token lets a scraper in and
    another is 401; an empty token file stops the start rather than open /metrics to an empty token."""
    for name in ("off", "on"):
        (tmp_path / name).mkdir()
    off = make_service(tmp_path / "off")
    assert TestClient(create_app(off)).get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
    (tmp_path / "on" / "metrics.token").write_text("tok-1234\n")
    on = make_service(tmp_path / "on", web={"metrics_token_file": "metrics.token"})
    client = TestClient(create_app(on))
    assert client.get("/metrics", headers={"Authorization": "Bearer tok-1234"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer tok-123"}).status_code == 401
    (tmp_path / "on" / "metrics.token").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        create_app(on)
    for service in (off, on):
        service.archive.close()
