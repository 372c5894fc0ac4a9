"""What crosses from a station's edge box to the central tier (issue 13), and the MQTT connection it crosses on.

Topics are built and parsed in dispatch/topics.py (`Topics.node(station, kind)`); the payloads are built and parsed
here, on both sides, so the two cannot drift apart. Each is versioned JSON (`"v": 1`; a receiver refuses a version
it does not know, and ignores fields it does not know, so an edge may add one before central reads it):

  <prefix>/nodes/<station>/utterances   {"v", "station", "utterance": the archive row (bridge.archive's columns,
                                         hash chain included), "audio": the file's bytes in base64 or null,
                                         "audio_omitted": why it is null ("" when it is not)}
  <prefix>/nodes/<station>/transcripts  {"v", "station", "utterance_id", "channel", "start_ms", "version": when the
                                         edge stored this transcript (epoch s; a re-transcription is newer),
                                         "transcript": asr.transcript.Transcript.to_dict()}
  both also carry "entry": the edge's forward_queue entry (an int; absent from an edge before end-to-end acks),
  which central names back when it has stored the message:
  <prefix>/nodes/<station>/stored       central -> the edge: {"v", "station", "entries": [{"entry", "kind",
                                         "utterance_id", "outcome": "stored" | "repeat" | "rejected"}, ...]}, a batch
  <prefix>/nodes/<station>/partials     {"v", "station", "utterance_id", "channel", "start_ms", "heard_ms": when the
                                         partial was taken, "paused": the speaker had paused, "settled": and the
                                         pause went on (optional), "transcript"}: an edge
                                         leaving dispatch to central sends its partial transcripts, QoS 0, not queued
                                         and never stored: central's provisional alerts (初报) read them, and a lost
                                         one costs only that the final decides
  <prefix>/nodes/<station>/channels     {"v", "station", "channel", "talking", "at_ms"}: an edge's channel keying up
                                         or down, QoS 0, for central's console (its channel lights up while someone
                                         talks); never stored

Repeats are harmless by their ids: an utterance is (station, utterance id), a transcript (station, utterance id,
version); central stores the first copy of each and a transcript only over an older version.

Audio travels inline, bounded by MAX_AUDIO_BYTES (docs/deployment.md says why inline rather than fetched from the
edge): a 60 s Opus utterance is ~200 kB. A bigger file (a WAV written when the encoder failed) or one the edge cannot
read goes without its audio, and `audio_omitted` says why, rather than holding up everything behind it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from asr.transcript import Transcript
from bridge.archive import EXTENSIONS, SAFE_NAME, ArchivedUtterance
from bridge.backoff import Backoff
from bridge.config import STATION_ID, BrokerConfig
from dispatch.mqtt import tls_context
from dispatch.topics import CHANNELS, PARTIALS, RECOGNISED, STORED

logger = logging.getLogger(__name__)

VERSION = 1
# ~930 kB once in base64: a message with its metadata stays under 1 MB, the default largest packet of EMQX (the
# clustered broker for production); mosquitto takes up to 256 MB
MAX_AUDIO_BYTES = 700_000
# How long the broker keeps a node's session (its subscriptions and the messages queued for it) while it is away
SESSION_EXPIRY_S = 7 * 24 * 3600
_STATION = re.compile(STATION_ID)
NO_MATCHING_SUBSCRIBERS = 0x10  # an MQTT 5 PUBACK's "accepted, but nobody will get it"


OUTCOMES = ("stored", "repeat", "rejected")  # committed now, held already, or refused for good (not worth resending)
MAX_ACKED = 1000  # entries in one acknowledgement: central batches far fewer (bridge/central.py)
MAX_ENTRY = 2**63 - 1  # a queue entry is a SQLite integer: a bigger one would fail the edge's DELETE, not just miss


class NodeMessageError(ValueError):
    """A payload that is not a node message this version can store (the reason is safe to log, clipped)."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # ignore: a newer edge may add a field

    v: int
    station: str = Field(pattern=STATION_ID)


class _Forwarded(_Message):
    entry: int | None = Field(None, ge=1, le=MAX_ENTRY)  # the edge's queue entry, named back in central's acknowledgement


