"""OwnTracks intake: good fixes become positions, everything malformed is counted, nothing raises."""

from __future__ import annotations

import json

import pytest

from dispatch.positions import Position, PositionIntake
from dispatch.topics import OwnTracksTopic, StatusTopic, Topics

RESPONDERS = {"g-piju", "p-ou-yong"}
NOW = 1_700_000_060.0  # the intake's clock: the fixes below were taken a minute ago


def fix(**overrides) -> bytes:
    return json.dumps(
        {"_type": "location", "lat": 34.2716, "lon": 108.9836, "tst": 1_700_000_000, "acc": 12, **overrides}
    ).encode()


@pytest.fixture
def received() -> list[Position]:
    return []


@pytest.fixture
def intake(received: list[Position]) -> PositionIntake:
    return PositionIntake(RESPONDERS, received.append, devices={"ouyong/iphone": "p-ou-yong"}, max_age_s=300,
                          max_ahead_s=120, clock=lambda: NOW)  # fmt: skip


def test_location_becomes_position_of_the_responder(intake: PositionIntake, received: list[Position]) -> None:
    topic = Topics().parse("owntracks/g-piju/phone")
    assert topic == OwnTracksTopic("g-piju", "phone")
    position = intake.handle(topic, fix())
    assert position == Position("g-piju", 34.2716, 108.9836, 1_700_000_000.0, 12.0)
    assert received == [position] and intake.accepted == 1


def test_device_mapping_and_missing_accuracy(intake: PositionIntake, received: list[Position]) -> None:
    payload = json.loads(fix())
    del payload["acc"]
    position = intake.handle(OwnTracksTopic("ouyong", "iphone"), json.dumps(payload).encode())
    assert position is not None and position.responder_id == "p-ou-yong" and position.acc is None


def test_other_owntracks_types_are_ignored(intake: PositionIntake, received: list[Position]) -> None:
    assert intake.handle(OwnTracksTopic("g-piju", "phone"), b'{"_type": "lwt", "tst": 1}') is None
    assert intake.ignored == 1 and not received and not intake.rejected


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (b"[1, 2]", "bad_shape"),
        (fix(lat="34.27"), "bad_type"),
        (fix(lon=None), "bad_type"),
        (fix(tst=True), "bad_type"),
        (fix(lat=95.0), "out_of_range"),
        (fix(acc=-3), "out_of_range"),
        # dated ten years ahead, it would be "fresh" for ten years; taken an hour ago, it says nothing of now
        (fix(tst=NOW + 10 * 365 * 86400), "future"),
        (fix(tst=NOW + 121), "future"),
        (fix(tst=NOW - 3600), "stale"),
    ],
)
def test_malformed_payloads_are_counted_not_raised(
    intake: PositionIntake, received: list[Position], payload: bytes, reason: str
) -> None:
    assert intake.handle(OwnTracksTopic("g-piju", "phone"), payload) is None
    assert intake.rejected == {reason: 1} and not received


def test_a_phone_clock_a_little_ahead_or_a_fix_a_little_old_is_taken(intake: PositionIntake) -> None:
    for tst in (NOW + 119, NOW - 299):
        assert intake.handle(OwnTracksTopic("g-piju", "phone"), fix(tst=tst)) is not None


def test_unknown_responder_is_counted(intake: PositionIntake, received: list[Position]) -> None:
    assert intake.handle(OwnTracksTopic("stranger", "phone"), fix()) is None
    assert intake.rejected == {"unknown_responder": 1} and not received


def test_topics_parse_only_our_shapes() -> None:
    topics = Topics("jingbao")
    assert topics.parse(topics.ack("g-piju")).responder_id == "g-piju"
    assert topics.parse(topics.incident("INC-1")).incident_id == "INC-1"
    assert topics.parse("jingbao/acks") is None
    assert topics.parse("jingbao/acks/a/b") is None
    assert topics.parse("other/acks/g-piju") is None
    assert topics.parse("owntracks/only-user") is None
    with pytest.raises(ValueError, match="not usable"):
        topics.alert("a/b")
    assert Topics("site/a").parse("site/a/acks/x").responder_id == "x"


def test_status_topic_is_parsed_and_subscribed() -> None:
    topics = Topics("site/a")
    assert topics.status("g-piju") == "site/a/status/g-piju"
    assert topics.parse("site/a/status/g-piju") == StatusTopic("g-piju")
    assert "site/a/status/+" in topics.subscriptions
    assert topics.parse("site/a/status/g+piju") is None
