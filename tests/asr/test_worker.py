"""The recognition pool with the real engines: sherpa-onnx on real Mandarin speech, Vosk (Korean model, grammar mode)
on espeak-ng Korean. Checks the event loop keeps ticking while streams decode, partials, back-pressure, lag
figures, and both engines combined on one utterance."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from asr.config import AsrConfig
from asr.keywords import KeywordEntry
from asr.sherpa_engine import SherpaEngine
from asr.transcript import Transcript
from asr.vosk_engine import VoskEngine
from asr.worker import PoolFull, RecognitionFailed, RecognitionPool, build_engines
from bridge.audio import FRAME_BYTES, SAMPLE_RATE
from bridge.decode import decode_file
from tests.asr.test_vosk_engine import HELLO, KO_MODEL, SPOKEN, THANKS, espeak_ko

# Upstream's documented result for the model's own test_wavs/3.wav: it contains these two keywords.
KEYWORDS = [KeywordEntry("文森特卡索", "person:vincent"), KeywordEntry("法国", "country:france")]


@pytest.fixture(scope="module")
def sherpa(sherpa_model: Path) -> SherpaEngine:
    return SherpaEngine(sherpa_model, KEYWORDS, num_threads=1)


@pytest.fixture(scope="module")
def vosk_grammar() -> VoskEngine:
    return VoskEngine(KO_MODEL, [HELLO, THANKS])  # this model has no [unk]


@pytest.fixture(scope="module")
def korean(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return espeak_ko(". ".join(SPOKEN) + ".", tmp_path_factory.mktemp("ko") / "speech.wav")


@pytest.fixture(scope="module")
def mandarin(shared_audio: Path) -> list[bytes]:
    return [decode_file(p) for p in sorted(shared_audio.glob("aishell*.wav"))[:4]]


def direct(engine: SherpaEngine | VoskEngine, pcm: bytes) -> Transcript:
    stream = engine.start_stream()
    stream.feed(pcm)
    return stream.finish()


async def feed_live(
    pool: RecognitionPool, utterance_id: str, pcm: bytes, piece: int = FRAME_BYTES, gap_s: float = 0.0
) -> Transcript:
    """Feed audio in pieces (20 ms frames as a channel does), yielding to the loop (for `gap_s`) after each."""
    handle = pool.open(utterance_id)
    for i in range(0, len(pcm), piece):
        handle.feed(pcm[i : i + piece])
        await asyncio.sleep(gap_s)
    return await handle.finish()


class DecodingThreads:
    """The real engine, noting the threads its streams decode on (feed, finish, the partials), and the calls."""

    DECODING = frozenset({"feed", "finish", "partial", "pause_partial"})

    def __init__(self, engine: SherpaEngine) -> None:
        self.engine = engine
        self.threads: set[int] = set()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:  # the engine's own attributes
        return getattr(self.engine, name)

    def start_stream(self, *args: Any, **kwargs: Any) -> Any:
        stream = self.engine.start_stream(*args, **kwargs)
        spy = self

        class Stream:
            def __getattr__(self, name: str) -> Any:
                attr = getattr(stream, name)
                if name not in DecodingThreads.DECODING:
                    return attr

                def decoding(*a: Any, **k: Any) -> Any:
                    spy.threads.add(threading.get_ident())
                    spy.calls.append(name)
                    return attr(*a, **k)

                return decoding

        return Stream()


async def test_loop_stays_responsive_while_four_streams_decode(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    mandarin = [pcm * 2 for pcm in mandarin]
    expected = [direct(sherpa, pcm) for pcm in mandarin]
    engine = DecodingThreads(sherpa)
    pool = RecognitionPool([engine], workers=2, queue_size=8)  # type: ignore[list-item]
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    # 1 s pieces as fast as possible, four utterances at once
    second = SAMPLE_RATE * 2
    results = await asyncio.gather(*(feed_live(pool, f"u{i}", pcm, second) for i, pcm in enumerate(mandarin)))
    beat.cancel()
    pool.close()
    # results equal the engine's own, every decoding call ran on the pool's threads, never on the loop's, and the
    # 10 ms tick went on. The decoding threads are the check; the tick's bound is loose on purpose: on a loaded
    # machine (CI runs two test processes on two cores) the scheduler alone delays a tick by tens of ms, which says
    # nothing about where decoding ran.
    assert [r.pinyin for r in results] == [e.pinyin for e in expected] and all(r.pinyin for r in results)
    assert engine.threads and threading.get_ident() not in engine.threads
    print(f"heartbeat: {len(gaps)} ticks, longest gap {max(gaps) * 1000:.1f} ms")
    assert len(gaps) > 20 and max(gaps) < 0.5, f"event loop stalled {max(gaps):.3f} s"
    assert pool.stats().completed == 4


async def test_partials_arrive_before_the_final(vosk_grammar: VoskEngine, korean: bytes) -> None:
    pool = RecognitionPool([vosk_grammar], workers=1)
    handle = pool.open("ko")
    seen: list[tuple[str, float]] = []

    async def watch() -> None:
        async for partial in handle.partials():
            assert partial.transcript.partial and not partial.at_pause
            seen.append((partial.transcript.text, time.monotonic()))

    watcher = asyncio.create_task(watch())
    for i in range(0, len(korean), FRAME_BYTES * 5):  # 100 ms pieces at twice real time
        handle.feed(korean[i : i + FRAME_BYTES * 5])
        await asyncio.sleep(0.05)
    final = await handle.finish()
    done = time.monotonic()
    await watcher
    pool.close()
    assert [w.text for w in final.words] == SPOKEN and not final.partial
    assert seen and seen[0][0].startswith(HELLO) and all(t < done for _, t in seen)
    assert len({text for text, _ in seen}) >= 2  # the hypothesis grew while audio was arriving


async def test_a_pause_gets_a_partial_of_everything_fed_so_far_even_unchanged(vosk_grammar: VoskEngine, korean: bytes) -> None:
    pool = RecognitionPool([vosk_grammar], workers=1)
    handle = pool.open("ko")
    handle.feed(korean + bytes(FRAME_BYTES * 25))  # the whole call and 0.5 s of silence at once
    assert handle.pause() == 1
    at_pause: list[Transcript] = []
    answered: list[int] = []  # which pause each partial at a pause answers

    async def watch() -> None:
        async for partial in handle.partials():
            if partial.at_pause:
                at_pause.append(partial.transcript)
                answered.append(partial.pause)

    async def paused(count: int) -> None:
        while len(at_pause) < count:
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(paused(1), 30)
    assert handle.pause() == 2  # a second pause with nothing new said: the same partial again, still marked
    await asyncio.wait_for(paused(2), 30)
    final = await handle.finish()
    await watcher
    pool.close()
    assert [w.text for w in at_pause[0].words] == [w.text for w in final.words] == SPOKEN  # all of it was decoded
    assert at_pause[1].text == at_pause[0].text and answered == [1, 2]


async def test_a_pause_partial_holds_the_last_words_though_the_recogniser_needs_more_audio_after_them(
    sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """The streaming recogniser emits a syllable only once it has heard well past it; the segmenter calls a pause after
    0.24 s of quiet. A call's last words are often its incident words, so the pause partial must hold them already."""
    pool = RecognitionPool([sherpa], workers=1)
    for pcm in mandarin:
        whole = direct(sherpa, pcm)
        speech = pcm[: int((whole.words[-1].start + 0.2) * SAMPLE_RATE) * 2]  # cut 0.2 s into the last syllable
        assert direct(sherpa, speech).pinyin == whole.pinyin
        handle = pool.open("paused")
        handle.feed(speech + bytes(int(0.24 * SAMPLE_RATE) * 2))  # the speech and the quiet the segmenter waits for
        handle.pause()
        at_pause = await asyncio.wait_for(anext(p.transcript async for p in handle.partials() if p.at_pause), 30)
        final = await handle.finish()
        assert at_pause.pinyin == final.pinyin == whole.pinyin  # the silence let in at the pause changed no word ...
        assert [w.start for w in final.words] == [w.start for w in whole.words]  # ... and is taken out of the times
    pool.close()