class UtteranceMessage(_Forwarded):
    utterance: ArchivedUtterance  # each field checked for its type (pydantic validates the dataclass)
    audio: str | None = Field(None, max_length=(MAX_AUDIO_BYTES + 2) // 3 * 4)
    audio_omitted: str = Field("", max_length=500)
    # whether its edge dispatches what it hears itself (node.dispatch: edge), so that a transcript made elsewhere (the
    # recognition role, bridge/recognition_node.py) says so as the edge's own would; None from an older edge
    dispatched_at_edge: bool | None = Field(None, strict=True)

    def audio_bytes(self) -> bytes | None:
        return None if self.audio is None else base64.b64decode(self.audio, validate=True)


class TranscriptMessage(_Forwarded):
    utterance_id: str = Field(pattern=SAFE_NAME.pattern)
    channel: str = Field(pattern=SAFE_NAME.pattern)
    start_ms: int
    version: float = Field(allow_inf_nan=False)  # compared with the stored one's: NaN would never be replaced
    transcript: Transcript  # each field checked for its type, words and keywords too
    # the edge's SOS desk took it (a hot microphone's words, an emergency phrase: dispatch/sos.py): the SOS is the
    # edge's, and central's dispatcher does not read it as a report of its own (absent from an older edge's: False)
    sos: bool = Field(False, strict=True)
    # the edge dispatches what its channels hear itself (node.dispatch: edge): central, dispatching it too, would alert
    # every responder twice (absent from an older edge's: False)
    dispatched_at_edge: bool = Field(False, strict=True)
    # the recognition worker that made it (bridge/recognition_node.py); "" from an edge. Central passes such a
    # transcript on to the utterance's edge, which then need not recognise it itself
    recognised_by: str = Field("", max_length=100)


class PartialMessage(_Message):
    utterance_id: str = Field(pattern=SAFE_NAME.pattern)
    channel: str = Field(pattern=SAFE_NAME.pattern)
    start_ms: int
    heard_ms: int  # when the partial was taken (the utterance goes on)
    paused: bool = Field(strict=True)
    settled: bool = Field(False, strict=True)  # an older edge leaves it out
    transcript: Transcript


class ChannelMessage(_Message):
    channel: str = Field(pattern=SAFE_NAME.pattern)
    talking: bool = Field(strict=True)
    at_ms: int  # when it changed


class Acked(BaseModel):
    # strict: an entry "1" or 1.0 is not the edge's entry 1, whose acknowledgement forgets it
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    entry: int = Field(ge=1, le=MAX_ENTRY)
    kind: str = Field(pattern="^(utterances|transcripts)$")
    utterance_id: str = Field(max_length=100)  # for the log ("" when central could not read it)
    outcome: str = Field(pattern=f"^({'|'.join(OUTCOMES)})$")


class StoredMessage(_Message):
    entries: list[Acked] = Field(max_length=MAX_ACKED)


NodeMessage = UtteranceMessage | TranscriptMessage | PartialMessage | ChannelMessage  # what an edge sends central


def central_id(station: str, local_id: str) -> str:
    """What the central tier calls a station's utterance (or channel): ids are unique within a station only
    (two stations' utterances can start in the same millisecond), so central's are the station's ids qualified."""
    return f"{station}.{local_id}"


def station_of(central: str) -> str:
    """The station a central id (central_id's) belongs to: a station id has no "." (bridge.config.STATION_ID)."""
    return central.split(".", 1)[0]


def utterance_payload(
    station: str, row: ArchivedUtterance, audio: bytes | None, omitted: str = "", *, entry: int | None = None,
    dispatched_at_edge: bool = False,
) -> bytes:
    if audio is not None and len(audio) > MAX_AUDIO_BYTES:
        audio, omitted = None, f"{len(audio)} bytes, over the {MAX_AUDIO_BYTES} bytes a message carries"
    body = {"v": VERSION, "station": station, "entry": entry, "utterance": row.to_dict(),
            "audio": None if audio is None else base64.b64encode(audio).decode(), "audio_omitted": omitted,
            "dispatched_at_edge": dispatched_at_edge}  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


def transcript_payload(
    station: str, row: dict[str, Any], transcript: dict[str, Any], *, entry: int | None = None, sos: bool = False,
    dispatched_at_edge: bool = False, recognised_by: str = "",
) -> bytes:
    """`row`: the edge's transcripts row (utterance_id, channel, start_ms, created_at); `transcript`: its
    Transcript.to_dict(); `sos`, `dispatched_at_edge`, `recognised_by`: see TranscriptMessage."""
    body = {"v": VERSION, "station": station, "entry": entry, "utterance_id": row["utterance_id"], "channel": row["channel"],
            "start_ms": row["start_ms"], "version": row["created_at"], "transcript": transcript, "sos": sos,
            "dispatched_at_edge": dispatched_at_edge, "recognised_by": recognised_by}  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


def partial_payload(station: str, utterance_id: str, channel: str, start: float, heard: float, paused: bool,
                    transcript: dict[str, Any], *, settled: bool = False) -> bytes:  # fmt: skip
    body = {"v": VERSION, "station": station, "utterance_id": utterance_id, "channel": channel,
            "start_ms": round(start * 1000), "heard_ms": round(heard * 1000), "paused": paused, "settled": settled,
            "transcript": transcript}  # fmt: skip
    return json.dumps(body, ensure_ascii=False).encode()


def channel_payload(station: str, channel: str, talking: bool, at: float) -> bytes:
    body = {"v": VERSION, "station": station, "channel": channel, "talking": talking, "at_ms": round(at * 1000)}
    return json.dumps(body, ensure_ascii=False).encode()


def stored_payload(station: str, entries: list[Acked]) -> bytes:
    body = {"v": VERSION, "station": station, "entries": [e.model_dump() for e in entries]}
    return json.dumps(body, ensure_ascii=False).encode()


def entry_of(payload: bytes) -> int | None:
    """The queue entry a payload names, read as best it can be from one that `parse` refused (None: none to read),
    so that central can acknowledge a refusal too, and the edge stops resending what will never be stored."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    entry = data.get("entry") if isinstance(data, dict) else None
    return entry if isinstance(entry, int) and not isinstance(entry, bool) and 1 <= entry <= MAX_ENTRY else None


def valid_station(station: str) -> bool:
    return bool(_STATION.match(station))


def parse(kind: str, station: str, payload: bytes) -> NodeMessage | StoredMessage:
    """A received payload of `kind` (utterances, transcripts, partials, channels, stored) on `station`'s topic,
    checked: the right version, the topic's station, every field of the right type, the audio matching the row's
    sha256."""
    if not valid_station(station):
        raise NodeMessageError(f"station id {station!r} is not one a node may have")
    model = {"utterances": UtteranceMessage, "transcripts": TranscriptMessage, PARTIALS: PartialMessage,
             CHANNELS: ChannelMessage, STORED: StoredMessage, RECOGNISED: TranscriptMessage}[kind]  # fmt: skip
    try:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise NodeMessageError(f"not a version {VERSION} node message")
        message = model.model_validate(data)
        if message.station != station:
            raise NodeMessageError(f"station {message.station!r} published under {station!r}'s topic")
        if isinstance(message, UtteranceMessage):
            _check_utterance(message)
    except NodeMessageError:
        raise
    except (ValueError, TypeError, KeyError, ValidationError) as e:  # bad JSON, base64, field types, row fields
        raise NodeMessageError(f"{type(e).__name__}: {e}") from e
    return message


def _check_utterance(message: UtteranceMessage) -> None:
    row = message.utterance
    if not SAFE_NAME.match(row.id) or not SAFE_NAME.match(row.channel) or row.format not in EXTENSIONS:
        raise NodeMessageError("utterance id, channel or format is not one the archive makes")
    audio = message.audio_bytes()
    if audio is not None and hashlib.sha256(audio).hexdigest() != row.sha256:
        raise NodeMessageError(f"utterance {row.id}: its audio does not match its sha256")


class NodeLink:
    """One node's MQTT 5 connection to the broker between nodes, with a persistent session (clean start off, the
    session kept SESSION_EXPIRY_S while away), reconnecting with back-off. Not dispatch/mqtt.MqttLink: that one is
    MQTT 3.1.1 with the dispatcher's will and subscriptions, and acknowledges a message as it arrives; here a
    receiver acknowledges (PUBACK) only once it has stored the message, so a message central has not stored is
    sent again by the broker after a crash or a lost connection."""

    def __init__(self, broker: BrokerConfig, client_id: str, *, backoff: Backoff | None = None, timeout: float = 10.0) -> None:
        self._broker = broker
        self._client_id = client_id
        self._password = broker.read_password()
        self._tls = tls_context(broker.tls.ca_file, broker.tls.cert_file, broker.tls.key_file) if broker.tls else None
        self._backoff = backoff or Backoff()
        self._timeout = timeout
        self.address = f"{broker.host}:{broker.port}"
        self.connects = 0
        self.connected_since: float | None = None  # None while not connected (central's /healthz: bridge/central_health.py)
        self.down_since: float = time.time()  # when it last lost its connection, or was made

    @asynccontextmanager
    async def _connect(self, *, manual_ack: bool) -> AsyncIterator[aiomqtt.Client]:
        connect = Properties(PacketTypes.CONNECT)
        connect.SessionExpiryInterval = SESSION_EXPIRY_S
        # A new client each time: messages left unacknowledged in an old one's queue must not be acknowledged on the
        # new connection (their message ids mean other messages there); the broker sends them again instead.
        client = aiomqtt.Client(
            self._broker.host, self._broker.port, identifier=self._client_id, username=self._broker.username,
            password=self._password, tls_context=self._tls, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
            properties=connect, timeout=self._timeout, keepalive=10,
        )  # fmt: skip
        client.pending_calls_threshold = 1000  # a forwarder keeps a window of publishes in flight on purpose
        client._client.manual_ack_set(manual_ack)  # aiomqtt does not expose paho's manual acks
        async with client:
            self._backoff.reset()
            self.connects += 1
            self.connected_since = time.time()
            # paho reports a lost connection at once, while the session may be busy for long (central holding a
            # message PostgreSQL cannot take): `connected` says so from then, not when the session ends
            client._disconnected.add_done_callback(lambda _: self._lost())
            logger.info("node link connected to %s as %s", self.address, self._client_id)
            try:
                yield client
            finally:
                self._lost()
                lost = client._disconnected
                if lost.done() and not lost.cancelled():
                    lost.exception()  # seen: the session has raised its own error for it

    @property
    def connected(self) -> bool:
        return self.connected_since is not None

    def _lost(self) -> None:
        if self.connected_since is not None:
            self.connected_since, self.down_since = None, time.time()

    def to_dict(self) -> dict[str, Any]:
        """Its state as /healthz shows it: `since` is when it connected, or when it was last lost."""
        return {"address": self.address, "connected": self.connected, "connects": self.connects,
                "since": self.connected_since or self.down_since}  # fmt: skip

    def publisher(self, client: aiomqtt.Client) -> Publisher:
        return Publisher(client, self._timeout)

    async def run(self, session: Callable[[aiomqtt.Client], Awaitable[None]], *, manual_ack: bool = False) -> None:
        """Run `session(client)` on every connection until cancelled; a lost connection (or refused login) is
        retried with back-off."""
        while True:
            try:
                async with self._connect(manual_ack=manual_ack) as client:
                    await session(client)
                    return
            except aiomqtt.MqttError as e:
                delay = self._backoff.next_delay()
                logger.warning("node link to %s down (%s); reconnecting in %.1f s", self.address, e, delay)
                await asyncio.sleep(delay)


class Refused(Exception):
    """The broker acknowledged a publish with a reason code that means it went nowhere (MQTT 5: not authorized by
    the ACL, no subscriber yet); it is sent again later."""

    def __init__(self, reason: ReasonCode) -> None:
        super().__init__(f"the broker answered {reason} (0x{reason.value:02x})")
        self.reason = reason


class Publisher:
    """QoS 1 publishes on a NodeLink's client that return only once the broker has taken the message: its PUBACK
    arrived and its MQTT 5 reason code says a subscriber will get it. aiomqtt's publish() drops that code, and a
    broker acknowledges a message for a topic the ACL forbids, or one nobody subscribes to yet (the central tier
    before its first connection), just the same; the forwarder must keep those queued."""

    def __init__(self, client: aiomqtt.Client, timeout: float) -> None:
        self._paho = client._client
        self._lost = client._disconnected  # done when the connection is gone: no PUBACK will come on it
        self._timeout = timeout
        self._waiting: dict[int, asyncio.Future[ReasonCode]] = {}
        # Replaces aiomqtt's callback, which only wakes aiomqtt's own publish(): node links publish through here only.
        self._paho.on_publish = self._on_publish

    def _on_publish(self, _client: object, _userdata: object, mid: int, reason: ReasonCode, _properties: object) -> None:
        future = self._waiting.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reason)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Raises aiomqtt.MqttError when the connection cannot take it or no PUBACK came in time, Refused when one
        came that refuses it."""
        info = self._paho.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, "could not publish")
        future = self._waiting[info.mid] = asyncio.get_running_loop().create_future()  # PUBACK comes on a later read
        try:
            await asyncio.wait((future, self._lost), timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting.pop(info.mid, None)
        if not future.done():
            raise aiomqtt.MqttError("connection lost" if self._lost.done() else f"no PUBACK within {self._timeout} s")
        reason = future.result()
        if reason.is_failure or reason.value == NO_MATCHING_SUBSCRIBERS:
            raise Refused(reason)

    async def until_lost(self) -> None:
        """Raises aiomqtt.MqttError once the connection is gone: how a session that only publishes now and then learns
        it at once, not at its next publish."""
        await asyncio.wait({self._lost})
        raise aiomqtt.MqttError("connection lost")

    def publish_at_most_once(self, topic: str, payload: bytes) -> bool:
        """QoS 0, handed to the connection and not waited for (no PUBACK comes); False when it could not take it."""
        return self._paho.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS


def ack(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """PUBACK a message received on a manual-ack NodeLink: it is stored."""
    client._client.ack(message.mid, message.qos)
