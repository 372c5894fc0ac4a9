"""bench/loadgen.py without a service: the timelines talk the share of the time asked for, staggered or in a burst,
their audio is the transmissions where they are keyed, and messages are attributed to the calls they are about."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from bench.loadgen import (
    FRAME,
    SAMPLE_RATE,
    ChannelAudio,
    Clip,
    Message,
    Utterance,
    assign,
    first_mentions,
    first_message_per_call,
    first_wave_alerts,
    plan,
    talk_share,
)


def clip(name: str, seconds: float, incident: str = "fight", value: int = 1000) -> Clip:
    n = int(seconds * SAMPLE_RATE)
    return Clip(name, incident, np.full(n, value, np.int16), n - SAMPLE_RATE // 2)


CALLS = [clip(f"c{i:03d}", 3 + i % 3) for i in range(6)] + [clip("c099", 3, "none")]
REAL = [clip(f"r{i}", 2 + i % 4, "") for i in range(8)]


def test_channels_talk_the_duty_asked_for_staggered_over_a_cycle():
    channels = plan(8, 0.2, 600, CALLS, REAL, burst=False, seed=3)
    assert 0.16 < talk_share(channels, 600) < 0.22
    firsts = sorted(tl[0].start / SAMPLE_RATE for tl in channels)
    assert firsts[-1] - firsts[0] > 10, "first key-ups spread over most of a ~20 s cycle"
    for tl in channels:
        assert all(t.start % FRAME == 0 for t in tl)
        assert all(b.start - a.end >= 2.5 * SAMPLE_RATE for a, b in pairwise(tl))
        assert tl[-1].end <= 600 * SAMPLE_RATE
        assert [t.clip.incident != "" for t in tl[:4]] == [True, False, True, False], "calls and recordings in turn"


def test_incidents_per_minute_makes_about_that_many_incident_calls_and_the_rest_routine():
    channels = plan(24, 0.2, 600, CALLS, REAL, burst=False, seed=2, incidents_per_minute=2)
    sent = [t for tl in channels for t in tl]
    incidents = sum(t.clip.is_incident for t in sent)
    assert 12 <= incidents <= 30, f"{incidents} incident calls in 10 minutes"  # 20 expected
    assert 0.16 < talk_share(channels, 600) < 0.22 and len(sent) > 10 * incidents


def test_a_burst_keys_every_channel_up_within_a_second_with_an_incident_call():
    channels = plan(12, 0.2, 120, CALLS, REAL, burst=True, seed=1)
    firsts = [tl[0] for tl in channels]
    assert max(t.start for t in firsts) - min(t.start for t in firsts) <= SAMPLE_RATE
    assert all(t.clip.is_incident for t in firsts)


def test_channel_audio_is_hiss_between_transmissions_and_the_clip_inside():
    [timeline] = plan(1, 0.5, 60, CALLS, REAL, burst=False, seed=0)
    hiss = np.full(SAMPLE_RATE, 3, np.int16)
    audio = ChannelAudio(timeline, hiss, 0)
    first = timeline[0]
    before = np.frombuffer(audio.frame(first.start // FRAME - 1), np.int16)
    inside = np.frombuffer(audio.frame(first.start // FRAME), np.int16)
    after = np.frombuffer(audio.frame(first.end // FRAME + 1), np.int16)
    assert set(before) == {3} and set(inside) == {1000} and set(after) == {3}


def test_messages_are_attributed_to_the_call_their_utterance_overlaps():
    channels = plan(2, 0.2, 120, CALLS, REAL, burst=False, seed=2)
    wall = lambda sample: 1000.0 + sample / SAMPLE_RATE  # noqa: E731
    a, b = channels[0][0], channels[1][0]
    utterances = [
        Utterance("u-a", 0, wall(a.start) - 0.5, wall(a.speech_end) + 1.2),
        Utterance("u-b1", 1, wall(b.start) - 0.5, wall(b.start) + 1.0),  # a call split in two utterances
        Utterance("u-b2", 1, wall(b.start) + 1.5, wall(b.speech_end) + 1.1),
        Utterance("u-noise", 0, wall(a.end) + 2.0, wall(a.end) + 2.4),  # between transmissions
    ]
    owner, stray = assign(utterances, channels, wall)
    assert owner == {"u-a": a.key, "u-b1": b.key, "u-b2": b.key} and [u.id for u in stray] == ["u-noise"]
    messages = [
        Message(wall(b.speech_end) + 0.9, "jingbao/alerts/g1", {"kind": "alert", "utterance_id": "u-b2"}),
        Message(wall(a.speech_end) + 1.5, "jingbao/events", {"type": "new", "after": {"utterance_ids": ["u-a"]}}),
        Message(wall(a.speech_end) + 1.6, "jingbao/incidents/INC-1", {"utterance_ids": ["u-a"]}),
        Message(wall(b.speech_end) + 0.5, "jingbao/events", {"type": "new", "after": {"utterance_ids": ["u-b1"]}}),
        Message(wall(b.speech_end) + 2.0, "jingbao/alerts/g2", {"kind": "retraction", "incident_id": "INC-2"}),
        Message(wall(0), "jingbao/available", "online"),
    ]
    first = first_message_per_call(owner, first_mentions(messages))
    assert first[a.key].at == wall(a.speech_end) + 1.5
    assert first[b.key].at == wall(b.speech_end) + 0.5, "the call's earliest message, whichever utterance it names"


def test_escalations_are_not_a_reports_first_alert():
    def alert(at: float, incident: str, utterance: str, kind: str = "alert") -> Message:
        return Message(at, "jingbao/alerts/g1", {"kind": kind, "incident_id": incident, "utterance_id": utterance})

    messages = [alert(10, "INC-1", "u1"), alert(10.1, "INC-1", "u1"), alert(12, "INC-1", "u1", "update"),
                alert(40, "INC-2", "u3"), alert(71, "INC-1", "u2")]  # 61 s on: INC-1 escalated, naming its merged u2
    assert [(m.at, m.data["utterance_id"]) for m in first_wave_alerts(messages)] == [(10, "u1"), (10.1, "u1"), (40, "u3")]


def test_a_call_told_in_several_transmissions_is_one_clip_the_receiver_silent_between(tmp_path) -> None:
    from bench.loadgen import BETWEEN_KEY_UPS_S, CLICK_S, Labelled, call_clip, speech_end_s
    from bench.voices import write_wav

    first, second = np.full(8000, 3000, np.int16), np.full(12000, -3000, np.int16)
    paths = []
    for name, pcm in (("first", first), ("second", second)):
        write_wav(tmp_path / f"{name}.wav", np.concatenate([pcm, np.zeros(4000, np.int16)]).tobytes())
        paths.append(tmp_path / f"{name}.wav")
    heard = call_clip(Labelled("t1/voice", paths[0], "fight", "meishijie", (paths[1],)),
                      lambda clean: np.fromfile(clean, np.int16, offset=44))  # "the radio": the recording as it is
    gap = round(BETWEEN_KEY_UPS_S * SAMPLE_RATE)
    assert len(heard.pcm) == 12000 + gap + 16000 and not heard.pcm[12000:12000 + gap].any()
    assert heard.pcm[0] == 3000 and heard.pcm[12000 + gap] == -3000
    last_speech = speech_end_s(np.concatenate([second, np.zeros(4000, np.int16)]))
    assert heard.speech_end == 12000 + gap + round((CLICK_S + last_speech) * SAMPLE_RATE)
    assert (heard.incident, heard.place) == ("fight", "meishijie")
