"""A real mosquitto for tests: private port on 127.0.0.1, temp config and persistence, stoppable mid-test.

Use it from a test module with `from tests.support.broker import broker_fixture  # noqa: F401` and ask for the
`broker` fixture: locked down as `jingbao broker setup` locks a site's broker (no anonymous clients, the ACL generated
from the demo registry, client ids taken from user names), with a phone account for every responder of the registry.
`login(name)` gives the credentials of any of them ("jingbao" the service, "console", a responder id);
`service_config()` the service's broker section. `Mosquitto(workdir)` without a jurisdiction is an open broker, as
before; `tls=` adds a TLS listener (`self_signed` makes a CA and a certificate for 127.0.0.1).
"""

from __future__ import annotations

import getpass
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dispatch.broker_access import CONSOLE, SERVICE, BrokerAccess
from dispatch.gazetteer import load_jurisdiction

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
JURISDICTION = Path(__file__).resolve().parents[2] / "config" / "jurisdiction.yaml"


# Below Linux's ephemeral range (32768-60999): a port the kernel picked with bind(0) comes from that range, and
# between this check and the server's own bind an outgoing connection (a test's client, PostgreSQL, MQTT) could be
# given it as its local port (seen: a test's web server failing with "address already in use").
LISTEN_PORTS = range(20000, 32768)


def free_port() -> int:
    """A port nothing listens on now, outside the range the kernel hands to outgoing connections."""
    rng = random.Random()  # its own: tests seeding `random` must not make two workers pick alike
    while True:
        port = rng.choice(LISTEN_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass(frozen=True)
class ServerTls:
    ca: Path  # the CA certificate clients verify the broker with
    cert: Path
    key: Path


def self_signed(directory: Path) -> ServerTls:
    """A throw-away CA and a broker certificate it signed, for 127.0.0.1 and localhost (openssl CLI, EC keys: fast)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, csr = (directory / n for n in ("ca.crt", "ca.key", "server.crt", "server.key", "server.csr"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1", "-subj", "/CN=jingbao test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                          "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                          "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")  # fmt: skip
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
            "-days", "1", "-extfile", str(extensions))  # fmt: skip
    return ServerTls(ca, cert, key)


class Mosquitto:
    """One mosquitto process; `stop()` and `start()` again keep the port and the persisted sessions."""

    host = "127.0.0.1"

    def __init__(
        self, workdir: Path, port: int | None = None, *, jurisdiction: Path | None = None, tls: ServerTls | None = None
    ) -> None:
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access: BrokerAccess | None = None
        self._passwords: dict[str, str] = {}
        lines = [f"listener {self.port} {self.host}"]
        if jurisdiction is not None:
            self.access = BrokerAccess(workdir, load_jurisdiction(jurisdiction))
            self.access.setup()
            self._passwords = {name: self.access.password(name) for name in (SERVICE, CONSOLE)}
            for responder in self.access.jurisdiction.responders:
                self._passwords[responder.id] = self.access.add_device(responder.id)
            lines.append("use_username_as_clientid true")
        if tls is not None:
            lines += [f"listener {self.tls_port} {self.host}", f"cafile {tls.ca}", f"certfile {tls.cert}",
                      f"keyfile {tls.key}"]  # fmt: skip
            if jurisdiction is not None:
                lines.append("use_username_as_clientid true")
        if self.access is not None:
            lines += ["allow_anonymous false", f"password_file {self.access.passwd_file}", f"acl_file {self.access.acl_file}"]
        else:
            lines.append("allow_anonymous true")
        lines += [
            "persistence true",
            f"persistence_location {workdir}/",
            f"log_dest file {workdir}/mosquitto.log",
            "log_type all",
            f"pid_file {workdir}/mosquitto.pid",  # what `jingbao broker` signals to reload accounts and ACL
            # Started as root, mosquitto would switch to the `mosquitto` user, which cannot write our temp dir.
            f"user {getpass.getuser()}",
        ]
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self._process: subprocess.Popen[bytes] | None = None

    def login(self, name: str) -> dict[str, str]:
        """username/password keyword arguments for an MQTT client logging in as `name` (nothing on an open broker)."""
        if self.access is None:
            return {}
        return {"username": name, "password": self._passwords[name]}

    def service_config(self) -> dict[str, Any]:
        """The service's `broker` config section for this broker."""
        section: dict[str, Any] = {"host": self.host, "port": self.port, "client_id": "jingbao-test"}
        if self.access is not None:
            section |= {"username": SERVICE, "password_file": str(self.access.secret_file(SERVICE))}
        return section

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        if self.running:
            return
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"mosquitto exited: {err}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM, so mosquitto writes its persistence file (sessions and queued messages survive a restart)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer: mosquitto saves nothing, so what it took since its last save (its
        sessions' queued messages) is gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@pytest.fixture(name="broker")
def broker_fixture(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "mosquitto", jurisdiction=JURISDICTION)
    server.start()
    try:
        yield server
    finally:
        server.stop()
