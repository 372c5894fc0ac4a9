"""What guards the web app as a whole (bridge/web/security.py): the client address behind proxies, and the login
throttle counting that address."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network

import httpx
import pytest

from bridge.db import connect
from bridge.service import Service
from bridge.web.audit import AuditLog
from bridge.web.security import forwarded_client
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
    server = service._http_server()
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
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
