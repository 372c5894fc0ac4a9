"""Per-channel segmenter: 20 ms frames in, utterance events out. Pure logic, no I/O.

A frame counts as *voiced* only when webrtcvad says speech (it sees every frame: its noise model adapts on the
quiet ones) and both of these hold:
  - its level is at least `min_level_dbfs` and `noise_margin_db` above the channel's noise floor (the quietest
    frame of the last `noise_floor_window_s`): webrtcvad alone calls steady radio hiss speech at 10 dB SNR;
  - its zero-crossing rate is at most `max_zero_crossing_rate`: a squelch tail is broadband noise as loud as
    speech, which webrtcvad also calls speech, while loud speech has its energy low in the band.
The voiced flags drive a state machine with hysteresis (QUIET -> STARTING -> SPEAKING <-> STOPPING -> QUIET):
speech starts when `start_ratio` of a `start_window_ms` window beginning at a voiced frame is voiced, and ends
when less than `stop_ratio` of the last `stop_window_ms` is (the hang-over). A one-frame PTT click can never fill
the start window, and the hang-over runs through a squelch tail instead of restarting on it.

The hang-over must outlast a pause inside a call (~0.9 s), so it ends a call long after its last word. Dispatch need
not wait for it: after `sentence_end_ms` without a sounding frame the segmenter says so (UtterancePaused, once per
pause) and the later stages act on what was said so far, while the utterance stays open; if the pause lasts
`long_pause_ms` it says so again (settled: most likely the end; not under a carrier, whose drop says so). A sounding
frame is a voiced one that the utterance's own webrtcvad, new at its onset, also calls speech: on a radio channel the
channel's VAD learned its noise between transmissions and hears the transmitter's noise in a pause as speech
(`_is_sounding`).

A squelch tail ends the utterance at once (reason "squelch"), in either mode: the receiver's noise burst between
the far end unkeying and its squelch closing says the caller let go of the key, ~1 s before the hang-over would and
~0.2 s before a COR line's carrier drops (`SquelchTail`, `vad.squelch_tail_detect_ms`). Tail-like frames are held
back until the tail is heard (they are left out of the utterance) or the run breaks (they join it), and what is left
of the burst is never speech. The pause the caller ended on is reported then, settled.

When frames carry a carrier/COR state the utterance follows the carrier instead, and VAD only tells whether a
short key-up held any speech at all, and when the speaker paused while still keying. The last `squelch_tail_ms`
before the carrier drops is the receiver's squelch-tail noise burst (it opens on the remote unkey and closes a moment
later), not speech: unvoiced frames are held back that long before they join the utterance, and those still held
when the carrier drops are left out of it. Every frame reaches the segmenter as it is received, so a pause is
reported at once and the utterance ends on the drop itself; only the unvoiced tail waits (the tail is loud
broadband noise, which the zero-crossing test calls unvoiced).

Events for one utterance: UtteranceStarted (pre-roll + confirming frames), one UtteranceAudio per later frame
(with an UtterancePaused after the frame that completed a pause), then Utterance (whose pcm is exactly the
concatenation of those) or UtteranceDiscarded.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from enum import Enum

import numpy as np
import webrtcvad

from bridge.audio import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, Frame
from bridge.config import VadConfig
from bridge.decode import iter_frames
from bridge.events import (
    EndReason,
    SegmentEvent,
    Utterance,
    UtteranceAudio,
    UtteranceDiscarded,
    UtterancePaused,
    UtteranceStarted,
    new_utterance_id,
)

FRAME_S = FRAME_MS / 1000.0
# Frames later than this after the previous one mean the input paused (push-to-talk released, an idle pipe):
# audio from before the pause is not this speech's pre-roll, and an open utterance ends at the pause.
MAX_FRAME_GAP_S = 0.1
SILENCE_DBFS = -120.0
_FULL_SCALE_ENERGY = FRAME_SAMPLES * 32768.0**2  # energy of a full-scale square wave frame: 0 dBFS RMS
_FRAMES_PER_FLOOR_BLOCK = 25  # the noise floor keeps one minimum per 0.5 s block

# A squelch tail is voice-band white noise about as loud as the speech before it. Speech holds nothing like it for
# long: a Mandarin syllable ends in a vowel or a nasal, so its noisiest sound, a fricative, leads into a vowel within
# ~0.15 s, is quieter than the vowels and is not flat (its energy rises with frequency). Chosen on the 30 demo calls
# and the 53 real recordings through radio_degrade.py (clean and at 20, 12, 10 and 5 dB of pink and of white noise):
# 5 frames in a row found every tail, p95 0.10-0.11 s into it, and nothing inside speech but 3 of 83 recordings at
# 5 dB of white noise (0 at 10 dB and above; 4 frames: 13 inside speech, mostly at 5 dB).
TAIL_MIN_ZERO_CROSSING_RATE = 0.15
TAIL_MIN_FLATNESS = 0.6  # geometric / arithmetic mean power over 400-3200 Hz: ~0.78 for white noise, ~0.25 for speech
TAIL_BELOW_SPEECH_DB = 6.0  # at most this far under the mean level of the utterance's vowels
# The speech's level is its vowels': voiced frames with few zero crossings. A transmission's own noise (the channel's
# VAD calls it speech, its noise model learned on the quiet between key-ups) crosses zero more often, ~0.19 for pink
# noise in the voice band, and would otherwise make a pause before the speech look as loud as a tail.
TAIL_VOWEL_MAX_ZERO_CROSSING_RATE = 0.1
TAIL_SPEECH_FRAMES = 10  # vowel frames heard before the speech's level is known well enough to compare


class SegmenterState(Enum):
    QUIET = "quiet"
    STARTING = "starting"  # voiced frames seen, not yet enough to call it speech
    SPEAKING = "speaking"
    STOPPING = "stopping"  # in the hang-over: the last frame was not voiced


class FrameFeatures:
    """Level and zero-crossing rate of a frame, computed into preallocated buffers (no per-frame arrays). The rate is
    asked of one frame up to three times (the voicing test, the squelch tail's, the speech's level): kept for the
    last frame asked."""

    def __init__(self) -> None:
        self._samples = np.empty(FRAME_SAMPLES, dtype=np.float32)
        self._signs = np.empty(FRAME_SAMPLES, dtype=bool)
        self._changes = np.empty(FRAME_SAMPLES - 1, dtype=bool)
        self._rate_of: bytes | None = None
        self._rate = 0.0

    def level_dbfs(self, pcm: bytes) -> float:
        np.copyto(self._samples, np.frombuffer(pcm, dtype="<i2"))
        energy = float(np.dot(self._samples, self._samples))
        return 10.0 * math.log10(energy / _FULL_SCALE_ENERGY) if energy > 0 else SILENCE_DBFS

    def zero_crossing_rate(self, pcm: bytes) -> float:
        if pcm is not self._rate_of:
            np.signbit(np.frombuffer(pcm, dtype="<i2"), out=self._signs)
            np.not_equal(self._signs[1:], self._signs[:-1], out=self._changes)
            self._rate_of, self._rate = pcm, int(np.count_nonzero(self._changes)) / (FRAME_SAMPLES - 1)
        return self._rate


class SquelchTail:
    """Tells a squelch tail after speech: `frames_needed` tail-like frames in a row (loud, flat across the voice
    band, many zero crossings: see TAIL_*). `begin` at each utterance, `speech` for each of its voiced frames, then
    `is_tail` for every frame until `released`, and on through the rest of the burst once it is."""

    def __init__(self, frames_needed: int) -> None:
        self._needed = frames_needed
        self._window = np.hanning(FRAME_SAMPLES).astype(np.float32)
        freqs = np.fft.rfftfreq(FRAME_SAMPLES, 1.0 / SAMPLE_RATE)
        self._band = slice(int(np.searchsorted(freqs, 400.0)), int(np.searchsorted(freqs, 3200.0, side="right")))
        self._smooth = np.ones(3, dtype=np.float32) / 3
        self._level_sum = 0.0
        self._voiced = 0
        self._run = 0

    @property
    def run(self) -> int:
        """Tail-like frames in a row, up to the last one checked."""
        return self._run

    @property
    def released(self) -> bool:
        """The last `frames_needed` frames or more were tail: the caller has let go of the key."""
        return 0 < self._needed <= self._run

    def begin(self) -> None:
        self._level_sum = 0.0
        self._voiced = 0
        self._run = 0

    def speech(self, pcm: bytes, level: float, zero_crossing_rate: Callable[[bytes], float]) -> None:
        """A voiced frame of the utterance: a vowel's level sets how loud a tail must be."""
        if zero_crossing_rate(pcm) <= TAIL_VOWEL_MAX_ZERO_CROSSING_RATE:
            self._level_sum += level
            self._voiced += 1

    def is_tail(self, pcm: bytes, level: float, zero_crossing_rate: Callable[[bytes], float]) -> bool:
        """Is this frame tail-like? (counted towards `released`; a frame that is not ends the run)"""
        tail = (
            self._needed > 0
            and self._voiced >= TAIL_SPEECH_FRAMES
            and level >= self._level_sum / self._voiced - TAIL_BELOW_SPEECH_DB
            and zero_crossing_rate(pcm) > TAIL_MIN_ZERO_CROSSING_RATE
            and self._flatness(pcm) >= TAIL_MIN_FLATNESS
        )
        self._run = self._run + 1 if tail else 0
        return tail

    def _flatness(self, pcm: bytes) -> float:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * self._window
        power = np.abs(np.fft.rfft(samples)[self._band]) ** 2 + 1e-3
        power = np.convolve(power, self._smooth, mode="valid")  # a single frame's spectrum is noisy: steady it
        return float(np.exp(np.mean(np.log(power))) / np.mean(power))


