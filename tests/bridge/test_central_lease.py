"""The lease that lets one central of a pair run while the other stands by (bridge/central_lease.py), on a real
PostgreSQL: taken by one at a time, handed over when its holder goes, taken back after an outage unless the other
central has it by then. And central refusing to start beside the SQLite state it kept before (bridge/central.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from bridge.central import refuse_sqlite_state
from bridge.central_lease import CentralLease, LeaseLost
from bridge.config import ConfigError, StorageConfig
from bridge.db import connect
from bridge.db_postgres import DEAD_PEER_S
from bridge.web.users import UserStore
from tests.support.postgres import PostgresCluster

REPO = Path(__file__).resolve().parents[2]


def fast(url: str) -> CentralLease:
    return CentralLease(url, poll_s=0.05, check_s=0.05)


def cut(url: str) -> None:
    """PostgreSQL drops the leases' connections (a restart, or a network cut, as a lease sees it)."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                      ("jingbao central lease",))  # fmt: skip


async def test_one_central_holds_the_lease_and_the_other_takes_it_when_it_goes(pg_url: str) -> None:
    active, standby = fast(pg_url), fast(pg_url)
    await asyncio.wait_for(active.acquire(), 5)
    waiting = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.5)
    assert not waiting.done()  # standing by
    active.release()  # a clean stop, or a process killed: the session ends
    await asyncio.wait_for(waiting, 5)
    standby.release()


async def test_after_an_outage_the_lease_is_taken_back_unless_the_other_central_has_it(pg_url: str) -> None:
    active = fast(pg_url)
    await asyncio.wait_for(active.acquire(), 5)
    holding = asyncio.create_task(active.hold())
    cut(pg_url)
    await asyncio.sleep(0.5)
    assert not holding.done()  # taken back: nobody else wanted it
    with psycopg.connect(pg_url, autocommit=True) as probe:
        assert probe.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0] == 1
    holding.cancel()
    active.release()

    slow, standby = CentralLease(pg_url, poll_s=0.05, check_s=1.0), fast(pg_url)
    await asyncio.wait_for(slow.acquire(), 5)
    holding = asyncio.create_task(slow.hold())
    waiting = asyncio.create_task(standby.acquire())
    cut(pg_url)  # the holder notices only at its next check; the standby, polling, takes the lease first
    await asyncio.wait_for(waiting, 5)
    with pytest.raises(LeaseLost):
        await asyncio.wait_for(holding, 5)
    standby.release()


async def test_after_a_postgresql_restart_the_former_holder_takes_the_lease_back_before_the_standby(
    postgres: PostgresCluster, pg_url: str
) -> None:  # fmt: skip
    active, standby = fast(pg_url), CentralLease(pg_url, poll_s=0.05, check_s=0.05, defer_s=1.5)
    await asyncio.wait_for(active.acquire(), 5)
    holding = asyncio.create_task(active.hold())
    waiting = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.3)
    postgres.pause()
    await asyncio.sleep(0.5)
    postgres.resume()
    await asyncio.sleep(1.0)
    assert not holding.done() and not waiting.done()  # the holder took it back; the standby waits on
    holding.cancel()
    waiting.cancel()
    active.release()
    standby.release()


async def test_a_holder_out_of_postgresqls_reach_past_the_cut_off_stops_without_draining(
    postgres: PostgresCluster, pg_url: str
) -> None:  # fmt: skip
    active = CentralLease(pg_url, poll_s=0.05, check_s=0.05, cut_off_s=1.0)
    await asyncio.wait_for(active.acquire(), 5)
    told: list[str] = []
    postgres.pause()  # for this central as a network cut is: no answer at all
    try:
        with pytest.raises(LeaseLost, match="out of reach"):
            await asyncio.wait_for(active.hold(lambda: told.append("lost")), 10)
    finally:
        postgres.resume()
    assert told == ["lost"]
    active.release()


