"""`jingbao transcribe` through a subprocess, as a user runs it: segmentation, JSON lines, keywords from the
config's jurisdiction, bad files reported without stopping the others."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.audio import SAMPLE_RATE
from bridge.decode import decode_file

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"file", "start", "end", "text", "pinyin", "readable", "words", "keywords", "engine", "conf", "alternatives"}


def jingbao(*args: str, sherpa_model: Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "JINGBAO_SHERPA_MODEL": str(sherpa_model), "HOME": str(REPO / "var"),
           "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def two_calls(calls_audio: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """c001 and c005 one after the other with 1.5 s of silence between: two utterances in one file."""
    gap = bytes(int(1.5 * SAMPLE_RATE) * 2)
    pcm = gap + decode_file(calls_audio / "c001.wav") + gap + decode_file(calls_audio / "c005.wav") + gap
    path = tmp_path_factory.mktemp("cli") / "two_calls.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return path


def test_json_lines_one_per_utterance_with_keywords(two_calls: Path, sherpa_model: Path) -> None:
    done = jingbao("transcribe", str(two_calls), "--json", "--engine", "sherpa", "--config", "config/demo.yaml",
                   sherpa_model=sherpa_model)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2
    assert all(set(line) == FIELDS and line["engine"] == "sherpa" and line["file"] == str(two_calls) for line in lines)
    first, second = lines
    assert 1.0 <= first["start"] < 1.6 and first["end"] < second["start"]  # seconds from the file's start
    assert "mei3 shi2" in first["pinyin"] and "xian4 chang3" in first["pinyin"]
    assert first["text"] == "" and "美食街" in first["readable"] and "现场" in first["readable"]  # decoded characters
    assert {"meishijie", "yiyuan-jingwudian"} <= {k["ref"] for k in first["keywords"]}
    assert "qinchuan-dianzi" in {k["ref"] for k in second["keywords"]}
    assert all({"label", "ref", "start", "end", "score"} == set(k) for k in first["keywords"])
    # the hearings at the config's other speeds, as the dispatcher weighs them: the same call, heard again
    assert len(first["alternatives"]) == 2 and all("xian4 chang3" in a["pinyin"] for a in first["alternatives"])
    assert "\x1b[" not in done.stderr  # no progress bar when not on a terminal


def test_a_misheard_place_is_written_as_the_dispatcher_finds_it(calls_audio: Path, sherpa_model: Path) -> None:
    # c013, 康复路服装市场二楼有小偷偷手机: the market's head is heard "tang2 fu4 lu4", and written as named all the same
    done = jingbao("transcribe", str(calls_audio / "c013.wav"), "--json", "--engine", "sherpa", "--config",
                   "config/demo.yaml", sherpa_model=sherpa_model)  # fmt: skip
    assert done.returncode == 0, done.stderr
    [record] = [json.loads(line) for line in done.stdout.splitlines()]
    assert record["readable"].startswith("康复路服装市场") and "kang1 fu4 lu4" not in record["pinyin"], record


def test_readable_output_and_a_bad_file(two_calls: Path, sherpa_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav file")
    silent = tmp_path / "silent.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(np.zeros(2 * SAMPLE_RATE, "<i2").tobytes())
    done = jingbao("transcribe", str(broken), str(silent), str(two_calls), "--engine", "sherpa", sherpa_model=sherpa_model)
    assert done.returncode == 1  # one file failed; the others were still transcribed
    assert "broken.wav" in done.stderr and "cannot decode" in done.stderr
    out = done.stdout.splitlines()
    said = [line for line in out if line.startswith("two_calls.wav")]
    assert len(said) == 2 and len(out) == 4  # silence: no utterance at all; each utterance in characters, then pinyin
    assert "美食街" in out[0] and "mei3 shi2" in out[1], out


def test_no_engine_is_a_clear_error(two_calls: Path, tmp_path: Path) -> None:
    done = jingbao("transcribe", str(two_calls), "--engine", "vosk", sherpa_model=tmp_path / "none")
    assert done.returncode == 2 and "no speech recognition engine" in done.stderr


def test_archive_is_re_transcribed_and_stored(calls_audio: Path, sherpa_model: Path, tmp_path: Path) -> None:
    """Utterances archived while ASR was off are transcribed from the archive, stored, and marked transcribed; without
    --config the service's default config is used, so the jurisdiction's keywords are never lost on re-transcription."""
    import asyncio

    import yaml

    from asr.store import TranscriptStore
    from bridge.archive import Archive
    from bridge.config import load_config
    from bridge.db import connect
    from bridge.service import Service

    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "c005.wav").write_bytes((calls_audio / "c005.wav").read_bytes())
    config_path = tmp_path / "config" / "demo.yaml"  # where the service's default config is, seen from tmp_path
    config_path.parent.mkdir()
    config_path.write_text(yaml.safe_dump({
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data"), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "channels": [{"id": "ch-enterprise", "name": "企业保卫",
                      "source": {"type": "file", "paths": [str(audio)], "realtime": False}}],
    }), encoding="utf-8")
    asyncio.run(Service(load_config(config_path)).run(serve_http=False))

    done = jingbao("transcribe", "--archive", "--since", "1h", "--json", "--config", str(config_path),
                   "--engine", "sherpa", sherpa_model=sherpa_model)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    record = json.loads(line)
    assert record["channel"] == "ch-enterprise" and "qin2 chuan1" in record["pinyin"]
    storage = load_config(config_path).storage
    with Archive(storage) as archive:
        assert archive.pending() == [] and archive.get(record["utterance_id"]).status == "transcribed"
    stored = TranscriptStore(connect(storage.database)).get(record["utterance_id"])
    assert stored is not None and stored.pinyin == record["pinyin"]
    assert "qinchuan-dianzi" in {k.ref for k in stored.keywords}
    by_default = jingbao("transcribe", "--archive", "--engine", "sherpa", sherpa_model=sherpa_model, cwd=tmp_path)
    assert by_default.returncode == 0, by_default.stderr
    again = TranscriptStore(connect(storage.database)).get(record["utterance_id"])
    assert again is not None and {k.ref for k in again.keywords} == {k.ref for k in stored.keywords}
    nothing_new = jingbao("transcribe", "--archive", "--since", "2999-01-01", "--config", str(config_path),
                          "--engine", "sherpa", sherpa_model=sherpa_model)
    assert nothing_new.returncode == 0 and "0 utterance(s)" in nothing_new.stderr
