"""The segmenter's state machine, frame by frame, on plain synthetic audio built here.

A harmonic tone is what webrtcvad calls speech, digital silence is quiet, and loud white noise stands for a squelch
tail (webrtcvad calls it speech too; the zero-crossing gate must not).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from bridge.audio import FRAME_BYTES, SAMPLE_RATE, Frame
from bridge.config import VadConfig
from bridge.events import (
    SegmentEvent,
    Utterance,
    UtteranceAudio,
    UtteranceDiscarded,
    UtterancePaused,
    UtteranceStarted,
)
from bridge.segmenter import Segmenter, SegmenterState

T0 = 1_700_000_000.0
DEFAULTS = VadConfig()
START_FRAMES = 6  # ceil(start_ratio 0.6 * 10 frames of the 200 ms start window)
HANGOVER_FRAMES = 52  # the 60-frame stop window ends speech once fewer than 9 (15 %) of its frames are voiced
PREROLL_FRAMES = DEFAULTS.preroll_ms // 20


def _pcm(samples: np.ndarray) -> bytes:
    return (samples * 32767).astype("<i2").tobytes()


def tone(seconds: float, dbfs: float = -20.0) -> bytes:
    """A 150 Hz harmonic complex (voice-like: energy low in the band) at the given RMS level."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    return _pcm(x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20))


def white(seconds: float, dbfs: float = -14.0) -> bytes:
    x = np.random.default_rng(1).standard_normal(round(seconds * SAMPLE_RATE))
    return _pcm(x / np.sqrt(np.mean(x**2)) * 10 ** (dbfs / 20))


def silence(seconds: float) -> bytes:
    return bytes(round(seconds * SAMPLE_RATE) * 2)


def click() -> bytes:
    """A PTT key-up click as radio_degrade.py makes it: a 40-sample ramp down from 0.6, in one frame."""
    x = np.zeros(320)
    x[:40] = np.linspace(0.6, 0.0, 40)
    return _pcm(x)


