"""Responder positions from phones running OwnTracks: JSON on `owntracks/<user>/<device>`.

A location message is `{"_type": "location", "lat": .., "lon": .., "tst": <epoch s>, "acc": <m>, ...}`; other
message types (waypoints, transitions, cards, last-will) are ignored. The user name is the responder id unless the
config maps "user" or "user/device" to one.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from dispatch.topics import OwnTracksTopic

logger = logging.getLogger(__name__)


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
    """An MQTT payload that must be one JSON object; PayloadError (bad_json, bad_shape) otherwise."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PayloadError("bad_json", f"not JSON: {e}") from e
    if not isinstance(data, dict):
        raise PayloadError("bad_shape", "not a JSON object")
    return data


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
    ) -> None:
        self._responder_ids = frozenset(responder_ids)
        self._on_position = on_position
        self._devices = dict(devices or {})  # "user/device" or "user" -> responder id
        self.accepted = 0
        self.ignored = 0
        self.rejected: Counter[str] = Counter()

    def responder_for(self, topic: OwnTracksTopic) -> str | None:
        rid = self._devices.get(f"{topic.user}/{topic.device}") or self._devices.get(topic.user) or topic.user
        return rid if rid in self._responder_ids else None

    def handle(self, topic: OwnTracksTopic, payload: bytes) -> Position | None:
        try:
            fix = parse_location(payload)
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
        logger.warning("owntracks/%s/%s rejected (%s): %s", topic.user, topic.device, reason, message)
        return None
