"""Statistics at the central tier: the box's statistics page, exports and monthly report (dispatch/statistics.py,
bridge/web/routes_stats.py) over central's dispatcher's incidents and the stations' radio traffic in PostgreSQL, for
the stations of the reader's scope (a station's, a 分局's, the city's: bridge/web/scope.py).

What differs from a box's:
- An incident counts under the station (派出所, named as the region file names it) whose channel reported it, as the
  console's scope goes (routes_incidents.py): a station's operator counts the incidents heard on their channels.
  Grids and places are the stations' own (their ids qualified, bridge/region_jurisdiction.py).
- Radio traffic per channel and hour is counted by PostgreSQL per hour since the epoch (node_utterances), each
  turned into an hour of this server's day here: exact for a time zone a whole number of hours from UTC, as China's.
- The filters offer the scope's places, grids and stations; participation counts the scope's responders.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection
from datetime import datetime

from bridge.db import Connection
from bridge.nodes import station_of
from bridge.region import Region
from bridge.web.central_console import CentralReadings
from dispatch.gazetteer import Jurisdiction, Place, Responder
from dispatch.statistics import Filters, IncidentRecord, Statistics

UNHEARD = "未知台站"  # an incident no station's channel reported (an operator's own at central)


class CentralStatistics(Statistics):
    def __init__(self, conn: Connection, jurisdiction: Jurisdiction, *, region: Region,
                 readings: CentralReadings, within: Collection[str] | None, heading: str,
                 station_of_responder: Callable[[str], str | None]) -> None:  # fmt: skip
        """`within`: the station ids counted (None: every one, and the incidents no station reported); `heading`: the
        scope's name."""
        super().__init__(conn, jurisdiction)
        self._readings = readings
        self._everything = within is None
        self._names = {s.id: s.name for s in region.stations if within is None or s.id in within}
        self._heading = heading
        self._station_of_responder = station_of_responder

    def answering(self, grid: str | None, channel: str) -> str:
        return self._names.get(station_of(channel), UNHEARD)

    def _passes(self, r: IncidentRecord, f: Filters) -> bool:
        return (self._everything or station_of(r.channel) in self._names) and super()._passes(r, f)

    def stations(self) -> list[str]:
        return list(self._names.values())

    def heading(self) -> str:
        return self._heading

    def responders(self) -> list[Responder]:
        return [r for r in super().responders() if self._station_of_responder(r.id) in self._names]

    def places(self) -> list[Place]:
        return [p for p in super().places() if station_of(p.id) in self._names]

    def channels(self) -> dict[str, str]:
        return {cid: f"{self._names[station_of(cid)]} · {name}" for cid, name in super().channels().items()
                if station_of(cid) in self._names}  # fmt: skip

    def traffic(self, since: float, until: float) -> dict[str, list[int]]:
        out: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
        for row in self._readings.hourly(round(since * 1000), round(until * 1000), list(self._names)):
            out[row["channel"]][datetime.fromtimestamp(row["hour"] * 3600).hour] += row["n"]
        return dict(out)
