"""Responder positions from phones running OwnTracks: JSON on `owntracks/<user>/<device>`.

A location message is `{"_type": "location", "lat": .., "lon": .., "tst": <epoch s>, "acc": <m>, ...}`; other
message types (waypoints, transitions, cards, last-will) are ignored. The user name is the responder id unless the
config maps "user" or "user/device" to one. A fix is taken only when it was taken lately (`tst` no older than the
staleness limit, no further ahead than a phone's clock may be wrong): a fix dated in the future would otherwise
stay "fresh" for as long as its date says, and one from long ago says nothing of where the responder is now.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.logsafe import clip
from dispatch.topics import OwnTracksTopic

logger = logging.getLogger(__name__)

# An ack, a status or an OwnTracks fix is a few hundred bytes; anything much larger is refused before it is parsed.
MAX_PAYLOAD_BYTES = 16 * 1024


@dataclass(slots=True, frozen=True)
class Position:
    responder_id: str
    lat: float
    lon: float
    ts: float  # when the phone took the fix (OwnTracks `tst`), UTC epoch seconds
    acc: float | None = None  # accuracy radius in metres


class PayloadError(ValueError):
    """A message we cannot use; `reason` is the counter it is counted under."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def json_object(payload: bytes) -> dict[str, Any]:
    """An MQTT payload that must be one JSON object; PayloadError otherwise: `too_large` (over MAX_PAYLOAD_BYTES,
    not parsed), `bad_json` (not UTF-8 JSON, or nested too deep for the parser), `bad_shape` (not an object)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too_large", f"{len(payload)} bytes (at most {MAX_PAYLOAD_BYTES})")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError("bad_json", f"not JSON: {clip(e)}") from e
    except RecursionError as e:  # e.g. 50,000 `[`: the parser recurses once per level
        raise PayloadError("bad_json", "nested too deep") from e
    if not isinstance(data, dict):
        raise PayloadError("bad_shape", "not a JSON object")
    return data


def check_sender(data: dict[str, Any], responder_id: str) -> None:
    """A phone's message is about the responder its topic names (the ACL lets each phone write only its own); one
    whose payload names another is refused (`wrong_responder`) rather than read either way."""
    named = data.get("responder_id", responder_id)
    if named != responder_id:
        raise PayloadError("wrong_responder", f"names responder {named!r} on {responder_id!r}'s topic")


def parse_location(payload: bytes) -> tuple[float, float, float, float | None] | None:
    """OwnTracks JSON -> (lat, lon, tst, acc); None for a message that is not a location; PayloadError when bad."""
    data = json_object(payload)
    if data.get("_type") != "location":
        return None
    lat, lon, tst = _number(data, "lat"), _number(data, "lon"), _number(data, "tst")
    acc = _number(data, "acc") if data.get("acc") is not None else None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or tst <= 0 or (acc is not None and acc < 0):
        raise PayloadError("out_of_range", f"out of range: lat={lat} lon={lon} tst={tst} acc={acc}")
    return lat, lon, tst, acc


def check_fix_time(tst: float, now: float, *, max_age_s: float, max_ahead_s: float) -> None:
    """PayloadError (`stale`, `future`) unless the fix was taken within `max_age_s` before `now`, or at most
    `max_ahead_s` after it (a phone's clock running ahead)."""
    if tst > now + max_ahead_s:
        raise PayloadError("future", f"fix dated {tst - now:.0f} s ahead of our clock")
    if tst < now - max_age_s:
        raise PayloadError("stale", f"fix taken {now - tst:.0f} s ago")


def _number(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    # bool is an int in Python, but `true` is no latitude.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError("bad_type", f"{key} must be a number, got {value!r}")
    return float(value)


class PositionIntake:
    """Turns OwnTracks messages into `Position`s for known responders; everything else is logged and counted."""

    def __init__(
        self,
        responder_ids: Collection[str],
        on_position: Callable[[Position], None],
        devices: Mapping[str, str] | None = None,
        *,
        max_age_s: float = 300.0,
        max_ahead_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._responder_ids = frozenset(responder_ids)
        self._on_position = on_position
        self._devices = dict(devices or {})  # "user/device" or "user" -> responder id
        self._max_age_s = max_age_s
        self._max_ahead_s = max_ahead_s
        self._clock = clock
        self.accepted = 0
        self.ignored = 0
        self.rejected: Counter[str] = Counter()

    def responder_for(self, topic: OwnTracksTopic) -> str | None:
        rid = self._devices.get(f"{topic.user}/{topic.device}") or self._devices.get(topic.user) or topic.user
        return rid if rid in self._responder_ids else None

    def handle(self, topic: OwnTracksTopic, payload: bytes) -> Position | None:
        try:
            fix = parse_location(payload)
            if fix is not None:
                check_fix_time(fix[2], self._clock(), max_age_s=self._max_age_s, max_ahead_s=self._max_ahead_s)
        except PayloadError as e:
            return self._reject(e.reason, topic, str(e))
        if fix is None:
            self.ignored += 1
            return None
        responder_id = self.responder_for(topic)
        if responder_id is None:
            return self._reject("unknown_responder", topic, "no responder for this user/device")
        position = Position(responder_id, *fix)
        self._on_position(position)
        self.accepted += 1
        return position

    def _reject(self, reason: str, topic: OwnTracksTopic, message: str) -> None:
        self.rejected[reason] += 1
        logger.warning("owntracks/%s/%s rejected (%s): %s", clip(topic.user), clip(topic.device), reason, clip(message))
        return None
