"""bench/voices.py with the real Kokoro model and the real recogniser: a sentence rendered in one voice is 16 kHz
mono speech of a plausible length, cached, and the dispatcher hears its place from it (segmenter -> sherpa-onnx ->
Extractor, the service's path). Skipped only when ../shared/models/kokoro-zh-v1.0 is absent."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from asr.keywords import jurisdiction_keywords
from asr.pinyin import syllable_errors, text_to_syllables
from asr.sherpa_engine import SherpaEngine
from bench.voices import KOKORO_DIR, PAD_S, KokoroVoices, radio_copies, spell_latin
from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH, levels_dbfs
from bridge.decode import decode_file
from dispatch.classify import incident_terms
from dispatch.extract import Extractor
from dispatch.from_audio import extract_file
from dispatch.gazetteer import load_jurisdiction
from tests.conftest import RADIO_DEGRADE, REPO
from tests.support.radio import speech_span

JURISDICTION = REPO / "config" / "jurisdiction.yaml"
SENTENCE = "东郊农贸市场门口有个电动车被偷了"  # demo call c003: 16 syllables
VOICE = "zm_yunjian"


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> KokoroVoices:
    if not (KOKORO_DIR / "voices-zh-v1.0.bin").exists():
        pytest.skip(f"no Kokoro Mandarin model in {KOKORO_DIR}")
    return KokoroVoices(KOKORO_DIR, tmp_path_factory.mktemp("bench-audio"))


@pytest.fixture(scope="module")
def rendering(voices: KokoroVoices) -> Path:
    return voices.render(SENTENCE, VOICE)


def test_the_eight_mandarin_voices(voices: KokoroVoices) -> None:
    assert len(voices.voices) == 8
    assert sum(v.startswith("zf_") for v in voices.voices) == 4 and sum(v.startswith("zm_") for v in voices.voices) == 4
    with pytest.raises(ValueError, match="unknown voice"):
        voices.render(SENTENCE, "af_heart")


@pytest.mark.slow
def test_a_rendering_is_16k_mono_speech_of_plausible_length(rendering: Path) -> None:
    with wave.open(str(rendering)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, SAMPLE_WIDTH)
        seconds = w.getnframes() / SAMPLE_RATE
    speech = seconds - 2 * PAD_S
    assert 16 * 0.12 < speech < 16 * 0.4, f"{speech:.2f} s of speech for 16 syllables"
    pcm = decode_file(rendering)
    onset, offset = speech_span(pcm)
    assert onset >= PAD_S - 0.05 and offset <= seconds - PAD_S + 0.05, (onset, offset, seconds)
    peak, rms = levels_dbfs(pcm)
    assert -20 < peak < 0 and rms > -40, (peak, rms)  # speech, not silence, and not clipped


@pytest.mark.slow
def test_a_second_render_reads_the_cache(voices: KokoroVoices, rendering: Path) -> None:
    made = rendering.stat().st_mtime_ns
    rendered = voices.stats.rendered
    assert voices.render(SENTENCE, VOICE) == rendering
    assert voices.stats.rendered == rendered and rendering.stat().st_mtime_ns == made


@pytest.mark.slow
def test_the_recogniser_hears_the_place(rendering: Path, sherpa_model: Path) -> None:
    engine = SherpaEngine(sherpa_model, jurisdiction_keywords(JURISDICTION, incident_terms()))
    heard = list(extract_file(rendering, [engine], Extractor(load_jurisdiction(JURISDICTION))))
    assert len(heard) == 1, [h.transcript.pinyin for h in heard]
    said = text_to_syllables(SENTENCE)
    errors = syllable_errors(said, heard[0].transcript.pinyin.split(), tones=False)
    assert errors <= 3, heard[0].transcript.pinyin  # measured 0 of 16 syllables wrong
    assert heard[0].result["place"] and heard[0].result["place"]["id"] == "dongjiao-nongmao", heard[0].transcript.pinyin


@pytest.mark.slow
def test_radio_copies_are_cached(rendering: Path, tmp_path: Path) -> None:
    first = radio_copies([rendering], 10, range(2), tmp_path, RADIO_DEGRADE)[rendering]
    assert len(first) == 2 and first[0].read_bytes() != first[1].read_bytes()  # two noise realisations
    made = [p.stat().st_mtime_ns for p in first]
    again = radio_copies([rendering], 10, range(2), tmp_path, RADIO_DEGRADE)[rendering]
    assert again == first and [p.stat().st_mtime_ns for p in again] == made
    assert len(decode_file(first[0])) > len(decode_file(rendering))  # lead, click, squelch tail and trail added


def test_latin_letters_are_named() -> None:
    assert spell_latin("地铁站B口") == "地铁站比口"
