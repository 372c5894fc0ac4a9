"""The seam between a transcript and an incident: place, type/priority and who to alert, as one plain dict.

Used by `jingbao extract` (text, stdin lines; audio is added by the ASR side, which passes each utterance's
transcript dict here) and by the live dispatcher.
"""

from __future__ import annotations

import logging
from typing import Any

from dispatch.classify import Lexicon, load_lexicon, read_report
from dispatch.config import DispatchConfig
from dispatch.gazetteer import Jurisdiction
from dispatch.location import PlaceIndex
from dispatch.phonetic import looks_like_pinyin
from dispatch.responders import ResponderBoard, recommend

logger = logging.getLogger(__name__)


class Extractor:
    """Holds what is built once per jurisdiction and config (name index, compiled lexicon). With `channel`, what it
    reads is taken as heard on that radio channel (its own places are heard more readily: location.hear_places)."""

    def __init__(
        self, jurisdiction: Jurisdiction, board: ResponderBoard | None = None, config: DispatchConfig | None = None,
        channel: str | None = None,
    ) -> None:  # fmt: skip
        self.config = config or DispatchConfig()
        self.index = PlaceIndex(jurisdiction)
        self.lexicon: Lexicon = load_lexicon(self.config.lexicon)
        self.board = board or ResponderBoard(jurisdiction)
        self.home = jurisdiction.channel_posts.get(channel or "", frozenset())

    def __call__(self, transcript: dict[str, Any] | str, now: float | None = None) -> dict[str, Any]:
        if isinstance(transcript, str):
            transcript = {"pinyin": transcript} if looks_like_pinyin(transcript) else {"text": transcript}
        what, places = read_report(transcript, self.lexicon, self.index, self.home)
        where = places.scene()
        responders = []
        if what.is_incident and where is not None:
            responders = [r.to_dict() for r in recommend(where.place, self.board, self.config.responders, now)]
        return {
            "place": where.to_dict() if where else None,
            "location": "known" if where else "unknown",
            "incident": what.to_dict(),
            "responders": responders,
        }


def extract(transcript: dict[str, Any] | str, jurisdiction: Jurisdiction, board: ResponderBoard | None = None,
            config: DispatchConfig | None = None) -> dict[str, Any]:
    """One-shot form of `Extractor` (builds the index each call: use `Extractor` for many transcripts)."""
    return Extractor(jurisdiction, board, config)(transcript)
