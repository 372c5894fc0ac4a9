"""Shared test fixtures: where the real audio, demo data and speech model live (../shared, never committed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.shared import shared_dir

# the `postgres` (a private cluster per test run) and `pg_url` (a fresh database per test) fixtures
pytest_plugins = ["tests.support.postgres"]

REPO = Path(__file__).resolve().parent.parent
SHARED = shared_dir().resolve()
SHARED_AUDIO = SHARED / "audio"
CALLS_AUDIO = SHARED_AUDIO / "calls"
DEMO = SHARED / "demo"
SHERPA_MODEL = SHARED / "models" / "sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile"
RADIO_DEGRADE = SHARED / "tools" / "radio_degrade.py"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test material missing: {path} (tests read it from ../shared)")
    return path


@pytest.fixture(scope="session")
def shared_audio() -> Path:
    return _need(SHARED_AUDIO)


@pytest.fixture(scope="session")
def calls_audio() -> Path:
    return _need(CALLS_AUDIO)


@pytest.fixture(scope="session")
def sherpa_model() -> Path:
    return _need(SHERPA_MODEL)


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return _need(DEMO)