def frames(pcm: bytes, first_index: int = 0, carrier: bool | None = None) -> list[Frame]:
    return [
        Frame(pcm[i : i + FRAME_BYTES], T0 + (first_index + i // FRAME_BYTES) * 0.02, carrier)
        for i in range(0, len(pcm), FRAME_BYTES)
    ]


class Run:
    """Feeds frames one at a time, recording the events and the state after each frame."""

    def __init__(self, vad: VadConfig = DEFAULTS, squelch_tail_ms: int = 0) -> None:
        self.segmenter = Segmenter("ch1", vad, squelch_tail_ms)
        self.events: list[SegmentEvent] = []
        self.states: list[SegmenterState] = []
        self.fed = 0

    def feed(self, pcm: bytes, carrier: bool | None = None) -> list[SegmentEvent]:
        new: list[SegmentEvent] = []
        for frame in frames(pcm, self.fed, carrier):
            new.extend(self.segmenter.feed(frame))
            self.states.append(self.segmenter.state)
        self.fed += len(pcm) // FRAME_BYTES
        self.events.extend(new)
        return new

    def flush(self) -> list[SegmentEvent]:
        new = self.segmenter.flush()
        self.events.extend(new)
        return new

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def assert_stream_consistent(events: list[SegmentEvent]) -> None:
    """Each utterance's pcm is exactly its Started pcm plus its Audio frames, all under one id."""
    parts: dict[str, bytearray] = {}
    for e in events:
        if isinstance(e, UtteranceStarted):
            parts[e.utterance_id] = bytearray(e.pcm)
        elif isinstance(e, UtteranceAudio):
            parts[e.utterance_id] += e.pcm
        elif isinstance(e, Utterance):
            assert bytes(parts[e.id]) == e.pcm
            assert e.end == pytest.approx(e.start + e.duration)


def test_silence_stays_quiet_and_level_reads_silence():
    run = Run()
    assert run.feed(silence(2.0)) == []
    assert set(run.states) == {SegmenterState.QUIET}
    assert run.segmenter.level_dbfs == -120.0
    assert run.flush() == []


def test_level_is_the_rms_of_the_last_frame():
    run = Run()
    run.feed(tone(0.1, dbfs=-26.0))
    assert run.segmenter.level_dbfs == pytest.approx(-26.0, abs=0.2)


def test_onset_goes_quiet_starting_speaking_with_preroll():
    run = Run()
    run.feed(silence(1.0))  # 50 frames, more than the pre-roll
    run.feed(tone(0.2))
    assert run.states[49] is SegmenterState.QUIET
    assert run.states[50 : 50 + START_FRAMES - 1] == [SegmenterState.STARTING] * (START_FRAMES - 1)
    assert run.states[50 + START_FRAMES - 1] is SegmenterState.SPEAKING
    (started,) = run.of(UtteranceStarted)
    assert started.start == pytest.approx(T0 + (50 - PREROLL_FRAMES) * 0.02)
    assert started.pcm == silence(PREROLL_FRAMES * 0.02) + tone(0.2)[: START_FRAMES * FRAME_BYTES]
    assert len(run.of(UtteranceAudio)) == 10 - START_FRAMES  # every later frame of the tone, one event each


def test_hangover_then_end_with_reason_silence():
    run = Run()
    run.feed(silence(1.0) + tone(1.0))
    run.feed(silence(HANGOVER_FRAMES * 0.02 - 0.02))
    assert run.states[-1] is SegmenterState.STOPPING
    assert run.of(Utterance) == []
    run.feed(silence(0.02))
    assert run.states[-1] is SegmenterState.QUIET
    (utt,) = run.of(Utterance)
    assert utt.reason == "silence"
    assert utt.start == pytest.approx(T0 + (50 - PREROLL_FRAMES) * 0.02)
    assert utt.end == pytest.approx(T0 + 2.0 + HANGOVER_FRAMES * 0.02)  # tone ends at 2.0 s, then the hang-over
    assert run.of(UtteranceStarted)[0].utterance_id == utt.id
    assert_stream_consistent(run.events)


def test_pause_shorter_than_hangover_keeps_one_utterance():
    run = Run()
    run.feed(silence(1.0) + tone(0.5) + silence(0.8) + tone(0.5) + silence(2.0))
    assert SegmenterState.STOPPING in run.states
    (utt,) = run.of(Utterance)
    assert utt.end > T0 + 2.8  # covers the second burst
    assert_stream_consistent(run.events)


def test_a_pause_is_reported_once_after_sentence_end_ms_while_the_utterance_stays_open():
    run = Run()
    run.feed(silence(1.0) + tone(1.0))
    pause_frames = DEFAULTS.sentence_end_ms // 20
    run.feed(silence((pause_frames - 1) * 0.02))
    assert run.of(UtterancePaused) == []
    run.feed(silence(0.02))
    (paused,) = run.of(UtterancePaused)
    assert paused.utterance_id == run.of(UtteranceStarted)[0].utterance_id
    assert paused.speech_end == pytest.approx(T0 + 2.0, abs=1e-6)  # the tone ended at 2.0 s
    assert paused.at == pytest.approx(T0 + 2.0 + pause_frames * 0.02, abs=1e-6)
    assert run.states[-1] is SegmenterState.STOPPING  # still open: a caller may go on after a breath
    audio = run.of(UtteranceAudio)
    assert audio[0].voiced and not audio[-1].voiced  # the tone's frames are speech, the pause's are not
    run.feed(silence(0.5) + tone(0.5) + silence(2.0))  # ... and does: one utterance, a second pause reported
    (utt,) = run.of(Utterance)
    first, went_on, second, _ = run.of(UtterancePaused)  # each pause went on to long_pause_ms (settled)
    assert [p.settled for p in (first, went_on, second)] == [False, True, False]
    assert second.speech_end == pytest.approx(T0 + 2.0 + pause_frames * 0.02 + 1.0, abs=1e-6)
    assert {first.utterance_id, second.utterance_id} == {utt.id}
    assert_stream_consistent(run.events)


def test_a_pause_that_goes_on_is_reported_again_settled_at_long_pause_ms():
    run = Run()
    long_frames = DEFAULTS.long_pause_ms // 20
    run.feed(silence(1.0) + tone(1.0) + silence((long_frames - 1) * 0.02))
    (paused,) = run.of(UtterancePaused)
    assert not paused.settled
    run.feed(silence(0.02))
    first, again = run.of(UtterancePaused)
    assert again.settled and (again.utterance_id, again.speech_end) == (first.utterance_id, first.speech_end)
    assert again.at == pytest.approx(T0 + 2.0 + long_frames * 0.02, abs=1e-6)
    run.feed(silence(2.0))
    assert len(run.of(UtterancePaused)) == 2 and len(run.of(Utterance)) == 1
    breath = Run()  # a pause one frame short of it, then more speech: a pause, never settled
    breath.feed(silence(1.0) + tone(0.5) + silence((long_frames - 1) * 0.02) + tone(0.5))
    assert [p.settled for p in breath.of(UtterancePaused)] == [False]
    off = Run(VadConfig(long_pause_ms=0))
    off.feed(silence(1.0) + tone(0.5) + silence(2.0))
    assert [p.settled for p in off.of(UtterancePaused)] == [False]


def test_no_pause_is_reported_inside_speech_nor_when_turned_off():
    run = Run()
    gap = (DEFAULTS.sentence_end_ms // 20 - 1) * 0.02  # one frame short of a pause
    run.feed(silence(1.0) + tone(0.5) + silence(gap) + tone(0.5))
    assert run.of(UtterancePaused) == []
    off = Run(VadConfig(sentence_end_ms=0))
    off.feed(silence(1.0) + tone(0.5) + silence(2.0))
    assert off.of(UtterancePaused) == [] and len(off.of(Utterance)) == 1


def test_pause_longer_than_hangover_gives_two_utterances_without_overlap():
    run = Run()
    run.feed(silence(1.0) + tone(0.5) + silence(1.5) + tone(0.5) + silence(2.0))
    first, second = run.of(Utterance)
    assert second.start >= first.end
    assert second.start <= T0 + 3.0 - 0.3  # its own pre-roll before the second burst at 3.0 s


def test_scattered_voiced_frames_never_confirm():
    run = Run()
    blip = tone(0.02 * (START_FRAMES - 2))  # fewer voiced frames than the start window needs
    run.feed(silence(1.0) + blip + silence(0.3) + blip + silence(1.0))
    assert SegmenterState.STARTING in run.states
    assert run.states[-1] is SegmenterState.QUIET
    assert run.events == []


@pytest.mark.parametrize("seconds, kept", [(0.16, False), (0.28, False), (0.30, True), (0.6, True)])
def test_min_speech_length(seconds: float, kept: bool):
    run = Run()
    run.feed(silence(1.0) + tone(seconds) + silence(2.0))
    assert len(run.of(UtteranceStarted)) == 1
    assert len(run.of(Utterance)) == int(kept)
    assert len(run.of(UtteranceDiscarded)) == int(not kept)
    if not kept:
        (gone,) = run.of(UtteranceDiscarded)
        assert gone.utterance_id == run.of(UtteranceStarted)[0].utterance_id


def test_max_length_splits_seamlessly():
    vad = VadConfig(max_utterance_s=1.5)
    run = Run(vad)
    run.feed(silence(1.0) + tone(4.0) + silence(2.0))
    pieces = run.of(Utterance)
    # 0.5 s pre-roll + 4 s tone + 1.04 s hang-over = 5.54 s
    assert [p.reason for p in pieces] == ["max_length", "max_length", "max_length", "silence"]
    assert [round(p.duration, 3) for p in pieces] == [1.5, 1.5, 1.5, 1.04]
    for before, after in pairwise(pieces):
        assert after.start == pytest.approx(before.end)
    whole = b"".join(p.pcm for p in pieces)
    stream = silence(1.0) + tone(4.0) + silence(2.0)
    offset = round((pieces[0].start - T0) / 0.02) * FRAME_BYTES
    assert whole == stream[offset : offset + len(whole)]  # nothing lost or repeated at the seams
    assert run.of(UtteranceDiscarded) == []
    assert_stream_consistent(run.events)


def test_continuation_after_split_is_kept_even_if_short():
    run = Run(VadConfig(max_utterance_s=1.5))
    # 1.5 s of utterance = 0.5 s pre-roll + 1.0 s of tone; the continuation is only the hang-over
    run.feed(silence(1.0) + tone(1.0) + silence(2.0))
    assert [p.reason for p in run.of(Utterance)] == ["max_length", "silence"]
    assert run.of(UtteranceDiscarded) == []


def test_flush_closes_open_utterance_with_eof_and_drops_unconfirmed_start():
    run = Run()
    run.feed(silence(1.0) + tone(1.0))
    (utt,) = run.flush()
    assert isinstance(utt, Utterance) and utt.reason == "eof"
    assert utt.end == pytest.approx(T0 + 2.0)
    assert run.segmenter.state is SegmenterState.QUIET

    run = Run()
    run.feed(silence(1.0) + tone(0.06))
    assert run.segmenter.state is SegmenterState.STARTING
    assert run.flush() == []


def test_key_up_click_alone_is_nothing():
    run = Run()
    run.feed(silence(1.0) + click() + silence(2.0))
    assert run.events == []


def test_squelch_tail_alone_is_nothing():
    run = Run()
    run.feed(silence(1.0) + click() + white(0.3) + silence(2.0))
    assert run.events == []
    assert SegmenterState.SPEAKING not in run.states  # the click alone may look voiced; the noise never does


def test_without_tail_detection_a_squelch_tail_adds_no_more_than_the_hangover():
    no_detection = VadConfig(squelch_tail_detect_ms=0)
    plain, tailed = Run(no_detection), Run(no_detection)
    plain.feed(silence(1.0) + tone(1.0) + silence(3.0))
    tailed.feed(silence(1.0) + tone(1.0) + white(0.3) + silence(2.7))
    (a,), (b,) = plain.of(Utterance), tailed.of(Utterance)
    assert b.end == pytest.approx(a.end, abs=1e-6)  # the hang-over ran through the tail instead of restarting on it
    assert b.reason == "silence" and b.end > T0 + 2.9


def test_a_squelch_tail_after_speech_ends_the_utterance_at_once():
    run = Run()
    run.feed(silence(1.0) + tone(1.0) + white(0.3) + silence(2.7))
    (utt,) = run.of(Utterance)
    assert utt.reason == "squelch"
    assert utt.end == pytest.approx(T0 + 2.0, abs=1e-6)  # the frames the tail was heard in are left out
    assert utt.pcm.endswith(tone(1.0)[-5 * FRAME_BYTES :])
    # heard 100 ms into the tail, before a pause was due: the pause is reported then, the last (the key is up)
    heard_at = T0 + 2.0 + DEFAULTS.squelch_tail_detect_ms / 1000
    (paused,) = run.of(UtterancePaused)
    assert (paused.speech_end, paused.at) == (pytest.approx(T0 + 2.0, abs=1e-6), pytest.approx(heard_at, abs=1e-6))
    assert paused.settled and paused.unkeyed
    assert run.events.index(paused) == run.events.index(utt) - 1
    assert len(run.of(UtteranceStarted)) == 1  # the rest of the tail starts nothing
    assert_stream_consistent(run.events)


@pytest.mark.parametrize(
    "noise",
    [
        white(0.08),  # loud, flat and broad, but shorter than a tail: a fricative, a click of the mic
        white(0.5, dbfs=-30.0),  # long and flat, but far quieter than the speech: the channel's own noise in a pause
    ],
)
def test_noise_inside_speech_that_is_not_a_tail_does_not_end_it(noise: bytes):
    run = Run()
    run.feed(silence(1.0) + tone(1.0) + noise + tone(1.0) + silence(3.0))
    (utt,) = run.of(Utterance)
    assert utt.reason == "silence"
    assert tone(1.0) + noise + tone(1.0) in utt.pcm  # frames held back as maybe tail rejoin it, in order
    assert_stream_consistent(run.events)


def test_steady_background_becomes_the_noise_floor():
    hum = tone(6.0, dbfs=-40.0)  # webrtcvad calls this speech, frame after frame
    voice = np.frombuffer(tone(1.0, dbfs=-20.0), "<i2").astype(np.int32)
    mixed = np.frombuffer(hum, "<i2").astype(np.int32)
    mixed[3 * SAMPLE_RATE : 4 * SAMPLE_RATE] += voice
    run = Run()
    run.feed(mixed.astype("<i2").tobytes())
    (utt,) = run.of(Utterance)
    assert T0 + 2.4 <= utt.start <= T0 + 2.6  # the loud part at 3.0 s minus the pre-roll
    assert utt.end < T0 + 4.0 + 1.3


# --- carrier / COR ---------------------------------------------------------------------------------------


def test_carrier_up_starts_without_earlier_preroll_and_down_ends():
    run = Run()
    run.feed(tone(1.0), carrier=False)  # speech with the carrier down: not this channel's traffic
    assert run.events == []
    run.feed(silence(0.5) + tone(1.0) + silence(1.5), carrier=True)  # silence inside the carrier keeps it open
    assert set(run.states[50:]) == {SegmenterState.SPEAKING}
    run.feed(silence(0.02), carrier=False)
    (started,) = run.of(UtteranceStarted)
    assert started.start == pytest.approx(T0 + 1.0)
    assert started.pcm == silence(0.02)
    (utt,) = run.of(Utterance)
    assert utt.reason == "carrier"
    assert (utt.start, utt.end) == (pytest.approx(T0 + 1.0), pytest.approx(T0 + 4.0))
    assert utt.pcm == silence(0.5) + tone(1.0) + silence(1.5)
    assert run.segmenter.state is SegmenterState.QUIET
    assert_stream_consistent(run.events)


def test_a_pause_while_the_carrier_is_up_is_reported_before_the_carrier_drops():
    run = Run()
    run.feed(silence(0.5) + tone(1.0) + silence(1.5), carrier=True)  # the caller stopped talking, still keying
    (paused,) = run.of(UtterancePaused)  # never settled: the carrier's drop says when the caller is done
    assert paused.speech_end == pytest.approx(T0 + 1.5, abs=1e-6)
    assert paused.at == pytest.approx(T0 + 1.5 + DEFAULTS.sentence_end_ms // 20 * 0.02, abs=1e-6)
    assert run.of(Utterance) == []  # the carrier still decides when the utterance ends


def test_the_squelch_tail_before_a_carrier_drop_is_left_out_without_delaying_the_stream():
    run = Run(VadConfig(squelch_tail_detect_ms=0), squelch_tail_ms=160)  # the carrier's drop alone ends the call
    run.feed(silence(0.2) + tone(1.0) + silence(0.3), carrier=True)
    # every voiced frame is streamed as it arrives; only the last 160 ms of unvoiced frames wait
    assert len(run.of(UtteranceStarted)[0].pcm + b"".join(a.pcm for a in run.of(UtteranceAudio))) == len(
        silence(0.2) + tone(1.0) + silence(0.3 - 0.16)
    )
    assert run.of(UtterancePaused), "the pause is reported while the tail is held"
    run.feed(white(0.16), carrier=True)  # the remote unkeyed: the squelch-tail burst, then the carrier drops
    run.feed(silence(0.1), carrier=False)
    (utt,) = run.of(Utterance)
    assert utt.pcm == silence(0.2) + tone(1.0) + silence(0.3) and utt.reason == "carrier"
    assert utt.end == pytest.approx(T0 + 1.5)
    assert_stream_consistent(run.events)


def test_a_squelch_tail_under_the_carrier_ends_the_call_before_the_carrier_drops():
    run = Run(squelch_tail_ms=300)
    run.feed(silence(0.2) + tone(1.0) + silence(0.1) + white(0.3), carrier=True)  # let go of the key: the tail
    (utt,) = run.of(Utterance)
    assert utt.reason == "squelch"
    assert utt.pcm == silence(0.2) + tone(1.0) + silence(0.1)  # the frames the tail was heard in are left out
    assert utt.end == pytest.approx(T0 + 1.3, abs=1e-6)
    # the pause was reported after 160 ms of quiet, the carrier still up; settled when the tail was heard (its partial
    # handed over again: not `unkeyed`, which is for a pause not reported yet)
    assert [(p.settled, p.unkeyed) for p in run.of(UtterancePaused)] == [(False, False), (True, False)]
    run.feed(silence(0.1) + click() + silence(0.1), carrier=True)  # the squelch closing, the carrier not down yet
    run.feed(silence(0.1), carrier=False)
    assert len(run.of(UtteranceStarted)) == 1 and run.of(UtteranceDiscarded) == []  # nothing new began
    run.feed(tone(1.0), carrier=True)  # the next key-up is a call again
    assert len(run.of(UtteranceStarted)) == 2
    assert_stream_consistent(run.events)


def test_speech_under_the_carrier_after_a_squelch_tail_is_a_new_call_with_its_onset():
    run = Run(squelch_tail_ms=300)
    run.feed(silence(0.2) + tone(1.0) + white(0.3) + silence(0.2) + tone(1.0) + silence(0.2), carrier=True)
    run.feed(silence(0.1), carrier=False)  # someone else keyed up before our squelch closed
    first, second = run.of(Utterance)
    assert (first.reason, second.reason) == ("squelch", "carrier")
    assert second.start < T0 + 1.7  # its pre-roll holds the quiet before its onset: no word clipped
    assert tone(1.0) in second.pcm and white(0.3)[: 5 * FRAME_BYTES] not in second.pcm
    assert_stream_consistent(run.events)


def test_unvoiced_frames_held_as_maybe_tail_join_the_utterance_when_speech_follows():
    run = Run(squelch_tail_ms=160)
    call = tone(0.6) + silence(0.4) + tone(0.6) + silence(0.1)
    run.feed(call, carrier=True)  # a breath inside the call: held, then released by the next word
    run.flush()  # the input ended with no carrier drop: nothing says the last frames were tail
    (utt,) = run.of(Utterance)
    assert utt.pcm == call
    assert_stream_consistent(run.events)


@pytest.mark.parametrize(
    "key_up, kept",
    [
        (silence(0.2), False),  # a kerchunk: no speech, shorter than the minimum
        (silence(1.0), True),  # no speech but long: the carrier decides
        (silence(0.06) + tone(0.1) + silence(0.04), True),  # short, but it held speech
    ],
)
def test_carrier_key_up_without_speech_and_short_is_discarded(key_up: bytes, kept: bool):
    run = Run()
    run.feed(silence(0.5), carrier=False)
    run.feed(key_up, carrier=True)
    run.feed(silence(0.5), carrier=False)
    assert len(run.of(Utterance)) == int(kept)
    assert len(run.of(UtteranceDiscarded)) == int(not kept)


def test_carrier_stuck_up_is_split_at_max_length():
    run = Run(VadConfig(max_utterance_s=1.5))
    run.feed(tone(3.2), carrier=True)
    run.feed(silence(0.02), carrier=False)
    assert [(p.reason, round(p.duration, 2)) for p in run.of(Utterance)] == [
        ("max_length", 1.5), ("max_length", 1.5), ("carrier", 0.2),
    ]  # fmt: skip



def test_a_pause_in_the_input_is_not_pre_roll_and_ends_an_open_utterance():
    """Push-to-talk pages and idle pipes send nothing between transmissions: the frames before a pause must not
    become the next utterance's pre-roll (its start would be seconds too early), and an open utterance ends there."""
    seg = Segmenter("ch", DEFAULTS)

    def at(pcm: bytes, start: float) -> list[Frame]:
        return [Frame(pcm[i : i + FRAME_BYTES], start + i // FRAME_BYTES * 0.02) for i in range(0, len(pcm), FRAME_BYTES)]

    events: list[SegmentEvent] = []
    for frame in at(white(0.5, -60), T0) + at(tone(2.0), T0 + 10.5) + at(white(0.2, -60), T0 + 30):
        events += seg.feed(frame)  # 0.5 s of hiss; the input stops for 10 s; 2 s of speech that stops mid-word
    utterances = [e for e in events if isinstance(e, Utterance)]
    assert len(utterances) == 1
    u = utterances[0]
    assert u.start >= T0 + 10.5 and u.end <= T0 + 12.6
    assert abs((u.end - u.start) - u.duration) < 0.05  # times agree with the audio: no pause inside
