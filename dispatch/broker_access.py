"""Who may do what on the MQTT broker: the accounts (a mosquitto password file) and the ACL generated from the
responder registry, for the mosquitto the project starts (scripts/broker.sh) or a site's own.

Roles, under the topic prefix P (dispatch/topics.py):

    the service ("jingbao")   writes P/alerts/#, P/tasks/#, P/incidents/#, P/events, P/available;
                              reads P/acks/+, P/status/+, owntracks/+/+
    a console ("console")     reads what the service publishes (alerts, tasks, incidents, events, availability); writes
                              nothing
    a responder's phone       reads P/alerts/<id>, P/tasks/<id>; writes P/acks/<id>, P/status/<id>;
      (user name = its id)    reads and writes owntracks/<id>/# (OwnTracks), and any OwnTracks user/device the
                              config's `dispatch.alerts.devices` maps to it
    a station's edge box      writes P/nodes/<station>/utterances, .../transcripts, .../partials and .../channels,
                              reads P/nodes/<station>/stored and .../recognised
      ("node-<station>")      (its own station's only)
    the central tier          reads P/nodes/+/utterances, .../transcripts, .../partials and .../channels (every
                              station's); writes
      ("central")             P/nodes/+/stored (its acknowledgements to each edge) and P/nodes/+/recognised (the
                              recognition workers' transcripts, passed on to each edge) and nothing else
    a recognition worker      writes P/nodes/+/transcripts (any station's: it recognises what central holds of
      ("recognition-<name>")  every station's) and nothing else; one login per worker

Anonymous clients are refused, and the broker takes every client's id from its user name
(`use_username_as_clientid`), so nobody can take over another's session without that account's password. What an
ACL cannot judge (who was alerted, when a fix was taken) the dispatcher checks (docs/security.md).

Files in the broker's directory (by default <storage.data_dir>/mosquitto):

    passwd              the mosquitto password file (PBKDF2-SHA512, the format mosquitto_passwd writes)
    acl                 generated from the registry; rewritten by every command here
    <account>.password  the service's and the console's own password (mode 0600), for their configs to read;
                        the service's goes where `broker.password_file` says when the config names a file

A phone's password is shown once, by `add_device`, and kept only as a hash: adding the device again replaces it.
A node's (`add_node`: an edge box, the central tier or the recognition workers, issue 13) likewise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import signal
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dispatch.gazetteer import Jurisdiction
from dispatch.topics import LIVE_NODE_KINDS, NODE_KINDS, RECOGNISED, STORED, TRANSCRIPTS, Topics

SERVICE = "jingbao"
CONSOLE = "console"
CENTRAL = "central"  # the central tier's login (its ingest); an edge box's is NODE_PREFIX + its station id
RECOGNITION = "recognition"  # a recognition worker's login, or recognition-<name>: one each (bridge/recognition_node.py)
NODE_PREFIX = "node-"
# mosquitto_passwd's own iteration count. The passwords are random 144-bit tokens (`new_password`), which no
# iteration count could make easier or harder to guess; a higher one only slows every login.
ITERATIONS = 101


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A mosquitto 2 password-file hash: $7$<iterations>$<salt>$<PBKDF2-SHA512>, both base64."""
    salt = os.urandom(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS, 64)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def read_passwd(path: Path) -> dict[str, str]:
    """user -> hash, in file order; an absent file is empty."""
    if not path.exists():
        return {}
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        user, sep, hashed = line.partition(":")
        if sep and user and not line.startswith("#"):
            entries[user] = hashed
    return entries


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing the old one in one step (a broker reloading never reads half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def reload_broker(directory: Path) -> int | None:
    """SIGHUP the broker whose pid file is in `directory` (scripts/broker.sh's), so that it reads the password file
    and the ACL again; returns its pid, or None when no broker of ours is running there."""
    try:
        pid = int((directory / "mosquitto.pid").read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return None
    return pid


@dataclass(slots=True, frozen=True)
class SetupReport:
    created: list[str]  # accounts made now (their passwords are in their .password files)
    kept: list[str]  # component accounts that already had a password
    dropped: list[str]  # phone accounts of responders no longer in the registry
    devices: int  # phone accounts in the password file


@dataclass(frozen=True)
class BrokerAccess:
    """The broker's accounts and ACL for one jurisdiction. `owntracks`: the config's OwnTracks "user" or
    "user/device" -> responder id map; `service_secret`: where the service's password is kept (its config's
    `broker.password_file`; by default <directory>/<service>.password)."""

    directory: Path
    jurisdiction: Jurisdiction
    prefix: str = "jingbao"
    service: str = SERVICE
    service_secret: Path | None = None
    owntracks: Mapping[str, str] = field(default_factory=dict)

    @property
    def passwd_file(self) -> Path:
        return self.directory / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.directory / "acl"

    def secret_file(self, account: str) -> Path:
        if account == self.service and self.service_secret is not None:
            return self.service_secret
        return self.directory / f"{account}.password"

    @property
    def components(self) -> tuple[str, str]:
        return (self.service, CONSOLE)

    def setup(self, *, rotate: bool = False) -> SetupReport:
        """Accounts for the service and the console (new passwords only where none is kept yet, or all of them with
        `rotate`), the ACL from the registry, and phone accounts of responders who left the registry dropped.
        Run again whenever the registry changes; phones keep their passwords."""
        responders = self._responder_ids()
        clash = {r for r in responders if r in self.components or _is_node(r)}
        if clash:
            raise ValueError(f"responder id {', '.join(sorted(clash))} is the name of a component or node account")
        accounts = read_passwd(self.passwd_file)
        created, kept = [], []
        for account in self.components:
            secret = self.secret_file(account)
            if account in accounts and secret.exists() and not rotate:
                kept.append(account)
                continue
            password = new_password()
            write_private(secret, password + "\n")
            accounts[account] = hash_password(password)
            created.append(account)
        dropped = [user for user in accounts if user not in self.components and user not in responders and not _is_node(user)]
        for user in dropped:
            del accounts[user]
        self._write(accounts)
        return SetupReport(created, kept, dropped, len(accounts) - len(self.components))

    def add_device(self, responder_id: str) -> str:
        """A login for the responder's phone (user name: the responder id); returns its password, which replaces any
        earlier one of that phone. KeyError for an id the registry does not have."""
        if responder_id not in self._responder_ids():
            raise KeyError(f"no responder {responder_id!r} in the registry")
        accounts = read_passwd(self.passwd_file)
        password = new_password()
        accounts[responder_id] = hash_password(password)
        self._write(accounts)
        return password

    def remove_device(self, responder_id: str) -> bool:
        """The responder's phone can no longer log in (False: it had no account)."""
        accounts = read_passwd(self.passwd_file)
        if responder_id in self.components or accounts.pop(responder_id, None) is None:
            return False
        self._write(accounts)
        return True

    def add_node(self, name: str) -> str:
        """A login for a node: "central" for the central tier, "recognition" or "recognition-<name>" for a
        recognition worker (one login each: the broker makes the user name the client id), else a station's edge box
        (user name node-<station>); returns its password, which replaces any earlier one. ValueError for a name no
        station may have."""
        from bridge.config import STATION_ID

        if not re.match(STATION_ID, name):
            raise ValueError(f"{name!r} is not a station id (letters, digits, '_', '-'), {CENTRAL!r} nor {RECOGNITION!r}")
        accounts = read_passwd(self.passwd_file)
        password = new_password()
        accounts[name if name == CENTRAL or _is_recognition(name) else NODE_PREFIX + name] = hash_password(password)
        self._write(accounts)
        return password

    def password(self, account: str) -> str:
        """A component's password, as its config reads it."""
        return self.secret_file(account).read_text(encoding="utf-8").strip()

    def acl(self, accounts: Iterable[str] | None = None) -> str:
        """The ACL for the registry and the node `accounts` among the broker's (None: those of the password file)."""
        accounts = read_passwd(self.passwd_file) if accounts is None else accounts
        topics = Topics(self.prefix)
        p = self.prefix
        lines = [
            "# Generated by `jingbao broker` from the responder registry: edits are lost at the next run.",
            "# No rule before the first `user` line: anonymous clients (refused anyway) may do nothing.",
            "",
            f"user {self.service}",
            f"topic write {p}/alerts/#",
            f"topic write {p}/tasks/#",
            f"topic write {p}/incidents/#",
            f"topic write {p}/events",
            f"topic write {topics.available}",
            f"topic read {p}/acks/+",
            f"topic read {p}/status/+",
            "topic read owntracks/+/+",
            "",
            f"user {CONSOLE}",
            f"topic read {p}/alerts/#",
            f"topic read {p}/tasks/#",
            f"topic read {p}/incidents/#",
            f"topic read {p}/events",
            f"topic read {topics.available}",
        ]
        for r in self.jurisdiction.responders:
            lines += ["", f"user {r.id}", f"topic read {topics.alert(r.id)}", f"topic write {topics.ack(r.id)}",
                      f"topic write {topics.status(r.id)}", f"topic read {topics.task(r.id)}",
                      f"topic readwrite owntracks/{r.id}/#"]  # fmt: skip
            lines += [f"topic readwrite owntracks/{key}/#" for key in self._owntracks_of(r.id)]
        for account in sorted(a for a in accounts if _is_node(a)):
            if account == CENTRAL:
                lines += ["", f"user {CENTRAL}", *(f"topic read {t}" for t in topics.node_subscriptions),
                          *(f"topic read {topics.node_live(kind)}" for kind in LIVE_NODE_KINDS),
                          f"topic write {p}/nodes/+/{STORED}", f"topic write {p}/nodes/+/{RECOGNISED}"]  # fmt: skip
            elif _is_recognition(account):
                lines += ["", f"user {account}", f"topic write {p}/nodes/+/{TRANSCRIPTS}"]
            else:
                station = account.removeprefix(NODE_PREFIX)
                lines += ["", f"user {account}",
                          *(f"topic write {topics.node(station, kind)}" for kind in (*NODE_KINDS, *LIVE_NODE_KINDS)),
                          f"topic read {topics.node_stored(station)}",
                          f"topic read {topics.node_recognised(station)}"]  # fmt: skip
        return "\n".join(lines) + "\n"

    def _owntracks_of(self, responder_id: str) -> Iterable[str]:
        """The OwnTracks users (or user/device) the config maps to this responder, besides its own id."""
        return sorted(key for key, rid in self.owntracks.items() if rid == responder_id and key.split("/")[0] != rid)

    def _responder_ids(self) -> set[str]:
        return {r.id for r in self.jurisdiction.responders}

    def _write(self, accounts: Mapping[str, str]) -> None:
        write_private(self.acl_file, self.acl(accounts))
        write_private(self.passwd_file, "".join(f"{user}:{hashed}\n" for user, hashed in accounts.items()))


def _is_node(account: str) -> bool:
    return account == CENTRAL or _is_recognition(account) or account.startswith(NODE_PREFIX)


def _is_recognition(account: str) -> bool:
    return account == RECOGNITION or account.startswith(f"{RECOGNITION}-")