async def test_the_session_a_central_held_the_lease_on_before_a_network_blip_is_ended_for_it(pg_url: str) -> None:
    """The server has not noticed the old connection is gone (a blip): the lease is still held by it, and taking it
    back ends that session rather than stopping this central."""
    active = fast(pg_url)
    await asyncio.wait_for(active.acquire(), 5)
    old = active._conn  # still open at the server, as a connection cut off mid-blip is until TCP gives up
    active._conn = None
    assert active._connected() and not active._take()  # held: by its own old session
    assert active._end_own_old_session()
    await asyncio.sleep(0.3)
    assert active._take()
    active.release()
    assert old is not None
    old.close()  # (referenced until here, so that nothing closed it earlier)


def test_central_refuses_to_start_beside_the_sqlite_state_it_kept_before_postgresql(tmp_path: Path) -> None:
    storage = StorageConfig(data_dir=tmp_path, database_url="postgresql:///unused")
    refuse_sqlite_state(storage)  # no file: a new central
    UserStore(connect(storage.database))  # the tables, empty: nothing would be lost
    refuse_sqlite_state(storage)
    UserStore(connect(storage.database)).add("op", "operator", "a password of some length")
    with pytest.raises(ConfigError, match="1 users"):
        refuse_sqlite_state(storage)


@dataclass(frozen=True)
class Machine:
    """Another machine on the network: a network namespace joined to this one by a veth pair."""

    name: str  # its namespace: run a process on it with `ip netns exec <name> ...`
    host_ip: str  # this machine's address on the link between them
    subnet: str
    link: str  # its end of the link

    def vanish(self) -> None:
        """Its end of the link down: what is sent to it is dropped without a word, as when a machine loses power."""
        _ip("netns", "exec", self.name, "ip", "link", "set", self.link, "down")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr}"


@pytest.fixture
def machine() -> Iterator[Machine]:
    """Skipped where a network namespace cannot be made (not root, a container without the right, no iproute2)."""
    n = os.getpid() % 10_000
    name, here, there, subnet = f"jbm{n}", f"jbh{n}", f"jbv{n}", f"10.77.{n % 250}"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    except FileNotFoundError:
        made = False
    if not made:
        pytest.skip("cannot make a network namespace here (iproute2, root and CAP_SYS_ADMIN needed)")
    try:
        _ip("link", "add", here, "type", "veth", "peer", "name", there)
        _ip("link", "set", there, "netns", name)
        _ip("addr", "add", f"{subnet}.1/24", "dev", here)
        _ip("link", "set", here, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{subnet}.2/24", "dev", there)
        _ip("netns", "exec", name, "ip", "link", "set", there, "up")
        yield Machine(name, f"{subnet}.1", f"{subnet}.0/24", there)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", here], capture_output=True)


HOLD = """
import asyncio, sys
from bridge.central_lease import CentralLease

async def main():
    lease = CentralLease(sys.argv[1])  # held on to: its connection holds the lease
    await lease.acquire()
    print("holding", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_the_lease_of_a_central_whose_machine_vanishes_goes_to_the_standby_within_the_dead_peer_time(
    machine: Machine,
) -> None:
    """The holder on another machine (a network namespace) over TCP; that machine vanishes from the network (its
    link down, nothing answers any more): PostgreSQL's keepalives for the lease's session (DEAD_PEER) end it, and the
    standby here takes the lease, in ~DEAD_PEER_S rather than the kernel's two hours."""
    cluster = PostgresCluster(listen=machine.host_ip, clients=machine.subnet)
    await asyncio.to_thread(cluster.start)
    holder = None
    try:
        database = cluster.create_database()
        holder = subprocess.Popen(["ip", "netns", "exec", machine.name, sys.executable, "-c", HOLD,
                                   f"postgresql://{cluster.user}@{machine.host_ip}/{database}"],
                                  cwd=REPO, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert holder.stdout is not None and await asyncio.to_thread(holder.stdout.readline) == "holding\n"
        standby = CentralLease(cluster.url(database), poll_s=0.2)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(standby.acquire(), 2)  # held, over there
        machine.vanish()
        vanished = time.monotonic()
        await asyncio.wait_for(standby.acquire(), DEAD_PEER_S + 20)
        assert time.monotonic() - vanished < DEAD_PEER_S + 5
        standby.release()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        await asyncio.to_thread(cluster.stop)
