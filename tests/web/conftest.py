"""A real Service (pipe channels that are never started, real SQLite, real archive) and its web app, with the demo
users; clients logged in per role."""

from __future__ import annotations

import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from asr.transcript import Keyword, Transcript
from bridge.config import load_config
from bridge.events import Utterance
from bridge.service import Service
from bridge.web import create_app
from bridge.web.users import demo_password, ensure_demo_users

REPO = Path(__file__).resolve().parents[2]
T0 = time.time() - 3600  # an hour ago: the utterances in these tests start from here


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = make_service(tmp_path_factory.mktemp("web"))
    yield svc
    svc.archive.close()


def make_service(tmp: Path, web: dict[str, Any] | None = None) -> Service:
    """The tests' Service in `tmp`, with the demo users; `web`: its web section (default: the defaults)."""
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp / "data"), "audio_format": "wav"},
        "broker": {"enabled": False},
        "asr": {"engine": "none"},
        "dispatch": {"alerts": {"announce": False}},  # incidents made here need no spoken announcement
        "channels": [
            {"id": ch, "name": ch, "source": {"type": "pipe", "path": str(tmp / f"{ch}.pcm")}}
            for ch in ("ch-market", "ch-police")
        ],
        "web": web or {},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    svc = Service(load_config(path))
    ensure_demo_users(svc.db)
    return svc


@pytest.fixture(scope="module")
def fake_mic(tmp_path_factory: pytest.TempPathFactory, calls_audio: Path) -> Path:
    """A microphone for the browser tests: c009 (万寿路花鸟市场有人晕倒了，需要救护) followed by silence, so a long
    press does not hear it twice."""
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    with wave.open(str(calls_audio / "c009.wav")) as src, wave.open(str(path), "wb") as out:
        out.setparams(src.getparams())
        out.writeframes(src.readframes(src.getnframes()) + bytes(16000 * 2 * 4))
    return path


@pytest.fixture(scope="module")
def app(service: Service) -> FastAPI:
    return create_app(service)


@pytest.fixture
def fresh_app(service: Service) -> FastAPI:
    """An app of its own (its own login throttle), on the same service and database."""
    return create_app(service)


@pytest.fixture(scope="module")
def login(app: FastAPI) -> Callable[..., TestClient]:
    """login("auditor") -> a TestClient holding that demo user's session cookie (one per role and module, since
    argon2 is slow on purpose; fresh=True for a session of its own)."""
    clients: dict[str, TestClient] = {}

    def as_user(name: str, *, fresh: bool = False) -> TestClient:
        if name in clients and not fresh:
            return clients[name]
        client = page_client(app)
        response = client.post("/api/login", json={"name": name, "password": demo_password(name)})
        assert response.status_code == 200, response.text
        if not fresh:
            clients[name] = client
        return client

    return as_user


def page_client(app: FastAPI) -> TestClient:
    """A client that says, as a browser on the console's pages does, that its requests come from the console's own
    origin (without it, a POST with the session cookie is refused)."""
    return TestClient(app, headers={"Origin": "http://testserver"})


def add_transcript(service: Service, utterance_id: str, channel: str, offset_s: float, text: str = "", pinyin: str = "",
                   keywords: tuple[Keyword, ...] = ()) -> None:  # fmt: skip
    engine = "vosk" if text else "sherpa-kws"
    transcript = Transcript(text, pinyin, keywords=keywords, engine=engine, conf=0.9)
    service.transcripts.save(utterance_id, channel, T0 + offset_s, transcript)


def archive_utterance(service: Service, utterance_id: str, channel: str, offset_s: float, seconds: float = 0.5) -> Path:
    """A real archived utterance (a WAV of a 440 Hz tone); returns its file."""
    import numpy as np

    t = np.arange(int(16000 * seconds)) / 16000
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
    row = service.archive.store(Utterance(utterance_id, channel, T0 + offset_s, T0 + offset_s + seconds, pcm))
    return service.archive.data_dir / row.path
