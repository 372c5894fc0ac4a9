"""Live recognition on the real sherpa-onnx model and a real archive: utterances fed as a channel feeds them, the pool
full (back-pressure, lag figures in /api/channels and the log), the backlog sweep, bounded retries, no utterance
recognised twice, silence stored but not dispatched."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from asr.live import LAG_LOG_EVERY_S, MAX_ATTEMPTS, LiveRecognition, RecognisedUtterance
from asr.sherpa_engine import SherpaEngine
from asr.transcript import Transcript
from asr.worker import RecognitionPool
from bridge.archive import Archive, ArchiveUnavailable
from bridge.audio import FRAME_BYTES, SAMPLE_RATE
from bridge.config import load_config
from bridge.decode import decode_file
from bridge.events import (
    Utterance,
    UtteranceAudio,
    UtteranceDiscarded,
    UtterancePaused,
    UtteranceStarted,
    new_utterance_id,
)
from bridge.service import Service
from tests.dispatch.rig import eventually
from tests.support.disk import fill, small_disk

__all__ = ["small_disk"]  # a fixture, imported for pytest

REPO = Path(__file__).resolve().parents[2]
BYTES_PER_S = SAMPLE_RATE * 2


@pytest.fixture(scope="module")
def sherpa(sherpa_model: Path) -> SherpaEngine:
    return SherpaEngine(sherpa_model, num_threads=1)


@pytest.fixture(scope="module")
def mandarin(shared_audio: Path) -> list[bytes]:
    return [decode_file(p) for p in sorted(shared_audio.glob("aishell*.wav"))[:4]]


@pytest.fixture
def service(tmp_path: Path, calls_audio: Path) -> Service:
    return make_service(tmp_path, tmp_path / "data", calls_audio)


def make_service(tmp_path: Path, data_dir: Path, calls_audio: Path) -> Service:
    """A service (not running) whose archive, store and bus the recognition under test uses; ASR is built here."""
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(data_dir), "audio_format": "wav", "reserve_mb": 0},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "dispatch": {"enabled": False},
        "channels": [{"id": ch, "name": ch, "source": {"type": "file", "paths": [str(calls_audio)]}}
                     for ch in ("ch-a", "ch-b")],
    }), encoding="utf-8")
    return Service(load_config(config_path))


class Dispatched:
    """The transcript hook: what would be dispatched, per utterance (and in what order, with when it was heard)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.transcripts: dict[str, Transcript] = {}
        self.heard: list[tuple[Transcript, RecognisedUtterance, float]] = []

    async def __call__(self, transcript: Transcript, utterance: RecognisedUtterance) -> None:
        self.calls[utterance.id] += 1
        self.transcripts[utterance.id] = transcript
        self.heard.append((transcript, utterance, time.monotonic()))


def recognition(
    service: Service, engine: SherpaEngine, queue_size: int = 4, on_partial: Dispatched | None = None
) -> tuple[LiveRecognition, Dispatched]:
    dispatched = Dispatched()
    pool = RecognitionPool([engine], workers=1, queue_size=queue_size)
    service.recognition = LiveRecognition(pool, service.archive, service.transcripts, service.bus, dispatched, on_partial)
    return service.recognition, dispatched


async def start_speaking(live: LiveRecognition, channel: str, pcm: bytes) -> Utterance:
    """Speech starts and all its audio arrives in 0.5 s pieces, as a channel feeds it; the utterance is not ended."""
    start = time.time()
    utterance = Utterance(new_utterance_id(start), channel, start, start + len(pcm) / BYTES_PER_S, pcm)
    piece = BYTES_PER_S // 2
    await live.on_event(UtteranceStarted(channel, utterance.id, start, pcm[:piece]), None)
    for i in range(piece, len(pcm), piece):
        await live.on_event(UtteranceAudio(channel, utterance.id, pcm[i : i + piece]), None)
    return utterance


async def end_speaking(live: LiveRecognition, archive: Archive, utterance: Utterance) -> None:
    """The utterance ends: archived (status pending), then handed to recognition, as the channel does."""
    archived = await asyncio.to_thread(archive.store, utterance)
    await live.on_event(utterance, archived)


