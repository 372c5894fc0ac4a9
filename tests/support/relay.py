"""A TCP relay between a node and its broker that a test (or bench/cluster.py) can cut and restore: a real network
cut, seen by both ends only through their sockets, not a mock of either.

    relay = Relay(("127.0.0.1", broker.port))
    await relay.start()          # the node connects to relay.port instead of the broker's
    await relay.cut()            # the link goes dead
    relay.dropped["PUBLISH"]     # MQTT packets the node sent into the dead link, by type (and .sent, .returned);
                                 # a PUBLISH at QoS 0 (live messages, no PUBACK) is counted as "PUBLISH QoS 0"
    await relay.restore()        # and comes back

What a cut looks like depends on `silent`:
- silent (the default), as a pulled cable or a 4G router losing its signal: established connections stay open and
  carry nothing either way, so each end finds out only from its own timeouts (MQTT keepalive, a PUBACK that never
  comes); new connections are accepted and carry nothing either (a connect that gets no answer, until the client's
  own timeout). At restore every connection made before or during the cut is closed: by then TCP would have given
  up on them too, and resuming a stream whose bytes were dropped would corrupt it, which no real network does.
- not silent, as a router that answers with resets: established connections are closed at once, new ones closed as
  soon as they are accepted (a refused connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter

CHUNK = 65536
# MQTT control packet types by the high nibble of a packet's first byte (MQTT 3.1.1 and 5)
PACKET_TYPES = ("RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE",
                "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH")  # fmt: skip


class _Packets:
    """One direction of a connection told apart into MQTT control packets by their fixed headers (type, remaining
    length), to count them: the relay itself only copies bytes. A packet is counted in each counter that a part of it
    went to (crossed, or dropped by a cut)."""

    def __init__(self) -> None:
        self._header = bytearray()  # the fixed header read so far of the packet begun
        self._left = 0  # bytes of the current packet's body still to come
        self._kind = ""  # the current packet's type, a PUBLISH at QoS 0 apart ("PUBLISH QoS 0": no PUBACK answers it)
        self._counted: list[Counter[str]] = []  # where the current packet is counted already

    def feed(self, data: bytes, into: Counter[str]) -> None:
        i = 0
        while i < len(data):
            if self._left:
                step = min(self._left, len(data) - i)
                self._left -= step
            else:
                if not self._header:
                    kind, qos = PACKET_TYPES[data[i] >> 4], (data[i] >> 1) & 3
                    self._kind, self._counted = f"{kind} QoS 0" if kind == "PUBLISH" and qos == 0 else kind, []
                self._header.append(data[i])
                step = 1
                if len(self._header) > 1 and not self._header[-1] & 0x80:  # the remaining length's last byte
                    self._left = sum((b & 0x7F) << (7 * k) for k, b in enumerate(self._header[1:]))
                    self._header.clear()
            i += step
            if not any(c is into for c in self._counted):
                into[self._kind] += 1
                self._counted.append(into)


class Relay:
    """Listens on 127.0.0.1:`port` (a free one by default) and pipes each connection to `target`."""

    def __init__(self, target: tuple[str, int], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self.host = host
        self.port = port
        self.is_cut = False
        self.connections = 0  # accepted so far, for a test to see that its node reconnected
        # MQTT packets by type (a part of one is enough): those clients sent that crossed, those that came back to
        # them, and those of clients that were dropped, by a cut (what a node sent into a dead link) or a side closing
        self.sent: Counter[str] = Counter()
        self.returned: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._silent = True
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()  # both sides of every live connection
        self._dead: set[asyncio.StreamWriter] = set()  # those that went silent in a cut: closed at restore

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, family=socket.AF_INET)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._close(self._open)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def cut(self, *, silent: bool = True) -> None:
        """From now on nothing crosses; without `silent`, every connection is closed as well."""
        self.is_cut, self._silent = True, silent
        if silent:
            self._dead |= self._open
        else:
            self._close(self._open)

    async def restore(self) -> None:
        """Connections are relayed again; those the cut silenced are closed (their ends reconnect)."""
        self._close(self._dead)
        self._dead.clear()
        self.is_cut = False

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.is_cut and not self._silent:
            client_writer.transport.abort()  # refused
            return
        try:
            broker_reader, broker_writer = await asyncio.open_connection(*self.target)
        except OSError:  # the broker itself is down: the node sees that as it would without the relay
            client_writer.transport.abort()
            return
        pair = {client_writer, broker_writer}
        self._open |= pair
        if self.is_cut:  # accepted during a silent cut: it never carries a byte
            self._dead |= pair
        try:
            await asyncio.gather(self._pipe(client_reader, broker_writer, self.sent, self.dropped),
                                 self._pipe(broker_reader, client_writer, self.returned, Counter()))  # fmt: skip
        finally:
            self._close(pair - self._dead)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, crossed: Counter[str], dropped: Counter[str]
    ) -> None:
        """Copy until either side closes; the bytes of a silenced connection are read and dropped (a dead network
        does not push back on the sender until its TCP window fills, and then only by stalling it). Its MQTT packets
        are counted in `crossed` or `dropped`."""
        packets = _Packets()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                if writer in self._dead or writer.is_closing():
                    packets.feed(data, dropped)
                    continue
                packets.feed(data, crossed)
                writer.write(data)
                await writer.drain()
        # One side closed: the other sees it too, as its TCP stack would see the FIN; not across a cut, where it is
        # closed at restore (a broker must not learn from the relay that a client it cannot hear has given up).
        if writer not in self._dead:
            self._close({writer})

    def _close(self, writers: set[asyncio.StreamWriter]) -> None:
        for writer in list(writers):
            self._open.discard(writer)
            if not writer.is_closing():
                writer.transport.abort()  # no FIN handshake to wait for: the other end sees a reset
