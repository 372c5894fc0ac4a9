"""The edge's link to the broker cut while its channels talk (issue 13's "drop the edge link"), through a real TCP relay
(tests/support/relay.py) between `jingbao run --role edge` and mosquitto: the edge archives and recognises on, and
once the link is back central holds exactly its utterances and transcripts, each once.

The cut here lasts 20 s, not the issue's 2 minutes (the suite has a time budget; bench/cluster.py cuts an edge for 2
minutes): long enough for what makes a long cut different from a blip. The cut is silent, as a pulled cable is, so the
broker learns of it only when the edge's keepalive expires (1.5 x 10 s) and the edge only when a PUBACK or a PINGRESP
does not come; from then on the broker holds the edge's persistent session offline and queues central's
acknowledgements in it. The link stays cut until both ends' logs say they found it dead: mosquitto 2.0.11 looks at
keepalives only every 6 s, so it drops a client 16 to 22 s after it last heard from it, and a 20 s cut may end before
that. How the edge finds it dead (no PUBACK within 10 s of a publish, or no PINGRESP ~20 s after it last heard from the
broker) depends on when its next utterance comes, which a loaded machine delays; that it published into the dead link
the relay counts, as it dropped the PUBLISH. What this asks of the code:
- what the edge published into the dead link (no PUBACK) is sent again on the next connection: the queue marks an
  entry sent only on its PUBACK (fails if the forwarder marks a publish sent without one: those wait for the 120 s
  resend and the edge's queue does not empty in time);
- central's acknowledgements of what it stored before and around the cut reach the edge through its session once it
  reconnects, so nothing is resent after the ack timeout (fails if the edge's session does not outlive its connection:
  SessionExpiryInterval 0);
- the edge's own work does not wait for the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.archive import Archive
from bridge.central import CentralIngest
from bridge.config import Config
from bridge.db import connect
from tests.bridge.test_edge_central import archived_ids, central_rows, queued, run_config, start_node
from tests.conftest import SHERPA_MODEL
from tests.support.broker import Mosquitto, free_port
from tests.support.central import (  # noqa: F401 (mqtt: the fixture, used by name)
    STATION,
    central_config,
    edge_config,
    mqtt_fixture,
    running,
    until,
)
from tests.support.relay import Relay

CUT_S = 20.0
ACK_TIMEOUT_S = 120.0  # longer than the test: an acknowledgement lost to the cut would show as an edge never emptied


def transcribed_ids(edge: Config) -> list[str]:
    with contextlib.closing(connect(edge.storage.database)) as conn, contextlib.suppress(sqlite3.OperationalError):
        return [r[0] for r in conn.execute("SELECT utterance_id FROM transcripts")]
    return []


def health(port: int) -> dict:
    """The edge's /healthz (503 while a fault is active is an answer too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def talking_edge(tmp_path: Path, broker: Mosquitto, relay: Relay, shared_audio: Path, web_port: int) -> Path:
    """`jingbao run --role edge` reaching the broker through the relay: two channels replaying real recordings in real
    time (spoken calls on one, read speech on the other, ~35 s each), recognised by the on-board model."""
    edge_config(tmp_path, broker)  # writes edge-<station>.yaml
    calls = sorted((shared_audio / "calls").glob("c00[1-6].wav"))
    read = sorted(shared_audio.glob("aishell3_*.wav"))[:7]
    channels = [{"id": cid, "name": name, "source": {"type": "file", "paths": [str(p) for p in paths], "realtime": True,
                                                        "gap": [1.5, 2.5]}}
                for cid, name, paths in (("ch-market", "市场保安", calls), ("ch-park", "公园巡逻", read))]  # fmt: skip
    return run_config(
        tmp_path, f"edge-{STATION}", channels=channels, dispatch={"enabled": False}, web={"port": web_port},
        asr={"engine": "sherpa", "sherpa_model": str(SHERPA_MODEL)},
        node={"station": STATION, "ack_timeout_s": ACK_TIMEOUT_S,
              "broker": {"host": relay.host, "port": relay.port, "client_id": f"node-{STATION}"}},
    )  # fmt: skip


