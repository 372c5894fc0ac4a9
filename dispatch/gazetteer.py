"""The jurisdiction (gazetteer): places, radio channels and responders, loaded from one YAML file and validated.

Validation names the entry at fault: unknown `within`/`grid`/`post`/`channel` ids, duplicate ids, a name or alias
used by two places, an empty alias, a `within` loop and a `grid` that is not a community. One exception is allowed
for names: a place may share a name with a place that contains it or that it contains (the demo's 西光广场 is both
the square and an alias of the compound around it); the place that carries it as its *name* then wins over the one
that has it as an alias.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.config import read_yaml

logger = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8

PlaceKind = Literal[
    "community", "compound", "market", "school", "enterprise", "street", "landmark", "police_post", "hospital", "transit"
]
Role = Literal["guard", "officer", "chief", "volunteer", "grid_worker"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatLon(_Strict):
    lat: float = Field(ge=-90, le=90, description="Latitude, WGS-84 degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude, WGS-84 degrees.")


class Place(LatLon):
    id: str = Field(min_length=1, description="Stable id used in alerts and keyword refs.")
    name: str = Field(min_length=1, description="Name as people say it (美食街).")
    aliases: tuple[str, ...] = Field((), description="Other names (夜宵街); generic ones (菜市场) are allowed.")

    @field_validator("aliases")
    @classmethod
    def _no_blank_alias(cls, aliases: tuple[str, ...]) -> tuple[str, ...]:
        # An empty alias is found in every transcript: every call would be placed here.
        if any(not a.strip() for a in aliases):
            raise ValueError("an alias is empty or blank (it would match every call)")
        return aliases
    kind: PlaceKind = Field(description="What sort of place this is.")
    within: str | None = Field(None, description="Id of the place that contains this one.")
    grid: str | None = Field(None, description="Id of the community (网格) whose police chief answers for it.")

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


class Channel(_Strict):
    id: str = Field(min_length=1, description="Channel id, as in the service configuration.")
    name: str = Field(description="Human name (市场保安).")
    purpose: str = Field("", description="Who talks on it.")


class Responder(_Strict):
    id: str = Field(min_length=1, description="Responder id; also the MQTT alert topic suffix.")
    name: str = Field(description="Person or team name.")
    role: Role = Field(description="guard, officer, chief, volunteer or grid_worker.")
    unit: str = Field("", description="Unit the responder belongs to.")
    channel: str = Field(description="Id of the radio channel the responder listens on.")
    post: str = Field(description="Id of the place where the responder is stationed (position without a GPS fix).")


class Jurisdiction(_Strict):
    name: str = Field(description="Name of the jurisdiction.")
    station: str = Field("", description="The police station in charge.")
    center: LatLon = Field(description="Map centre.")
    channels: tuple[Channel, ...] = Field(description="Radio channels.")
    places: tuple[Place, ...] = Field(min_length=1, description="Known places.")
    responders: tuple[Responder, ...] = Field(description="Guards, officers and volunteers.")

    @model_validator(mode="after")
    def _check_references(self) -> Jurisdiction:
        problems = list(self._problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _problems(self) -> Iterator[str]:
        for what, items in (("place", self.places), ("channel", self.channels), ("responder", self.responders)):
            seen: set[str] = set()
            for item in items:
                if item.id in seen:
                    yield f"{what} id {item.id!r} is declared twice"
                seen.add(item.id)
        place_ids = {p.id for p in self.places}
        channel_ids = {c.id for c in self.channels}
        for p in self.places:
            if p.within is not None and p.within not in place_ids:
                yield f"place {p.id!r}: within {p.within!r} is not a known place"
            if p.within == p.id:
                yield f"place {p.id!r}: is within itself"
            if p.grid is not None and p.grid not in place_ids:
                yield f"place {p.id!r}: grid {p.grid!r} is not a known place"
            elif p.grid is not None and (grid := self._places_by_id[p.grid]).kind != "community":
                yield f"place {p.id!r}: grid {p.grid!r} is a {grid.kind}, not a community"
            if p.within in place_ids and p.id in self.ancestors(p.within) and p.within != p.id:
                yield f"place {p.id!r}: within {p.within!r} makes a loop ({' -> '.join([p.id, *self.ancestors(p.id), p.id])})"
        for r in self.responders:
            if r.post not in place_ids:
                yield f"responder {r.id!r}: post {r.post!r} is not a known place"
            if r.channel not in channel_ids:
                yield f"responder {r.id!r}: channel {r.channel!r} is not a known channel"
        if all(p.within in place_ids or p.within is None for p in self.places):
            yield from self._name_clashes()

    def _name_clashes(self) -> Iterator[str]:
        by_name: dict[str, Place] = {}
        for p in self.places:
            for n in dict.fromkeys(p.names):
                other = by_name.get(n)
                if other is None:
                    by_name[n] = p
                elif other.id == p.id or not self._nested(other, p):
                    yield f"place {p.id!r}: name or alias {n!r} is already used by place {other.id!r}"

    def _nested(self, a: Place, b: Place) -> bool:
        return a.id in self.ancestors(b.id) or b.id in self.ancestors(a.id)

    # --- look-ups ----------------------------------------------------------------------------------------

    @cached_property
    def _places_by_id(self) -> dict[str, Place]:
        return {p.id: p for p in self.places}

    @cached_property
    def _responders_by_id(self) -> dict[str, Responder]:
        return {r.id: r for r in self.responders}

    def place(self, place_id: str) -> Place:
        """The place with this id; KeyError naming it otherwise."""
        try:
            return self._places_by_id[place_id]
        except KeyError:
            raise KeyError(f"unknown place id {place_id!r}") from None

    def responder(self, responder_id: str) -> Responder:
        try:
            return self._responders_by_id[responder_id]
        except KeyError:
            raise KeyError(f"unknown responder id {responder_id!r}") from None

    @cached_property
    def channel_posts(self) -> dict[str, frozenset[str]]:
        """Channel id -> the posts of the responders who listen on it: the places its traffic is mostly about (the
        market guards' channel talks of the markets)."""
        posts: dict[str, set[str]] = {}
        for r in self.responders:
            posts.setdefault(r.channel, set()).add(r.post)
        return {channel: frozenset(found) for channel, found in posts.items()}

    def children(self, place_id: str) -> list[Place]:
        """Places directly within this one."""
        return [p for p in self.places if p.within == place_id]

    def ancestors(self, place_id: str) -> list[str]:
        """Ids of the places containing this one, innermost first (cycles are cut)."""
        chain: list[str] = []
        current = self._places_by_id.get(place_id)
        while current is not None and current.within and current.within not in chain and current.within != place_id:
            chain.append(current.within)
            current = self._places_by_id.get(current.within)
        return chain

    def grid_of(self, place_id: str) -> str | None:
        """The community (网格) answering for a place: its own `grid`, else its container's, else itself if a community."""
        for pid in (place_id, *self.ancestors(place_id)):
            p = self.place(pid)
            if p.grid:
                return p.grid
            if p.kind == "community":
                return p.id
        return None


def distance_m(a_lat: float, a_lon: float, b_lat: float, b_lon: float) -> float:
    """Great-circle (haversine) distance in metres."""
    phi1, phi2 = math.radians(a_lat), math.radians(b_lat)
    dphi, dlmb = phi2 - phi1, math.radians(b_lon - a_lon)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class GazetteerError(ValueError):
    """A jurisdiction file that cannot be used; the message names the file and the entries at fault."""


def load_jurisdiction(path: Path | str) -> Jurisdiction:
    path = Path(path)
    return parse_jurisdiction(read_yaml(path, GazetteerError), source=str(path))


def parse_jurisdiction(raw: object, source: str = "<jurisdiction>") -> Jurisdiction:
    if not isinstance(raw, dict):
        raise GazetteerError(f"{source}: expected a mapping at the top level")
    try:
        return Jurisdiction.model_validate(raw)
    except ValidationError as e:
        raise GazetteerError(f"{source}: invalid jurisdiction:\n{_describe(e, raw)}") from e


def _describe(error: ValidationError, raw: dict) -> str:
    """One line per problem; list entries are named by their id (places[meishijie].lat) rather than an index."""
    lines = []
    for err in error.errors():
        parts: list[str] = []
        loc = err["loc"]
        for i, key in enumerate(loc):
            if isinstance(key, int) and parts:
                entry = _entry(raw, loc[:i + 1])
                label = entry.get("id", key) if isinstance(entry, dict) else key
                parts[-1] = f"{parts[-1]}[{label}]"
            else:
                parts.append(str(key))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {'.'.join(parts) or '(top)'}: {msg}")
    return "\n".join(lines)


def _entry(raw: object, loc: tuple) -> object:
    for key in loc:
        try:
            raw = raw[key]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return raw
