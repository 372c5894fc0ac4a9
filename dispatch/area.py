"""What one dispatcher answers for: the jurisdiction it ranks responders in, where the place a report heard on a
channel is looked for, and who may be alerted to a place.

A box's area is its one jurisdiction (`JurisdictionArea`): every place, every responder. The central tier's is the
region's stations merged (bridge/central_dispatch.RegionArea): a report's place looked for among its own station's
places, responders of that station and its neighbours only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Protocol

from asr.transcript import Transcript
from dispatch.classify import names_said
from dispatch.gazetteer import Jurisdiction, Place
from dispatch.location import PlaceIndex

if TYPE_CHECKING:
    from asr.live import PlaceWriter


class Area(Protocol):
    @property
    def jurisdiction(self) -> Jurisdiction:
        """Every place, channel and responder the dispatcher knows (ids as its transcripts and incidents name them)."""
        ...

    @property
    def indexes(self) -> Sequence[PlaceIndex]:
        """Every place index `places` may give (warmed up as the dispatcher is built)."""
        ...

    def places(self, channel: str) -> PlaceIndex:
        """Where the place named in a report heard on `channel` is looked for."""
        ...

    def out_of_reach(self, place: Place) -> Collection[str]:
        """Ids of the responders never alerted to an incident at `place`, however near they are."""
        ...

    def station_of(self, responder_id: str) -> str | None:
        """The station whose jurisdiction names the responder (None: the one station a box has, or nobody's)."""
        ...


class JurisdictionArea:
    """A single box's area: its jurisdiction, all of it."""

    def __init__(self, jurisdiction: Jurisdiction) -> None:
        self._jurisdiction = jurisdiction
        self._index = PlaceIndex(jurisdiction)

    @property
    def jurisdiction(self) -> Jurisdiction:
        return self._jurisdiction

    @property
    def indexes(self) -> Sequence[PlaceIndex]:
        return (self._index,)

    def places(self, channel: str) -> PlaceIndex:
        return self._index

    def out_of_reach(self, place: Place) -> Collection[str]:
        return ()

    def station_of(self, responder_id: str) -> str | None:
        return None


class NameWriter(Protocol):
    """Writes a transcript's readable characters again with names over given word spans (asr/sherpa_engine)."""

    def write_names(self, transcript: Transcript, names: Sequence[tuple[int, int, str]]) -> Transcript: ...


def place_namer(area: Area, writer: NameWriter) -> PlaceWriter:
    """What is done to a final before it is stored (the service, `jingbao transcribe`): the places a dispatcher of
    `area` reads in it (`dispatch.classify.names_said`, with the channel's place index and its own places) written as
    named in the characters people read. Thread-safe: the area is only read."""

    def name_places(transcript: Transcript, channel: str) -> Transcript:
        home = area.jurisdiction.channel_posts.get(channel, frozenset())
        return writer.write_names(transcript, names_said(transcript, area.places(channel), home))

    return name_places