async def speak(live: LiveRecognition, archive: Archive, channel: str, pcm: bytes) -> str:
    utterance = await start_speaking(live, channel, pcm)
    await end_speaking(live, archive, utterance)
    return utterance.id


async def settled(live: LiveRecognition) -> None:
    """Until every live recognition has finished and stored its transcript."""
    for _ in range(600):
        if not live._busy and not live.pool.stats().open_streams:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("live recognition did not finish")


def status(archive: Archive, utterance_id: str) -> str:
    return archive.get(utterance_id).status


async def test_a_full_pool_leaves_the_utterance_pending_and_the_lag_shows(
    service: Service, sherpa: SherpaEngine, mandarin: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asr.live")
    live, dispatched = recognition(service, sherpa, queue_size=1)
    idle = {state["id"]: state["asr"] for state in service.channel_states()}
    assert idle["ch-a"]["pending"] == idle["ch-b"]["pending"] == 0 and idle["ch-a"]["open"] == 0
    live.log_lag()
    assert "behind" not in caplog.text  # nothing logged while recognition keeps up

    talking = await start_speaking(live, "ch-a", b"".join(mandarin) * 2)  # ~30 s at once: the one place is taken
    refused = await speak(live, service.archive, "ch-b", mandarin[0])  # pool full: not admitted, stays pending
    loaded = {state["id"]: state["asr"] for state in service.channel_states()}
    assert loaded["ch-b"]["pending"] == 1 and loaded["ch-a"]["pending"] == 0 and loaded["ch-a"]["pending_total"] == 1
    assert loaded["ch-a"]["open"] == 1 and loaded["ch-a"]["rejected"] == 1 and loaded["ch-a"]["waiting_audio_s"] > 10
    live.log_lag()
    assert "speech recognition behind: 1 utterances pending [ch-b 1]; 1 being recognised" in caplog.text
    live.log_lag()  # within the minute: not repeated
    assert caplog.text.count("speech recognition behind") == 1
    live._lag_logged_at -= LAG_LOG_EVERY_S  # a minute later, still behind: logged again, with the trend
    live.log_lag()
    assert "speech recognition behind: 1 utterances pending (was 1) [ch-b 1]" in caplog.text

    await end_speaking(live, service.archive, talking)
    await settled(live)
    assert status(service.archive, talking.id) == "transcribed" and status(service.archive, refused) == "pending"
    await live.sweep_backlog()  # the sweep takes it up once the pool has room
    assert status(service.archive, refused) == "transcribed" and service.archive.pending() == []
    assert dispatched.calls == {talking.id: 1, refused: 1}
    assert dispatched.transcripts[refused].pinyin == service.transcripts.get(refused).pinyin != ""
    caught_up = {state["id"]: state["asr"] for state in service.channel_states()}
    assert caught_up["ch-b"]["pending"] == 0 and caught_up["ch-b"]["open"] == 0 and caught_up["ch-b"]["waiting_audio_s"] == 0
    live.log_lag()
    assert "speech recognition caught up" in caplog.text
    live.pool.close()


async def test_an_utterance_finished_live_during_a_sweep_is_not_recognised_again(
    service: Service, sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """The sweep's pending list is a snapshot: a live utterance in it may be stored by the time the sweep reaches it."""
    live, dispatched = recognition(service, sherpa)
    backlog = Utterance(new_utterance_id(time.time() - 60), "ch-a", time.time() - 60, time.time() - 40,
                        b"".join(mandarin))  # archived while ASR was down: the sweep takes it first
    service.archive.store(backlog)
    spoken = [await start_speaking(live, "ch-b", pcm) for pcm in mandarin[:2]]
    for utterance in spoken:
        await end_speaking(live, service.archive, utterance)
    sweep = asyncio.create_task(live.sweep_backlog())  # its snapshot: the backlog one, then the two live ones

    async def sweep_on() -> None:  # sweeps back to back: one runs while each live result is being stored
        while True:
            await live.sweep_backlog()
            await asyncio.sleep(0)

    sweeper = asyncio.create_task(sweep_on())
    await settled(live)
    await sweep
    sweeper.cancel()
    for _ in range(3):  # more sweeps find nothing left to do
        await live.sweep_backlog()
    assert dispatched.calls == {backlog.id: 1, spoken[0].id: 1, spoken[1].id: 1}
    assert live.pool.stats().completed == 3 and service.archive.pending() == []
    live.pool.close()


async def test_failures_are_retried_a_bounded_number_of_times(
    service: Service, sherpa: SherpaEngine, mandarin: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    live, dispatched = recognition(service, sherpa)
    now = time.time()
    broken = service.archive.store(Utterance(new_utterance_id(now), "ch-a", now, now + 4, mandarin[0]))
    flaky = service.archive.store(Utterance(new_utterance_id(now + 5), "ch-b", now + 5, now + 9, mandarin[1]))
    flaky_file = service.archive.data_dir / flaky.path
    good_audio = flaky_file.read_bytes()
    for row in (broken, flaky):
        (service.archive.data_dir / row.path).write_bytes(b"RIFF not audio any more")

    await live.sweep_backlog()
    flaky_file.write_bytes(good_audio)  # the cause went away (a disk back online): the next sweep succeeds
    for _ in range(MAX_ATTEMPTS + 1):
        await live.sweep_backlog()
        if status(service.archive, broken.id) == "pending":
            assert live.lag().pending == {"ch-a": 1}  # still waiting for its next attempt
    assert status(service.archive, flaky.id) == "transcribed" and dispatched.calls == {flaky.id: 1}
    assert status(service.archive, broken.id) == "asr_failed" and service.archive.pending() == []
    attempts = [r for r in caplog.records if broken.id in r.getMessage() and "failed" in r.getMessage()]
    assert len(attempts) == MAX_ATTEMPTS  # not retried after being marked
    assert "marked asr_failed" in attempts[-1].getMessage() and live.lag().pending == {}
    live.pool.close()


async def test_an_utterance_is_marked_transcribed_only_once_dispatch_has_had_it(
    service: Service, sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """A crash between storing the transcript and dispatching it must not lose the report: until dispatch has had it,
    the utterance stays pending (the next start recognises and dispatches it again)."""
    live, dispatched = recognition(service, sherpa)
    seen_while_dispatching: list[tuple[str, bool]] = []

    async def dispatch(transcript: Transcript, utterance: RecognisedUtterance) -> None:
        stored = service.transcripts.get(utterance.id) is not None
        seen_while_dispatching.append((status(service.archive, utterance.id), stored))
        await dispatched(transcript, utterance)

    live.on_transcript = dispatch
    said = await speak(live, service.archive, "ch-a", mandarin[0])
    await settled(live)
    assert seen_while_dispatching == [("pending", True)]  # the console can read it; a crash leaves it to recognise
    assert status(service.archive, said) == "transcribed" and dispatched.calls == {said: 1}
    live.pool.close()


async def test_an_utterance_heard_once_is_heard_again_stored_shown_and_handed_over_after_its_final(
    service: Service, sherpa_model: Path, mandarin: list[bytes]
) -> None:  # fmt: skip
    """Recognition behind (here: never time to spare live), the final is dispatched heard once, at once; then the
    utterance is heard again with the alternative hearings, stored with them, shown again and handed over."""
    engine = SherpaEngine(sherpa_model, num_threads=1, alternative_speeds=(0.9, 1.1))
    dispatched, again = Dispatched(), Dispatched()
    pool = RecognitionPool([engine], workers=1, queue_size=4, spare_lag_s=0.0)
    live = LiveRecognition(pool, service.archive, service.transcripts, service.bus, dispatched, on_heard_again=again)
    shown = service.bus.subscribe({"transcript"})
    said = await speak(live, service.archive, "ch-a", mandarin[0])
    await settled(live)
    await eventually(lambda: again.calls, timeout=30, what="the utterance heard again")

    first, later = dispatched.transcripts[said], again.transcripts[said]
    assert first.alternatives == () and len(later.alternatives) == 2 and later.pinyin == first.pinyin
    assert dispatched.heard[0][2] < again.heard[0][2]  # the final went first, as heard
    stored = service.transcripts.get(said)
    assert stored is not None and [a.pinyin for a in stored.alternatives] == [a.pinyin for a in later.alternatives]
    events = [(await shown.get()).data for _ in range(2)]
    assert [len(e["alternatives"]) for e in events] == [0, 2]
    assert status(service.archive, said) == "transcribed"
    pool.close()


async def test_silence_is_stored_empty_and_not_dispatched(service: Service, sherpa: SherpaEngine) -> None:
    live, dispatched = recognition(service, sherpa)
    silent = await speak(live, service.archive, "ch-a", bytes(2 * BYTES_PER_S + FRAME_BYTES))
    await settled(live)
    stored = service.transcripts.get(silent)
    assert stored is not None and stored.empty and status(service.archive, silent) == "transcribed"
    assert [(t["utterance_id"], t["text"], t["pinyin"]) for t in service.transcripts.recent(5)] == [(silent, "", "")]
    assert dispatched.calls == {}
    live.pool.close()


async def test_partials_are_handed_over_while_speaking_and_the_end_always_follows(
    service: Service, sherpa: SherpaEngine, calls_audio: Path
) -> None:
    """The dispatcher decides on partials (provisional alerts): it gets each one as it is recognised, without
    holding up recognition, and then the utterance's end -- its final, even an empty one, or an empty final when the
    segmenter discards the utterance after partials were handed over."""
    partials = Dispatched()
    live, dispatched = recognition(service, sherpa, on_partial=partials)
    call = decode_file(calls_audio / "c001.wav")
    spoken = await start_speaking(live, "ch-a", call)
    for _ in range(200):  # recognised while the utterance is still open
        if partials.calls[spoken.id] >= 2:
            break
        await asyncio.sleep(0.05)
    assert partials.calls[spoken.id] >= 2 and dispatched.calls == {}
    await end_speaking(live, service.archive, spoken)
    await settled(live)
    assert dispatched.calls == {spoken.id: 1} and not dispatched.transcripts[spoken.id].partial
    heard = [(t, ref) for t, ref, _ in partials.heard]
    assert all(t.partial and ref.id == spoken.id and ref.channel == "ch-a" and ref.start == spoken.start for t, ref in heard)
    assert [ref.end for _, ref in heard] == sorted(ref.end for _, ref in heard)  # when each was heard
    assert partials.heard[-1][2] <= dispatched.heard[-1][2]  # the final comes after every partial

    cut = await start_speaking(live, "ch-b", call)  # a key-up the segmenter then throws away, after partials went out
    for _ in range(200):
        if partials.calls[cut.id]:
            break
        await asyncio.sleep(0.05)
    assert partials.calls[cut.id]
    await live.on_event(UtteranceDiscarded("ch-b", cut.id, 1.0), None)
    for _ in range(100):
        if dispatched.calls[cut.id]:
            break
        await asyncio.sleep(0.02)
    ended = dispatched.transcripts[cut.id]
    assert dispatched.calls[cut.id] == 1 and ended.empty and not ended.partial
    await settled(live)
    live.pool.close()


async def test_a_pause_hands_over_everything_said_so_far_before_the_utterance_ends(
    service: Service, sherpa: SherpaEngine, calls_audio: Path
) -> None:
    """The segmenter hears the speaker pause (UtterancePaused) long before its hang-over ends the utterance: the
    dispatcher gets a partial marked `paused` at once, holding what the final will say."""
    partials = Dispatched()
    live, dispatched = recognition(service, sherpa, on_partial=partials)
    call = decode_file(calls_audio / "c001.wav") + bytes(int(0.4 * BYTES_PER_S))  # the call, then 0.4 s of quiet
    spoken = await start_speaking(live, "ch-a", call)
    await live.on_event(UtterancePaused("ch-a", spoken.id, spoken.end, spoken.end - 0.4), None)
    for _ in range(200):
        if any(ref.paused for _, ref, _ in partials.heard):
            break
        await asyncio.sleep(0.05)
    (at_pause,) = [t for t, ref, _ in partials.heard if ref.paused]
    assert dispatched.calls == {}  # the utterance is still open
    await end_speaking(live, service.archive, spoken)
    await settled(live)
    assert at_pause.partial and at_pause.pinyin == dispatched.transcripts[spoken.id].pinyin != ""
    live.pool.close()


async def test_a_pause_that_goes_on_hands_its_partial_over_again_settled(
    service: Service, sherpa: SherpaEngine, calls_audio: Path
) -> None:
    """The pause goes on for the segmenter's `long_pause_ms` (a second UtterancePaused, settled): the partial taken at
    it is handed over again, marked settled, without recognising anything again; a pause that settles before its
    partial is ready hands that partial over once, settled."""
    partials = Dispatched()
    live, _ = recognition(service, sherpa, on_partial=partials)
    call = decode_file(calls_audio / "c001.wav") + bytes(int(0.6 * BYTES_PER_S))

    async def paused(utterance: Utterance, count: int) -> list[tuple[Transcript, RecognisedUtterance]]:
        for _ in range(200):
            if len(found := [(t, ref) for t, ref, _ in partials.heard if ref.id == utterance.id and ref.paused]) >= count:
                return found
            await asyncio.sleep(0.05)
        raise TimeoutError("no partial at the pause")

    late = await start_speaking(live, "ch-a", call)
    await live.on_event(UtterancePaused("ch-a", late.id, late.end - 0.3, late.end - 0.6), None)
    ((at_pause, ref),) = await paused(late, 1)
    assert not ref.settled
    await live.on_event(UtterancePaused("ch-a", late.id, late.end, late.end - 0.6, settled=True), None)
    (_, (again, settled_ref)) = await paused(late, 2)
    assert again is at_pause and settled_ref.settled and settled_ref.paused
    await end_speaking(live, service.archive, late)

    early = await start_speaking(live, "ch-b", call)
    await live.on_event(UtterancePaused("ch-b", early.id, early.end - 0.3, early.end - 0.6), None)
    await live.on_event(UtterancePaused("ch-b", early.id, early.end, early.end - 0.6, settled=True), None)
    ((_, ref),) = await paused(early, 1)
    assert ref.settled
    await end_speaking(live, service.archive, early)
    await settled(live)
    assert len([ref for _, ref, _ in partials.heard if ref.id == early.id and ref.paused]) == 1
    live.pool.close()


async def test_the_pause_a_caller_lets_go_of_the_key_at_hands_over_the_final_settled_before_the_archive(
    service: Service, sherpa: SherpaEngine, calls_audio: Path
) -> None:
    """The segmenter heard the squelch tail (UtterancePaused `unkeyed`, then the utterance ends): the partial handed
    over, settled, is the final transcript itself, decoded once, there, before the utterance is even archived."""
    partials = Dispatched()
    live, dispatched = recognition(service, sherpa, on_partial=partials)
    spoken = await start_speaking(live, "ch-a", decode_file(calls_audio / "c001.wav"))
    await live.on_event(UtterancePaused("ch-a", spoken.id, spoken.end, spoken.end, settled=True, unkeyed=True), None)
    for _ in range(200):
        if any(ref.paused for _, ref, _ in partials.heard):
            break
        await asyncio.sleep(0.05)
    ((at_key_up, ref),) = [(t, ref) for t, ref, _ in partials.heard if ref.paused]
    assert ref.settled and dispatched.calls == {}  # not archived yet, let alone transcribed
    await end_speaking(live, service.archive, spoken)
    await settled(live)
    final = dispatched.transcripts[spoken.id]
    assert at_key_up.partial and not final.partial
    assert at_key_up.pinyin == final.pinyin != "" and at_key_up.words == final.words
    live.pool.close()


async def test_utterances_the_archive_holds_are_recognised_and_dispatched_at_once(
    tmp_path: Path, small_disk: Path, calls_audio: Path, sherpa: SherpaEngine, mandarin: list[bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The disk is full (a real one): the archive holds both utterances in memory, one recognised as it was spoken,
    the other (no room in the pool then) by the sweep from memory; both dispatched at once. When the disk has room
    again each is written with its status, and its transcript is stored; none is recognised twice."""
    service = make_service(tmp_path, small_disk, calls_audio)
    live, dispatched = recognition(service, sherpa, queue_size=1)
    filler = fill(small_disk)
    streamed = await start_speaking(live, "ch-a", mandarin[0])
    crowded = await start_speaking(live, "ch-b", mandarin[1])  # the pool's one place is taken: not admitted
    for utterance in (streamed, crowded):
        with pytest.raises(ArchiveUnavailable):
            await asyncio.to_thread(service.archive.store, utterance)
        await live.on_event(utterance, None)  # as the channel hands over an utterance the archive holds
    for _ in range(600):
        if dispatched.calls[streamed.id]:
            break
        await asyncio.sleep(0.05)
    await live.sweep_backlog()
    assert dispatched.calls == {streamed.id: 1, crowded.id: 1}
    assert all(dispatched.transcripts[u.id].pinyin for u in (streamed, crowded))
    assert service.archive.held == 2 and service.archive.pending() == []  # nothing written: the disk is full
    assert "cannot be stored now" in caplog.text  # the transcripts too wait in memory (the database is on that disk)

    filler.unlink()
    assert service.archive.retry_held() == 2
    await live.sweep_backlog()
    for utterance in (streamed, crowded):
        assert status(service.archive, utterance.id) == "transcribed"
        assert service.transcripts.get(utterance.id).pinyin == dispatched.transcripts[utterance.id].pinyin
        assert service.archive.read_pcm(utterance.id) == utterance.pcm
    await live.sweep_backlog()
    assert dispatched.calls == {streamed.id: 1, crowded.id: 1} and not live._busy and live.lag().pending == {}
    assert service.archive.active_faults == [] and service.archive.verify().ok
    live.pool.close()


async def test_a_transcript_made_elsewhere_is_taken_for_a_pending_utterance_and_spares_its_recognition(
    service: Service, sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """Central passes on a recognition worker's transcript (bridge/recognition_node.py): an utterance still pending
    here is stored, dispatched and marked transcribed with it, and the sweep does not recognise it again; one
    recognised here already, or one this box does not have, is left alone."""
    live, dispatched = recognition(service, sherpa)
    now = time.time()
    pending = Utterance(new_utterance_id(now - 60), "ch-a", now - 60, now - 55, mandarin[0])
    service.archive.store(pending)  # archived while recognition here was behind
    elsewhere = Transcript(text="", pinyin="mei3 shi2 jie1", engine="sherpa", readable="美食街")
    assert await live.recognised_elsewhere(pending.id, elsewhere)
    assert not await live.recognised_elsewhere(pending.id, elsewhere), "taken already"
    assert not await live.recognised_elsewhere(new_utterance_id(now), elsewhere), "not this box's"
    await live.sweep_backlog()
    assert dispatched.calls == {pending.id: 1} and dispatched.transcripts[pending.id] == elsewhere
    assert service.archive.get(pending.id).status == "transcribed" and service.archive.pending() == []
    assert service.transcripts.get(pending.id).pinyin == "mei3 shi2 jie1"
    assert live.pool.stats().completed == 0, "nothing recognised here"
    live.pool.close()


async def test_a_held_utterance_written_later_and_recognised_elsewhere_is_not_recognised_again_from_memory(
    service: Service, sherpa: SherpaEngine, mandarin: list[bytes]
) -> None:
    """Held in memory (the disk full, the pool full), written by the archive's retry, then a worker's transcript comes
    back through central: the sweep must not recognise it again from memory."""
    live, dispatched = recognition(service, sherpa)
    now = time.time()
    held = Utterance(new_utterance_id(now - 30), "ch-a", now - 30, now - 25, mandarin[0])
    await live.on_event(held, None)  # not admitted, not archived: kept in memory for the sweep
    service.archive.store(held)  # the retry wrote it (pending)
    assert await live.recognised_elsewhere(held.id, Transcript(text="", pinyin="hao3", engine="sherpa"))
    await live.sweep_backlog()
    assert dispatched.calls == {held.id: 1} and live.pool.stats().completed == 0
    live.pool.close()
