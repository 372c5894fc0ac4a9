"""Every MQTT topic jingbao uses, built and parsed here and nowhere else.

Published by jingbao (under the configured prefix, "jingbao" by default):
  <prefix>/alerts/<responder_id>   QoS 1 alert to one responder (persistent sessions: delivered when the phone returns);
                                   `kind` alert | update | retraction (a provisional alert confirmed, moved or
                                   withdrawn by its final transcript: dispatch/alerts.py)
  <prefix>/tasks/<responder_id>    QoS 1 a task sent to one responder (dispatch/tasks.py); `kind` task | reminder |
                                   follow_up | cancelled, with the task as his phone shows it
  <prefix>/incidents/<incident_id> retained current state of an incident
  <prefix>/events                  {type: new|update|end, before, after} for consoles
  <prefix>/available               retained "online" / "offline" (the last will)
Subscribed:
  <prefix>/acks/<responder_id>     {incident_id, status?: ack|on_scene|declined}; an ack (or on_scene) makes the
                                   responder busy on that incident until it ends; only from one alerted for it
  <prefix>/status/<responder_id>   {status: available|busy|off_duty} from the responder's phone, not retained (the
                                   service keeps statuses itself); overrides what an ack made it
  owntracks/<user>/<device>        OwnTracks JSON (phone apps publish here, whatever our prefix)
Between nodes (issue 13: a station's edge box -> the central tier; payloads in bridge/nodes.py):
  <prefix>/nodes/<station>/utterances   QoS 1 each archived utterance of that station: its row and audio
  <prefix>/nodes/<station>/transcripts  QoS 1 each transcript (again when re-transcribed: a newer version)
  <prefix>/nodes/<station>/stored       QoS 1 central -> that station's edge: the queue entries central has committed
                                        (or refused for good), so the edge may forget them

Who may publish and read which of these on the broker is the ACL `jingbao broker` generates (dispatch/broker_access.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ID = re.compile(r"^[A-Za-z0-9_.@-]+$")


@dataclass(slots=True, frozen=True)
class AckTopic:
    responder_id: str


@dataclass(slots=True, frozen=True)
class StatusTopic:
    responder_id: str


@dataclass(slots=True, frozen=True)
class OwnTracksTopic:
    user: str
    device: str


@dataclass(slots=True, frozen=True)
class AlertTopic:
    responder_id: str


@dataclass(slots=True, frozen=True)
class IncidentTopic:
    incident_id: str


@dataclass(slots=True, frozen=True)
class NodeTopic:
    station: str
    kind: str  # one of NODE_KINDS or LIVE_NODE_KINDS


@dataclass(slots=True, frozen=True)
class StoredTopic:
    station: str  # the edge whose entries central acknowledges


@dataclass(slots=True, frozen=True)
class RecognisedTopic:
    station: str  # the edge told of a transcript a recognition worker made of one of its utterances


TRANSCRIPTS = "transcripts"  # an edge forwards them; a recognition worker publishes those it made (bridge/recognition_node.py)
NODE_KINDS = ("utterances", TRANSCRIPTS)  # forwarded: stored at central and acknowledged to the edge
PARTIALS = "partials"  # an edge's partial transcripts, for central's provisional alerts: live only, never stored
CHANNELS = "channels"  # an edge's channels keying up and down, for central's console: live only, never stored
LIVE_NODE_KINDS = (PARTIALS, CHANNELS)  # QoS 0, sent at once: what they say is worth nothing later
STORED = "stored"  # the last level of central's end-to-end acknowledgements to an edge
RECOGNISED = "recognised"  # ... and of a recognition worker's transcripts central passes on to the edge
ParsedTopic = AckTopic | StatusTopic | OwnTracksTopic | AlertTopic | IncidentTopic | NodeTopic | StoredTopic | RecognisedTopic


@dataclass(slots=True, frozen=True)
class Topics:
    prefix: str = "jingbao"

    def alert(self, responder_id: str) -> str:
        return f"{self.prefix}/alerts/{_checked(responder_id)}"

    def task(self, responder_id: str) -> str:
        return f"{self.prefix}/tasks/{_checked(responder_id)}"

    def ack(self, responder_id: str) -> str:
        return f"{self.prefix}/acks/{_checked(responder_id)}"

    def status(self, responder_id: str) -> str:
        return f"{self.prefix}/status/{_checked(responder_id)}"

    def incident(self, incident_id: str) -> str:
        return f"{self.prefix}/incidents/{_checked(incident_id)}"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    def node(self, station: str, kind: str) -> str:
        """What an edge publishes to central: `kind` is one of NODE_KINDS or LIVE_NODE_KINDS."""
        if kind not in (*NODE_KINDS, *LIVE_NODE_KINDS):
            raise ValueError(f"not a kind of node message: {kind!r}")
        return f"{self.prefix}/nodes/{_checked(station)}/{kind}"

    def node_stored(self, station: str) -> str:
        """Where central acknowledges to `station`'s edge what it has stored."""
        return f"{self.prefix}/nodes/{_checked(station)}/{STORED}"

    def node_recognised(self, station: str) -> str:
        """Where central passes a recognition worker's transcript of `station`'s utterance on to its edge."""
        return f"{self.prefix}/nodes/{_checked(station)}/{RECOGNISED}"

    @property
    def node_subscriptions(self) -> tuple[str, ...]:
        """What the central tier subscribes to: every station's utterances and transcripts."""
        return tuple(f"{self.prefix}/nodes/+/{kind}" for kind in NODE_KINDS)

    def node_live(self, kind: str) -> str:
        """Every station's live messages of `kind` (LIVE_NODE_KINDS): central subscribes with QoS 0, none kept."""
        if kind not in LIVE_NODE_KINDS:
            raise ValueError(f"not a kind of live node message: {kind!r}")
        return f"{self.prefix}/nodes/+/{kind}"

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """What the dispatcher subscribes to: every responder's acks and status, and every OwnTracks device."""
        return (f"{self.prefix}/acks/+", f"{self.prefix}/status/+", "owntracks/+/+")

    def parse(self, topic: str) -> ParsedTopic | None:
        """A topic -> its typed form; None for anything that is not one of ours (or has an unusable id)."""
        levels = topic.split("/")
        if len(levels) == 3 and levels[0] == "owntracks":
            user, device = levels[1], levels[2]
            return OwnTracksTopic(user, device) if user and device else None
        head = self.prefix.split("/")
        if levels[: len(head)] != head:
            return None
        if len(levels) == len(head) + 3 and levels[len(head)] == "nodes":
            station, kind = levels[len(head) + 1], levels[len(head) + 2]
            if not _ID.match(station):
                return None
            if kind == STORED:
                return StoredTopic(station)
            if kind == RECOGNISED:
                return RecognisedTopic(station)
            return NodeTopic(station, kind) if kind in (*NODE_KINDS, *LIVE_NODE_KINDS) else None
        if len(levels) != len(head) + 2:
            return None
        kind, ident = levels[len(head)], levels[len(head) + 1]
        if not _ID.match(ident):
            return None
        match kind:
            case "acks":
                return AckTopic(ident)
            case "status":
                return StatusTopic(ident)
            case "alerts":
                return AlertTopic(ident)
            case "incidents":
                return IncidentTopic(ident)
        return None


def _checked(ident: str) -> str:
    # A "/" "+" or "#" inside an id would publish to (or subscribe) the wrong topic.
    if not _ID.match(ident):
        raise ValueError(f"not usable in an MQTT topic: {ident!r}")
    return ident
