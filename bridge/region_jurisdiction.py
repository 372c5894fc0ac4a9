"""The region's stations' jurisdictions merged into one, for central's dispatcher (bridge/central_dispatch.py): every
station that names a jurisdiction file in the region file (`jurisdiction:`) brings its places, channels and
responders, so that an incident at one station's place can take the nearer guards of the next station.

Ids, two ways:
- Places and channels are qualified with their station (`<station>.<id>`, bridge.nodes.central_id), as central
  qualifies utterance ids: every station has its `paichusuo`, and a transcript already names its channel
  `<station>.<channel>` at central. A place's `within` and `grid`, and a responder's `post` and `channel`, follow.
- Responder ids are not: a responder's id is his phone's topic (`<prefix>/alerts/<responder>`, dispatch/topics.py)
  and its login on the broker (`jingbao broker add-device`), the same whichever station's dispatcher alerts him.
  Two stations naming the same responder id would be two people on one topic, so such a region is refused
  (RegionError naming the id and both stations) rather than silently alerting the wrong phone.

Place names may repeat across stations (each has its 派出所, its 菜市场), so the merged jurisdiction is not held to a
single station's rule that a name is used once: a report's place is looked for among its own station's places only
(`RegionJurisdiction.stations`), where the station's own file guarantees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from bridge.nodes import central_id
from bridge.region import Region, RegionError
from dispatch.gazetteer import GazetteerError, Jurisdiction, LatLon, load_jurisdiction


@dataclass(frozen=True, slots=True)
class RegionJurisdiction:
    jurisdiction: Jurisdiction  # every station's, merged (ids as above)
    stations: dict[str, Jurisdiction]  # station id -> its own part of it (the same objects, ids qualified)
    responder_station: dict[str, str]  # responder id -> the station whose file names him


def merge_jurisdictions(region: Region) -> RegionJurisdiction | None:
    """The jurisdictions of the region's stations merged; None when no station names one. RegionError when a file
    cannot be used or two stations name the same responder."""
    stations: dict[str, Jurisdiction] = {}
    responder_station: dict[str, str] = {}
    for station in region.stations:
        if station.jurisdiction is None:
            continue
        try:
            own = load_jurisdiction(station.jurisdiction)
        except GazetteerError as e:
            raise RegionError(f"station {station.id!r}: {e}") from e
        for responder in own.responders:
            if (other := responder_station.get(responder.id)) is not None:
                raise RegionError(f"responder id {responder.id!r} is in the jurisdictions of both {other!r} and "
                                  f"{station.id!r}: a responder's id is his phone's alert topic, one per person")  # fmt: skip
            responder_station[responder.id] = station.id
        stations[station.id] = _qualified(station.id, own)
    if not stations:
        return None
    parts = list(stations.values())
    # built without validation: each part was validated (its references stay within it), responder ids were checked
    # above, and place names may repeat across stations (see the module's docstring)
    merged = Jurisdiction.model_construct(
        name=region.name,
        station="",
        center=LatLon(lat=sum(p.center.lat for p in parts) / len(parts), lon=sum(p.center.lon for p in parts) / len(parts)),
        channels=tuple(c for p in parts for c in p.channels),
        places=tuple(x for p in parts for x in p.places),
        responders=tuple(r for p in parts for r in p.responders),
    )
    return RegionJurisdiction(merged, stations, responder_station)


def _qualified(station: str, own: Jurisdiction) -> Jurisdiction:
    """`own` with its places' and channels' ids (and the references to them) qualified with `station`."""
    q = partial(central_id, station)
    return Jurisdiction(
        name=own.name,
        station=own.station,
        center=own.center,
        channels=tuple(c.model_copy(update={"id": q(c.id)}) for c in own.channels),
        places=tuple(
            p.model_copy(update={"id": q(p.id), "within": p.within and q(p.within), "grid": p.grid and q(p.grid)})
            for p in own.places
        ),
        responders=tuple(r.model_copy(update={"channel": q(r.channel), "post": q(r.post)}) for r in own.responders),
    )