async def test_a_pause_partial_carries_every_hearing(sherpa_model: Path, mandarin: list[bytes]) -> None:
    """At a pause the dispatcher weighs the hearings as it does a final's: each is flushed for its last words, and
    the silence let in is taken out of their times (on their own clocks, resampled)."""
    engine = SherpaEngine(sherpa_model, KEYWORDS, alternative_speeds=(0.9, 1.1))
    pool = RecognitionPool([engine], workers=1, queue_size=10, spare_lag_s=10.0)
    before, quiet, after = mandarin[1], bytes(int(0.24 * SAMPLE_RATE) * 2), mandarin[2]
    first_part, unpaused = direct(engine, before), direct(engine, before + quiet + after)
    handle = pool.open("paused")
    handle.feed(before + quiet)
    handle.pause()
    at_pause = await asyncio.wait_for(anext(p.transcript async for p in handle.partials() if p.at_pause), 30)
    handle.feed(after)  # the speaker goes on
    final = await handle.finish()
    pool.close()
    assert len(at_pause.alternatives) == len(final.alternatives) == 2
    assert [a.pinyin for a in at_pause.alternatives] == [a.pinyin for a in first_part.alternatives]
    for flushed, plain in zip(final.alternatives, unpaused.alternatives, strict=True):
        starts = [(w.text, w.start) for w in flushed.words]
        assert [t for t, _ in starts] == [w.text for w in plain.words]
        # on the call's clock: within a few of the decoder's 40 ms frames (the silence let in is ~0.4 s)
        assert max(abs(t - w.start) for (_, t), w in zip(starts, plain.words, strict=True)) < 0.15


