"""The region above the stations (issue 13, "The hierarchy"): its 分局 (sub-bureaus), their 派出所 (stations) and
which stations neighbour each other, read from one YAML file (config/region.yaml) that the central tier points at
(`node.region`).

A station's id is the one its edge publishes under (`node.station`, bridge/nodes.py), so what central stores from it
(`<station>.<id>`) is placed in the region by that prefix. A *scope* names a part of the region: a station id (that
station), a 分局 id (its stations) or nothing (the whole region); a user's scope bounds what they may search and
replay at central (bridge/web/scope.py), and the search's `station` filter takes the same names.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.config import STATION_ID, Config, ConfigError, read_model


class RegionError(Exception):
    """A region file that cannot be used, or a scope that names nothing in it; the message says which and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Station(_Strict):
    id: str = Field(pattern=STATION_ID, description="The station's id between nodes: its edge's `node.station`.")
    name: str = Field(min_length=1, description="Its name, e.g. 公园北路派出所.")
    jurisdiction: Path | None = Field(
        None, description="Its jurisdiction file (places, channels, responders), when central has it; relative to this file."
    )
    neighbours: list[str] = Field(
        default_factory=list,
        description="Ids of the stations bordering it (either side may say so: the relation goes both ways).",
    )


class Bureau(_Strict):
    id: str = Field(pattern=STATION_ID, description="The 分局's id: a user scoped to it sees its stations.")
    name: str = Field(min_length=1, description="Its name, e.g. 莲湖分局.")
    stations: list[Station] = Field(min_length=1, description="Its 派出所.")


class Region(_Strict):
    name: str = Field(min_length=1, description="The region, e.g. the city's 市局.")
    bureaus: list[Bureau] = Field(min_length=1, description="Its 分局 and their stations.")

    @model_validator(mode="after")
    def _ids_name_one_thing(self) -> Region:
        # one namespace: a scope or a `station` filter is a bare id, which must say whether it is a station or a 分局
        seen: dict[str, str] = {}
        for bureau in self.bureaus:
            for what, id_ in [("分局", bureau.id), *(("station", s.id) for s in bureau.stations)]:
                if id_ in seen:
                    raise ValueError(f"id {id_!r} is used twice (a {seen[id_]} and a {what})")
                seen[id_] = what
        for station in self.stations:
            for other in station.neighbours:
                if seen.get(other) != "station":
                    raise ValueError(f"station {station.id!r}: neighbour {other!r} is not a station of this region")
                if other == station.id:
                    raise ValueError(f"station {station.id!r} is listed as its own neighbour")
        return self

    @property
    def stations(self) -> list[Station]:
        return [s for b in self.bureaus for s in b.stations]

    def station(self, station_id: str) -> Station | None:
        return next((s for s in self.stations if s.id == station_id), None)

    def bureau_of(self, station_id: str) -> Bureau | None:
        return next((b for b in self.bureaus if any(s.id == station_id for s in b.stations)), None)

    def neighbours(self, station_id: str) -> list[str]:
        """The stations bordering `station_id`, whichever of the two listed the other."""
        listed = {n for s in self.stations if s.id == station_id for n in s.neighbours}
        return sorted(listed | {s.id for s in self.stations if station_id in s.neighbours})

    def stations_in(self, scope: str | None) -> frozenset[str]:
        """The station ids a scope covers: a station's own, a 分局's stations, every station for None. RegionError
        when it names neither a station nor a 分局 of this region."""
        if scope is None:
            return frozenset(s.id for s in self.stations)
        for bureau in self.bureaus:
            if bureau.id == scope:
                return frozenset(s.id for s in bureau.stations)
            if any(s.id == scope for s in bureau.stations):
                return frozenset({scope})
        raise RegionError(f"{scope!r} is neither a station nor a 分局 of {self.name}")


def load_region(path: Path | str) -> Region:
    """Read and validate a region file; its stations' jurisdiction files are resolved against its folder and must
    exist."""
    path = Path(path)
    return _resolve_jurisdictions(read_model(path, Region, RegionError, "region"), path)


def _resolve_jurisdictions(region: Region, path: Path) -> Region:
    bureaus = []
    for bureau in region.bureaus:
        stations = []
        for station in bureau.stations:
            if station.jurisdiction is not None:
                file = (path.parent / station.jurisdiction).resolve()  # an absolute one stays as it is
                if not file.is_file():
                    raise RegionError(f"{path}: station {station.id!r}: no jurisdiction file at {file}")
                station = station.model_copy(update={"jurisdiction": file})
            stations.append(station)
        bureaus.append(bureau.model_copy(update={"stations": stations}))
    return region.model_copy(update={"bureaus": bureaus})


def region_of(config: Config) -> Region | None:
    """The region file `config` points at (`node.region`), loaded; None when it names none. ConfigError when the
    file cannot be used."""
    if config.node.region is None:
        return None
    try:
        return load_region(config.node.region)
    except RegionError as e:
        raise ConfigError(f"node.region: {e}") from e
