"""The demo jurisdiction (config/jurisdiction.yaml) and its place index, shared by the dispatch tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.gazetteer import Jurisdiction, load_jurisdiction
from dispatch.location import PlaceIndex

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def jurisdiction() -> Jurisdiction:
    return load_jurisdiction(REPO / "config" / "jurisdiction.yaml")


@pytest.fixture(scope="module")
def index(jurisdiction: Jurisdiction) -> PlaceIndex:
    return PlaceIndex(jurisdiction)