async def test_a_pause_is_served_where_it_was_said_however_far_behind_decoding_is(
    sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """A pause's flush feeds the streams quiet. Under load (or a burst of audio) the speech after the pause is already
    waiting when a worker gets to it: the flush must still go where the pause was, not after the words that followed
    (inside them it garbles them), so that what is heard does not depend on how busy the machine was."""
    before, quiet, after = mandarin[1], bytes(int(0.24 * SAMPLE_RATE) * 2), mandarin[2]
    heard: list[tuple[str, str]] = []
    for keeping_up in (True, False):
        pool = RecognitionPool([sherpa], workers=1)
        handle = pool.open("paused")
        handle.feed(before + quiet)
        handle.pause()
        if keeping_up:  # the partial at the pause came before the speaker went on
            at_pause = await asyncio.wait_for(anext(p.transcript async for p in handle.partials() if p.at_pause), 30)
        handle.feed(after)  # behind: the speaker went on before a worker reached the pause
        if not keeping_up:
            at_pause = await asyncio.wait_for(anext(p.transcript async for p in handle.partials() if p.at_pause), 30)
        final = await handle.finish()
        pool.close()
        heard.append((at_pause.pinyin, final.pinyin))
    assert heard[0] == heard[1]
    assert heard[1][0] == direct(sherpa, before).pinyin != heard[1][1]  # the pause's partial holds only what came before


async def test_a_pause_the_speaker_went_on_from_before_it_was_served_is_skipped(
    sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """Two pauses before a worker reached the first: the first is stale (the speaker went on) and its flush would only
    delay the second's partial, so only the second is served, at its own place."""
    quiet = bytes(int(0.24 * SAMPLE_RATE) * 2)
    pool = RecognitionPool([sherpa], workers=1)
    handle = pool.open("paused-twice")
    handle.feed(mandarin[1] + quiet)
    assert handle.pause() == 1
    handle.feed(mandarin[2] + quiet)
    assert handle.pause() == 2
    handle.feed(mandarin[0])
    final = await handle.finish()
    served = [p async for p in handle.partials() if p.at_pause]
    pool.close()
    assert [p.pause for p in served] == [2]
    assert served[0].transcript.pinyin == direct(sherpa, mandarin[1] + quiet + mandarin[2]).pinyin != final.pinyin


async def test_the_last_pause_partial_is_the_final_decoded_once(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    """pause(last=True): the caller let go of the key, nothing more will be fed. The streams are finished there: the
    partial is the final transcript (as decoded without the pause), and finish() returns it without decoding again."""
    spy = DecodingThreads(sherpa)
    pool = RecognitionPool([spy], workers=1)  # type: ignore[list-item]
    pcm = mandarin[0]
    handle = pool.open("let-go")
    handle.feed(pcm)
    handle.pause(last=True)
    at_pause = await asyncio.wait_for(anext(p async for p in handle.partials() if p.at_pause), 30)
    final = await handle.finish()
    pool.close()
    assert at_pause.transcript.partial and not final.partial
    assert at_pause.transcript.pinyin == final.pinyin == direct(sherpa, pcm).pinyin != ""
    assert spy.calls.count("finish") == 1 and "pause_partial" not in spy.calls

    pool_again = RecognitionPool([sherpa], workers=1)
    handle = pool_again.open("let-go-and-done")  # as the service does it: the utterance ends right after
    handle.feed(pcm)
    handle.pause(last=True)
    final = await handle.finish()
    at_pause = await asyncio.wait_for(anext(p async for p in handle.partials() if p.at_pause), 30)
    pool_again.close()
    assert at_pause.transcript.pinyin == final.pinyin != ""


async def test_both_engines_combined_on_one_utterance(vosk_grammar: VoskEngine, sherpa: SherpaEngine, sherpa_model: Path) -> None:
    pcm = decode_file(sherpa_model / "test_wavs" / "3.wav")
    pool = RecognitionPool([vosk_grammar, sherpa], workers=2)
    final = await feed_live(pool, "both", pcm)
    pool.close()
    alone = direct(sherpa, pcm)
    assert final.engine == "vosk+sherpa"
    assert {k.ref for k in final.keywords} == {"person:vincent", "country:france"} == {k.ref for k in alone.keywords}
    # text and words are Vosk's (sherpa gives no text): the Korean grammar's words, whatever it made of Mandarin
    assert final.words and {w.text for w in final.words} <= {HELLO, THANKS}
    assert final.text == " ".join(w.text for w in final.words)
    assert final.pinyin == alone.pinyin  # Hangul has no pinyin: the sherpa recogniser's is taken


async def test_back_pressure_refuses_live_and_queues_backlog(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    pool = RecognitionPool([sherpa], workers=1, queue_size=2)
    first, second = pool.open("a"), pool.open("b")
    with pytest.raises(PoolFull):
        pool.open("c")
    backlog = asyncio.create_task(pool.transcribe(mandarin[0], "old"))
    await asyncio.sleep(0.1)
    assert not backlog.done()  # waits for room instead of failing
    first.feed(mandarin[1])
    second.abort()
    assert (await first.finish()).pinyin
    result = await asyncio.wait_for(backlog, 30)
    assert result.pinyin == direct(sherpa, mandarin[0]).pinyin
    stats = pool.stats()
    assert (stats.rejected, stats.completed, stats.open_streams) == (1, 2, 0)
    pool.close()


class Feeds:
    """The real engine, noting each batch its streams are fed: (the stream's number, in the order the streams were
    started, which is the order they were first worked on; bytes)."""

    def __init__(self, engine: SherpaEngine) -> None:
        self.engine = engine
        self.fed: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def start_stream(self, *args: Any, **kwargs: Any) -> Any:
        stream = self.engine.start_stream(*args, **kwargs)
        fed, number = self.fed, len({n for n, _ in self.fed})

        class Stream:
            def __getattr__(self, name: str) -> Any:
                return getattr(stream, name)

            def feed(self, pcm: bytes) -> None:
                fed.append((number, len(pcm)))
                stream.feed(pcm)

        return Stream()

    def first(self, size: int) -> int:
        """Where the stream first fed `size` bytes was first fed."""
        number = next(n for n, fed in self.fed if fed == size)
        return next(i for i, (n, _) in enumerate(self.fed) if n == number)


async def test_a_stream_whose_speaker_paused_is_decoded_before_streams_only_being_fed(
    sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """One worker, busy; three streams queued with audio, then a fourth whose speaker paused: the pause is a
    decision waiting (the dispatcher alerts on its partial), so the fourth is decoded next, not after the three."""
    spy = Feeds(sherpa)
    pool = RecognitionPool([spy], workers=1)  # type: ignore[list-item]
    second = SAMPLE_RATE * 2
    busy = pool.open("busy")
    busy.feed(mandarin[0][: 2 * second])
    fed = [pool.open(f"fed{i}") for i in range(3)]
    for i, handle in enumerate(fed):
        handle.feed(mandarin[1][: second + i * FRAME_BYTES])  # lengths tell the streams apart
    paused = pool.open("paused")
    paused.feed(mandarin[2][: second // 2])
    paused.pause()
    assert (await asyncio.wait_for(anext(paused.partials()), 60)).at_pause
    results = await asyncio.gather(*(h.finish() for h in [busy, *fed, paused]))
    pool.close()
    assert all(r.pinyin for r in results)
    assert spy.first(second // 2) < min(spy.first(second + i * FRAME_BYTES) for i in range(3)), spy.fed


async def test_a_long_re_transcription_does_not_go_before_live_channels(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    """A whole archived utterance is fed and finished at once: it is due only for its last batch, so a live stream
    queued meanwhile is decoded between its batches, not after all of them."""
    spy = Feeds(sherpa)
    pool = RecognitionPool([spy], workers=1)  # type: ignore[list-item]
    archived = b"".join(mandarin)  # several batches of MAX_BATCH_S
    backlog = asyncio.create_task(pool.transcribe(archived, "archived"))
    await asyncio.sleep(0)  # transcribe() has fed it and asked for its final
    live = pool.open("live")
    live.feed(mandarin[3][: SAMPLE_RATE])  # still talking: its stream is only being fed
    await asyncio.wait_for(backlog, 60)
    heard = await live.finish()
    pool.close()
    assert heard.pinyin
    batches = [i for i, (n, _) in enumerate(spy.fed) if n == spy.fed[0][0]]
    assert len(batches) >= 3 and spy.first(SAMPLE_RATE) < batches[-1], spy.fed


async def test_after_a_pause_quiet_audio_is_decoded_only_if_speech_resumes(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    pool = RecognitionPool([sherpa], workers=1)
    quiet = bytes(SAMPLE_RATE * 2)  # 1 s
    ended = pool.open("ended")
    ended.feed(mandarin[0])
    ended.pause()
    before = ended.waiting()[0]
    ended.feed(quiet, voiced=False)  # the hang-over: held, not decoded
    assert ended.waiting()[0] <= before
    resumed = pool.open("resumed")
    resumed.feed(mandarin[0])
    resumed.pause()
    resumed.feed(quiet, voiced=False)
    resumed.feed(mandarin[1])  # speech again: the held second goes in first, in order
    first, both = await ended.finish(), await resumed.finish()
    pool.close()
    assert first.pinyin == direct(sherpa, mandarin[0]).pinyin  # nothing lost by not decoding the quiet end
    unpaused = direct(sherpa, mandarin[0] + quiet + mandarin[1]).words
    # the same syllables at the same times, within a tone and a few of the decoder's 40 ms frames: the pause's flush
    # (quiet fed where the pause was, taken out of the times) leaves the decoder's state a little different after it
    assert [w.text.rstrip("012345") for w in both.words] == [w.text.rstrip("012345") for w in unpaused]
    assert max(abs(a.start - b.start) for a, b in zip(both.words, unpaused, strict=True)) < 0.15


async def test_new_utterances_wait_in_the_archive_while_recognition_is_behind(
    sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    pool = RecognitionPool([sherpa], workers=1, queue_size=100, admit_lag_s=0.03)
    busy = pool.open("busy")
    busy.feed(b"".join(mandarin) * 3)  # ~50 s at once: its last audio waits well over 0.03 s for the one worker
    await asyncio.sleep(0.05)
    with pytest.raises(PoolFull):  # far from 100 open: refused for the lag alone
        pool.open("late")
    backlog = asyncio.create_task(pool.transcribe(mandarin[0], "old"))
    await asyncio.sleep(0.05)
    assert not backlog.done()  # the backlog waits while recognition is behind
    await busy.finish()
    assert (await asyncio.wait_for(backlog, 30)).pinyin
    pool.open("in time").abort()  # caught up: admitted again
    assert pool.stats().rejected == 1
    pool.close()


async def test_alternative_hearings_only_while_recognition_keeps_up(sherpa_model: Path, mandarin: list[bytes]) -> None:
    engine = SherpaEngine(sherpa_model, KEYWORDS, alternative_speeds=(0.9, 1.1))
    pool = RecognitionPool([engine], workers=1, queue_size=100, spare_lag_s=0.3)
    # at twice real time, as fast as a channel could ever talk; all at once it can wait 0.3 s on a busy CI machine
    quiet = await feed_live(pool, "quiet", mandarin[0], gap_s=0.01)
    assert len(quiet.alternatives) == 2  # CPU to spare: heard three times
    busy = pool.open("busy")
    busy.feed(b"".join(mandarin) * 2)  # ~34 s at once: its last audio waits well over 0.3 s for the one worker
    await asyncio.sleep(0.5)
    late = pool.open("late")  # admitted (the pool is not refusing) but heard once
    late.feed(mandarin[1])
    heard = await late.finish()
    assert heard.pinyin and heard.alternatives == ()
    # opened while the pool kept up, it dropped its alternatives as soon as the pool fell behind
    assert (await busy.finish()).alternatives == ()
    assert pool.stats().heard_once == 2
    pool.close()


async def test_an_utterance_heard_once_is_heard_again_as_three_hearings_would_have_heard_it(
    sherpa_model: Path, mandarin: list[bytes]
) -> None:  # fmt: skip
    """After its final, when recognition has time: the alternatives a stream with them would have made, the final's
    own words untouched; not when the time never comes (here: a wait of nothing)."""
    engine = SherpaEngine(sherpa_model, KEYWORDS, alternative_speeds=(0.9, 1.1))
    pool = RecognitionPool([engine], workers=1, queue_size=10, spare_lag_s=0.0)  # never time to spare: heard once
    handle = pool.open("once")
    handle.feed(mandarin[1])
    final = await handle.finish()
    assert handle.heard_once and final.alternatives == ()

    again = await pool.hear_again(mandarin[1], final, "once")

    assert again is not None and (again.pinyin, again.words, again.readable) == (final.pinyin, final.words, final.readable)
    three = direct(engine, mandarin[1])
    assert [a.pinyin for a in again.alternatives] == [a.pinyin for a in three.alternatives] != [final.pinyin] * 2
    assert [a.keywords for a in again.alternatives] == [a.keywords for a in three.alternatives]
    assert pool.stats().heard_again == 1
    pool.close()
    impatient = RecognitionPool([engine], workers=1, queue_size=10, spare_lag_s=0.0, late_wait_s=0.0)
    assert await impatient.hear_again(mandarin[1], final, "once") is None
    assert impatient.stats().heard_again == 0
    impatient.close()
    hears_once = RecognitionPool([SherpaEngine(sherpa_model, KEYWORDS)])  # no alternative speeds: nothing to add
    assert not hears_once.hears_again and await hears_once.hear_again(mandarin[1], final) is None
    hears_once.close()


async def test_lag_figures_show_undecoded_audio(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    pool = RecognitionPool([sherpa], workers=1, queue_size=8)
    handles = [pool.open(f"u{i}") for i in range(3)]
    for handle, pcm in zip(handles, mandarin, strict=False):
        handle.feed(pcm * 2)  # ~8 s each at once: more than one worker decodes in a blink
    await asyncio.sleep(0.05)
    lag = pool.stats()
    assert lag.open_streams == 3 and lag.waiting_streams >= 1
    assert lag.waiting_audio_s > 5 and lag.oldest_wait_s > 0.04
    await asyncio.gather(*(h.finish() for h in handles))
    after = pool.stats()
    assert (after.waiting_streams, after.waiting_audio_s, after.oldest_wait_s, after.completed) == (0, 0.0, 0.0, 3)
    pool.close()


async def test_an_engine_error_fails_that_utterance_only(sherpa: SherpaEngine, mandarin: list[bytes]) -> None:
    pool = RecognitionPool([sherpa], workers=1)
    broken = pool.open("odd")
    broken.feed(b"\x00" * (FRAME_BYTES + 1))  # not whole int16 samples: the engine raises
    with pytest.raises(RecognitionFailed):
        await broken.finish()
    assert (await pool.transcribe(mandarin[0])).pinyin
    assert (pool.stats().failed, pool.stats().completed) == (1, 1)
    pool.close()


async def test_silence_gives_an_empty_transcript(sherpa: SherpaEngine) -> None:
    pool = RecognitionPool([sherpa], workers=1)
    assert (await pool.transcribe(bytes(SAMPLE_RATE * 2))).empty
    pool.close()


def test_engines_from_config_leave_a_missing_model_out(
    tmp_path: Path, sherpa_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("JINGBAO_VOSK_MODEL", str(tmp_path / "no-vosk"))
    assert build_engines(AsrConfig(engine="none")) == []
    auto = build_engines(AsrConfig(engine="auto", sherpa_model=sherpa_model), KEYWORDS)
    assert [e.name for e in auto] == ["sherpa"] and auto[0].noise_floor is None  # the audio as received by default
    suppressed = build_engines(AsrConfig(engine="sherpa", sherpa_model=sherpa_model, noise_floor=0.4), KEYWORDS)
    assert [e.noise_floor for e in suppressed] == [0.4]
    assert build_engines(AsrConfig(engine="vosk")) == []
    assert "jingbao model fetch --vosk" in caplog.text and "stay pending" in caplog.text