class NoiseFloor:
    """Minimum statistics: the quietest frame level over a sliding window, kept as per-block minima."""

    def __init__(self, window_s: float) -> None:
        self._blocks: deque[float] = deque(maxlen=max(1, round(window_s / (_FRAMES_PER_FLOOR_BLOCK * FRAME_S))))
        self._block_min = math.inf
        self._block_frames = 0
        self._past_min = math.inf

    def update(self, level: float) -> float:
        """Take one frame's level; return the floor including it."""
        if level < self._block_min:
            self._block_min = level
        self._block_frames += 1
        floor = min(self._past_min, self._block_min)
        if self._block_frames == _FRAMES_PER_FLOOR_BLOCK:
            self._blocks.append(self._block_min)
            self._past_min = min(self._blocks)
            self._block_min = math.inf
            self._block_frames = 0
        return floor


class Segmenter:
    """Turns one channel's frames into utterance events (see the module docstring)."""

    def __init__(self, channel: str, vad: VadConfig, squelch_tail_ms: int = 0) -> None:
        self.channel = channel
        self._config = vad
        self._vad = webrtcvad.Vad(vad.aggressiveness)
        self._features = FrameFeatures()
        self._noise_floor = NoiseFloor(vad.noise_floor_window_s)
        self._pause_vad = webrtcvad.Vad(vad.aggressiveness)  # a new one for each utterance: see `_is_sounding`
        self._start_frames = max(1, vad.start_window_ms // FRAME_MS)
        self._start_needed = max(1, math.ceil(vad.start_ratio * self._start_frames))
        self._stop_frames = max(1, vad.stop_window_ms // FRAME_MS)
        self._stop_below = vad.stop_ratio * self._stop_frames
        self._pause_frames = vad.sentence_end_ms // FRAME_MS  # 0: pauses are not reported
        long_pause_frames = vad.long_pause_ms // FRAME_MS
        self._long_pause_frames = long_pause_frames if self._pause_frames and long_pause_frames > self._pause_frames else 0
        self._min_speech_frames = vad.min_speech_ms // FRAME_MS
        self._max_bytes = int(vad.max_utterance_s * 1000 // FRAME_MS) * FRAME_BYTES
        self._tail_frames = squelch_tail_ms // FRAME_MS
        self._held: deque[tuple[Frame, int]] = deque()  # unvoiced frames held back as maybe squelch tail (`_hold`)
        self._tail = SquelchTail(vad.squelch_tail_detect_ms // FRAME_MS)
        self._released_under_carrier = False  # a squelch tail ended the call; the carrier has not dropped yet

        self._state = SegmenterState.QUIET
        self._level = SILENCE_DBFS
        self._frame_index = 0
        self._next_ts: float | None = None  # when the next frame is due if the input runs on without a pause
        self._preroll: deque[Frame] = deque(maxlen=vad.preroll_ms // FRAME_MS)
        self._pending: deque[tuple[Frame, bool]] = deque()  # STARTING: frames since the first voiced one
        self._pending_voiced = 0
        self._stop_ring = bytearray(self._stop_frames)  # SPEAKING/STOPPING: voiced flags of the last frames
        self._stop_pos = 0
        self._stop_voiced = 0
        # the open utterance
        self._id = ""
        self._start = 0.0
        self._end = 0.0
        self._pcm = bytearray()
        self._onset_index = 0
        self._last_voiced_index = -1
        self._last_sounding_index = -1  # the last frame louder than a pause (`_is_sounding`)
        self._by_carrier = False
        self._continued = False  # the continuation of a split utterance is never discarded

    @property
    def state(self) -> SegmenterState:
        return self._state

    @property
    def level_dbfs(self) -> float:
        """RMS level of the last frame in dBFS (for level meters)."""
        return self._level

    # --- entry points --------------------------------------------------------------------------------------

    def feed(self, frame: Frame) -> list[SegmentEvent]:
        """Take the next 20 ms frame; return the events it caused (usually none or one)."""
        paused = self._next_ts is not None and frame.ts - self._next_ts > MAX_FRAME_GAP_S
        self._next_ts = frame.ts + FRAME_S
        if paused:
            return [*self.flush(), *self.feed(frame)]
        index = self._frame_index
        self._frame_index += 1
        if frame.carrier is not None:
            return self._feed_carrier(frame, index)
        voiced = self._is_voiced(frame.pcm)
        if self._state in (SegmenterState.SPEAKING, SegmenterState.STOPPING):
            return self._feed_open(frame, voiced, index)
        if self._tail.released and self._is_tail(frame):
            voiced = False  # the rest of the squelch tail that ended the last utterance
        return self._start_if_speech(frame, voiced, index)

    def flush(self, reason: EndReason = "eof") -> list[SegmentEvent]:
        """End of stream (or a pause in it, or the service stopping): close an open utterance with `reason`; an
        unconfirmed start is dropped."""
        self._released_under_carrier = False
        if self._state in (SegmenterState.SPEAKING, SegmenterState.STOPPING):
            return self._close(reason)
        self._reset_quiet()
        return []

    # --- VAD mode ------------------------------------------------------------------------------------------

    def _start_if_speech(self, frame: Frame, voiced: bool, index: int) -> list[SegmentEvent]:
        """QUIET or STARTING: does speech start (enough of the start window voiced)? Frames before it are pre-roll."""
        if self._state is SegmenterState.QUIET:
            if voiced:
                self._state = SegmenterState.STARTING
                self._pending.append((frame, True))
                self._pending_voiced = 1
                return self._confirm_if_enough(index)
            self._preroll.append(frame)
            return []
        self._pending.append((frame, voiced))
        self._pending_voiced += voiced
        return self._confirm_if_enough(index)

    def _is_voiced(self, pcm: bytes) -> bool:
        level = self._features.level_dbfs(pcm)
        self._level = level
        floor = self._noise_floor.update(level)
        # webrtcvad sees every frame, quiet ones included: its noise model adapts on them
        if not self._vad.is_speech(pcm, SAMPLE_RATE):
            return False
        config = self._config
        if level < config.min_level_dbfs or level < floor + config.noise_margin_db:
            return False
        return self._features.zero_crossing_rate(pcm) <= config.max_zero_crossing_rate

    def _confirm_if_enough(self, index: int) -> list[SegmentEvent]:
        if self._pending_voiced >= self._start_needed:
            return [self._open(index)]
        if len(self._pending) >= self._start_frames:
            # slide the window on to the next voiced frame; what falls out becomes pre-roll
            while self._pending and (len(self._pending) >= self._start_frames or not self._pending[0][1]):
                frame, was_voiced = self._pending.popleft()
                self._pending_voiced -= was_voiced
                self._preroll.append(frame)
            if not self._pending:
                self._state = SegmenterState.QUIET
        return []

    def _open(self, index: int) -> UtteranceStarted:
        pcm = bytearray()
        for frame in self._preroll:
            pcm += frame.pcm
        onset = index - len(self._pending) + 1
        last_voiced = onset
        for offset, (frame, voiced) in enumerate(self._pending):
            pcm += frame.pcm
            if voiced:
                last_voiced = onset + offset
        first = self._preroll[0] if self._preroll else self._pending[0][0]
        self._tail.begin()
        started = self._begin(first.ts, pcm, self._pending[-1][0].ts, onset, by_carrier=False)
        self._last_voiced_index = self._last_sounding_index = last_voiced
        self._pending.clear()
        self._pending_voiced = 0
        return started

    def _feed_open(self, frame: Frame, voiced: bool, index: int) -> list[SegmentEvent]:
        tail = self._hear_tail(frame, voiced)
        voiced = voiced and not tail
        ring = self._stop_ring
        pos = self._stop_pos
        self._stop_voiced += voiced - ring[pos]
        ring[pos] = voiced
        self._stop_pos = pos + 1 if pos + 1 < self._stop_frames else 0
        if voiced:
            self._last_voiced_index = index
        if self._is_sounding(frame.pcm, voiced):
            self._last_sounding_index = index
        events = self._hold(frame, index) if tail else [*self._release_held(), *self._append(frame, index, voiced)]
        if self._tail.released:
            return [*events, *self._unkeyed(frame, index)]
        if self._stop_voiced < self._stop_below:
            events.extend(self._close("silence"))
            return events
        self._state = SegmenterState.SPEAKING if voiced else SegmenterState.STOPPING
        events.extend(self._pause_if_due(frame, index))
        return events

    def _is_sounding(self, pcm: bytes, voiced: bool) -> bool:
        """Is this frame of the open utterance speech, not a pause? A voiced frame is, unless a webrtcvad that has
        heard only this utterance calls it noise. On a radio channel the transmitter's noise comes and goes with the
        key: between key-ups the channel is far quieter than the noise under the speech, and the channel's VAD, its
        noise model learned on that quiet, calls the whole transmission speech (pauses inside it included) down to
        the channel's noise floor, which is the quiet between key-ups too. The utterance's own VAD learns the
        transmission's noise from its first frames: at 12 dB SNR and above it hears a comma's pause as the clean
        recording's (bench/segment_pauses.py; below ~11 dB it calls the noise speech, as the channel's VAD does)."""
        # asked first, of every frame: its noise model learns on the frames it calls noise (a cost only while open)
        return self._pause_vad.is_speech(pcm, SAMPLE_RATE) and voiced

    def _pause_if_due(self, frame: Frame, index: int) -> list[SegmentEvent]:
        """UtterancePaused when this frame completes `sentence_end_ms` without a sounding one after speech, and again
        (settled) when it completes `long_pause_ms`."""
        silent_frames = index - self._last_sounding_index
        due = silent_frames > 0 and silent_frames in (self._pause_frames, self._long_pause_frames)
        if not due or self._last_sounding_index < self._onset_index:
            return []
        settled = silent_frames == self._long_pause_frames
        if settled and self._by_carrier:  # the key still held says the caller is not done; its drop ends the call
            return []
        return [self._paused(frame, silent_frames, settled)]

    def _paused(self, frame: Frame, silent_frames: int, settled: bool, unkeyed: bool = False) -> UtterancePaused:
        """The pause that this frame ends `silent_frames` of quiet with (the speech ended where the quiet began)."""
        speech_end = frame.ts - (silent_frames - 1) * FRAME_S
        return UtterancePaused(self.channel, self._id, frame.ts + FRAME_S, speech_end, settled, unkeyed=unkeyed)

    def _unkeyed(self, frame: Frame, index: int) -> list[SegmentEvent]:
        """A squelch tail was heard: the caller let go of the key. The pause he ended on is settled, whatever its
        length and carrier: reported already (`sentence_end_ms`), its partial is handed over again as when it goes on
        (`long_pause_ms`); not yet, it is reported as the last (`unkeyed`): recognition reads the final there. Either
        way dispatch need not wait for the utterance to be archived and recognised. Then the utterance ends."""
        for _ in range(min(len(self._held), self._tail.run)):
            self._held.pop()  # the frames the tail was heard in
        events = self._release_held()  # (under a carrier, quiet held as maybe tail before it)
        silent_frames = index - self._last_sounding_index
        if self._pause_frames and self._last_sounding_index >= self._onset_index:
            if silent_frames < self._pause_frames:  # not reported yet: the last pause, read by the final itself
                events.append(self._paused(frame, silent_frames, settled=True, unkeyed=True))
            elif self._by_carrier or not self._long_pause_frames or silent_frames < self._long_pause_frames:
                events.append(self._paused(frame, silent_frames, settled=True))  # its partial again
        return [*events, *self._close("squelch")]

    def _is_tail(self, frame: Frame) -> bool:
        return self._tail.is_tail(frame.pcm, self._level, self._features.zero_crossing_rate)

    def _hear_tail(self, frame: Frame, voiced: bool) -> bool:
        """Is this frame of the open utterance squelch-tail-like? (such a frame is never voiced, and is held back
        until the tail is heard or the run breaks; a voiced one tells the tail detector how loud the speech is)"""
        if self._is_tail(frame):
            return True
        if voiced:
            self._tail.speech(frame.pcm, self._level, self._features.zero_crossing_rate)
        return False

    # --- carrier (COR) mode --------------------------------------------------------------------------------

    def _feed_carrier(self, frame: Frame, index: int) -> list[SegmentEvent]:
        is_open = self._state in (SegmenterState.SPEAKING, SegmenterState.STOPPING)
        if not frame.carrier:
            self._level = self._features.level_dbfs(frame.pcm)
            events = self._close("carrier") if is_open else []
            self._reset_quiet()
            self._released_under_carrier = False
            self._preroll.append(frame)
            return events
        # VAD decides nothing here but whether the key-up held any speech, and when the speaker paused: the carrier
        # stays up for the caller's breath and the squelch tail, and dispatch need not wait for it to drop
        voiced = self._is_voiced(frame.pcm)
        if not is_open and self._released_under_carrier:
            # the rest of the squelch tail that ended the call, the carrier not yet down: only speech that starts as
            # it would without a carrier (someone keyed up again at once) opens an utterance, its pre-roll kept
            events = self._start_if_speech(frame, voiced and not self._is_tail(frame), index)
            if events:
                self._released_under_carrier = False
                self._by_carrier = True
            return events
        if not is_open:
            self._reset_quiet()
            self._tail.begin()
            events: list[SegmentEvent] = [self._begin(frame.ts, bytearray(frame.pcm), frame.ts, index, by_carrier=True)]
            if voiced:
                self._last_voiced_index = index
            if self._is_sounding(frame.pcm, voiced):
                self._last_sounding_index = index
            return events
        tail = self._hear_tail(frame, voiced)
        voiced = voiced and not tail
        if self._is_sounding(frame.pcm, voiced):
            self._last_sounding_index = index
        if voiced:
            self._last_voiced_index = index
        if tail or (self._tail_frames and not voiced):
            events = self._hold(frame, index)
        else:
            events = [*self._release_held(), *self._append(frame, index, voiced)]
        if self._tail.released:
            self._released_under_carrier = True
            return [*events, *self._unkeyed(frame, index)]
        return [*events, *self._pause_if_due(frame, index)]

    def _hold(self, frame: Frame, index: int) -> list[SegmentEvent]:
        """Hold back an unvoiced frame that may be squelch tail: the run of tail-like frames, and under a carrier the
        last `squelch_tail_ms` of any before it; older held frames go on to the utterance."""
        self._held.append((frame, index))
        events: list[SegmentEvent] = []
        while len(self._held) > self._tail_frames + self._tail.run:
            events += self._append(*self._held.popleft(), voiced=False)
        return events

    def _release_held(self) -> list[SegmentEvent]:
        """The unvoiced frames held back as maybe squelch tail are not: speech followed them, or no carrier drop did."""
        events: list[SegmentEvent] = []
        while self._held:
            events += self._append(*self._held.popleft(), voiced=False)
        return events

    # --- the open utterance --------------------------------------------------------------------------------

    def _begin(self, start: float, pcm: bytearray, last_ts: float, onset_index: int, by_carrier: bool) -> UtteranceStarted:
        """Open an utterance whose audio so far is `pcm` (its last frame stamped `last_ts`)."""
        self._id = new_utterance_id(start)
        self._start = start
        self._end = last_ts + FRAME_S
        self._pcm = pcm
        self._onset_index = onset_index
        self._last_voiced_index = self._last_sounding_index = onset_index - 1
        self._pause_vad = webrtcvad.Vad(self._config.aggressiveness)
        self._by_carrier = by_carrier
        self._continued = False
        self._stop_ring[:] = b"\x01" * self._stop_frames  # speech was just confirmed: the hang-over starts full
        self._stop_pos = 0
        self._stop_voiced = self._stop_frames
        self._state = SegmenterState.SPEAKING
        return UtteranceStarted(self.channel, self._id, start, bytes(pcm))

    def _append(self, frame: Frame, index: int, voiced: bool = True) -> list[SegmentEvent]:
        """Add a frame to the open utterance, splitting it first if it would grow past the maximum."""
        if len(self._pcm) + FRAME_BYTES <= self._max_bytes:
            self._pcm += frame.pcm
            self._end = frame.ts + FRAME_S
            return [UtteranceAudio(self.channel, self._id, frame.pcm, voiced)]
        finished = self._finish("max_length")
        last_voiced, ring, pos, voiced = self._last_voiced_index, bytes(self._stop_ring), self._stop_pos, self._stop_voiced
        sounding, pause_vad = self._last_sounding_index, self._pause_vad
        started = self._begin(frame.ts, bytearray(frame.pcm), frame.ts, index, by_carrier=self._by_carrier)
        # the same speech goes on: keep the hang-over and the pause where they were, and never discard the continuation
        self._last_voiced_index, self._stop_ring[:], self._stop_pos, self._stop_voiced = last_voiced, ring, pos, voiced
        self._last_sounding_index, self._pause_vad = sounding, pause_vad
        self._continued = True
        return [finished, started]

    def _close(self, reason: EndReason) -> list[SegmentEvent]:
        # held frames at a carrier drop are its squelch tail; at the end of the input nothing says so: keep them
        released = [] if reason == "carrier" else self._release_held()
        speech_frames = self._last_voiced_index - self._onset_index + 1
        if self._continued:
            keep = True
        elif self._by_carrier:  # only a key-up with no speech at all that is also short is dropped
            keep = speech_frames > 0 or len(self._pcm) >= self._min_speech_frames * FRAME_BYTES
        else:
            keep = speech_frames >= self._min_speech_frames
        event: SegmentEvent
        if keep:
            event = self._finish(reason)
        else:
            event = UtteranceDiscarded(self.channel, self._id, len(self._pcm) / FRAME_BYTES * FRAME_S)
        self._reset_quiet()
        return [*released, event]

    def _finish(self, reason: EndReason) -> Utterance:
        return Utterance(self._id, self.channel, self._start, self._end, bytes(self._pcm), reason)

    def _reset_quiet(self) -> None:
        self._state = SegmenterState.QUIET
        self._pcm = bytearray()
        self._held.clear()
        self._pending.clear()
        self._pending_voiced = 0
        self._preroll.clear()


def segment_pcm(pcm: bytes, vad: VadConfig, channel: str = "file") -> list[Utterance]:
    """Segment a whole recording as fast as possible; utterance times are seconds from its start."""
    segmenter = Segmenter(channel, vad)
    events: list[SegmentEvent] = []
    for frame in iter_frames(pcm):
        events.extend(segmenter.feed(frame))
    events.extend(segmenter.flush())
    return [event for event in events if isinstance(event, Utterance)]