async def test_an_edge_cut_off_while_its_channels_talk_catches_up_and_central_holds_each_utterance_once(
    tmp_path, mqtt, pg_url, shared_audio
):
    relay = Relay((mqtt.host, mqtt.port))
    await relay.start()

    def logs() -> tuple[str, str]:
        """The broker's log and the edge's, as far as they are written."""
        return mqtt.log(), (tmp_path / "edge.log").read_text(encoding="utf-8", errors="replace")

    def found_dead(since: list[int]) -> bool:
        """Both ends found the link dead since their logs were `since` long: the broker dropped the edge on its
        keepalive, the edge its connection for a PUBACK or a PINGRESP not come."""
        broker, node = (text[n:] for text, n in zip(logs(), since, strict=True))
        dropped, lost = f"Client node-{STATION} has exceeded timeout", f"node link to {relay.host}:{relay.port} down ("
        return dropped in broker and lost in node

    web_port = free_port()
    edge_file = talking_edge(tmp_path, mqtt, relay, shared_audio, web_port)
    edge = edge_config(tmp_path, mqtt)  # its storage paths, to read its database as another process would
    central = CentralIngest(central_config(tmp_path, mqtt, pg_url))
    process = None
    try:
        async with running(central):
            process = await start_node("edge", edge_file)
            # Cut as central has just stored a message and holds its acknowledgement for the next batch (ACK_DELAY_S):
            # that acknowledgement can reach the edge only through its session, once it is back. The edge has had the
            # PUBACK of every message it published (the relay has passed as many back; on a loaded machine one may
            # still be on its way, and the edge would wait for it instead of publishing on), so the next utterance is
            # published into the dead link, which it cannot tell from a live one until no PUBACK comes.
            await until("the edge archiving, recognising and forwarding",
                        lambda: central.stored["transcripts"] >= 2 and bool(central._acks.get(STATION))
                        and relay.sent["PUBLISH"] == relay.returned["PUBACK"], timeout=60)  # fmt: skip
            await relay.cut()
            cut_at, logged = time.monotonic(), [len(text) for text in logs()]
            archived_before, transcribed_before = len(archived_ids(edge)), len(transcribed_ids(edge))
            await asyncio.sleep(1.0)  # what the broker had taken before the cut may still be on its way to central
            at_central = central.stored.total()
            await asyncio.sleep(CUT_S - (time.monotonic() - cut_at))
            assert central.stored.total() == at_central, "something crossed the cut link"
            # the edge went on working, alone: its channels archived and its recogniser transcribed
            assert len(archived_ids(edge)) >= archived_before + 2 and len(transcribed_ids(edge)) >= transcribed_before + 2
            assert health(web_port)["forwarding"]["queued"] >= 4
            # the link comes back once both ends have found it dead on their own, as their logs say (not assumed)
            await until("the broker dropping the edge, the edge its connection", lambda: found_dead(logged), timeout=15)
            await relay.restore()
            restored_at = time.monotonic()
            await until("central receiving again", lambda: central.stored.total() > at_central, timeout=40)
            caught_up_s = time.monotonic() - restored_at
            # the channels play to their end, the last utterance is transcribed; then nothing is left to send
            await until("the edge's channels done, all transcribed and its queue empty",
                        lambda: health(web_port)["running"] == 0 and set(transcribed_ids(edge)) >= set(archived_ids(edge))
                        and queued(edge) == 0, timeout=90)  # fmt: skip
            await until("central's last acknowledgements sent", lambda: not central._acks, timeout=5)
            forwarding = health(web_port)["forwarding"]
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await relay.stop()
    archived, transcribed = archived_ids(edge), transcribed_ids(edge)
    utterances, texts = central_rows(pg_url)
    # counts in = archived = transcribed at the edge = stored at central, and each stored once
    assert len(archived) >= 10 and sorted(transcribed) == sorted(archived)
    assert sorted(utterances) == sorted(texts) == sorted(f"{STATION}.{i}" for i in archived)
    assert central.stored == {"utterances": len(archived), "transcripts": len(archived)} and not central.rejected
    # the link really broke: the edge published into it (the relay dropped a PUBLISH: no PUBACK could come), both ends
    # found it dead before it came back (above), and the edge connected again
    assert relay.dropped["PUBLISH"] >= 1
    assert relay.connections >= 2 and caught_up_s < 40
    # central's acknowledgements came through the edge's persistent session: nothing waited for the 120 s resend
    assert forwarding["resent"] == 0 and forwarding["acknowledged"] >= 2 * len(archived)
    with Archive(edge.storage, readonly=True) as archive:
        assert archive.verify().ok


@contextlib.asynccontextmanager
async def echo_through_relay() -> AsyncIterator[Relay]:
    """A relay in front of an echo server: what crosses it comes back."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1000):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    relay = Relay(server.sockets[0].getsockname()[:2])
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
        server.close()


async def test_the_relay_cuts_a_link_silently_or_with_resets_and_restores_it():
    async def connected() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(relay.host, relay.port)

    async def echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"ping")
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(reader.read(100), 0.5) == b"ping"
        return False

    async with echo_through_relay() as relay:
        before = await connected()
        assert await echoes(*before)
        await relay.cut()  # silent: nothing crosses, nothing is closed
        during = await connected()
        assert not await echoes(*before) and not await echoes(*during) and not before[0].at_eof()
        await relay.restore()  # the silenced connections are closed; new ones cross again
        for reader, _ in (before, during):
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(100), 2) == b""
        after = await connected()
        assert await echoes(*after)
        await relay.cut(silent=False)  # resets: closed at once, new ones refused
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(after[0].read(100), 2) == b""
        refused = await connected()
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(refused[0].read(100), 2) == b""
        await relay.restore()
        assert await echoes(*await connected())


async def test_the_relay_counts_the_mqtt_packets_a_client_sent_into_a_cut():
    publish = bytes([0x32, 0xC8, 0x01]) + bytes(200)  # QoS 1, a remaining length of 200 in two bytes
    async with echo_through_relay() as relay:
        reader, writer = await asyncio.open_connection(relay.host, relay.port)
        writer.write(b"\xc0\x00" + publish[:2])  # a PINGREQ, and a PUBLISH begun...
        assert await asyncio.wait_for(reader.readexactly(4), 2) == b"\xc0\x00" + publish[:2]  # ...crossed whole
        await relay.cut()
        for part in (publish[2:50], publish[50:] + b"\xc0\x00", publish[:1], publish[1:]):  # ...and ended in the cut
            writer.write(part)
            await asyncio.sleep(0.05)
        await until("the relay reading what was sent into the cut", lambda: sum(relay.dropped.values()) >= 3, 2)
        await asyncio.sleep(0.1)
        assert relay.dropped == {"PUBLISH": 2, "PINGREQ": 1}  # the one begun before the cut counted in both
        assert relay.sent == relay.returned == {"PINGREQ": 1, "PUBLISH": 1}
        await relay.restore()
        writer.close()
