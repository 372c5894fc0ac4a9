"""Dispatch section of the configuration: how incidents are classified and who is sent."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Priority = Literal["critical", "high", "medium", "low"]


class LexiconType(BaseModel):
    """Extra words for one incident type (same shape as a type in dispatch/lexicon.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: Priority | None = Field(None, description="Replace the type's default priority.")
    terms: list[str] = Field(default_factory=list, description="Words that say this type happened.")
    weak: list[str] = Field(default_factory=list, description="Words that suggest it but lose to another type's plain term.")
    critical: list[str] = Field(default_factory=list, description="Terms that make the incident critical.")
    high: list[str] = Field(default_factory=list, description="Terms that make the incident high priority.")
    medium: list[str] = Field(default_factory=list, description="Terms that make the incident medium priority.")
    low: list[str] = Field(default_factory=list, description="Terms that make the incident low priority.")


class LexiconExtension(BaseModel):
    """Operator additions to the built-in incident lexicon; nothing built in is removed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    types: dict[
        Literal["fight", "theft", "robbery", "weapon", "fire", "medical", "missing", "suspicious", "dispute", "domestic",
                "gathering", "traffic", "noise", "fraud", "other"],
        LexiconType,
    ] = Field(default_factory=dict, description="Extra words per incident type.")
    chatter: list[str] = Field(default_factory=list, description="Extra routine phrases that raise no incident.")
    severity_critical: list[str] = Field(default_factory=list, description="Extra words that make any incident critical.")
    severity_high: list[str] = Field(default_factory=list, description="Extra words that make any incident at least high.")
    negations: list[str] = Field(default_factory=list, description="Extra negation words (cancel the term right after).")


class ResponderRules(BaseModel):
    """Who is sent to an incident, and from how far."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    guards: int = Field(2, ge=0, le=20, description="How many nearest available guards to alert (先期处置).")
    guard_roles: list[Literal["guard", "volunteer", "grid_worker"]] = Field(
        default_factory=lambda: ["guard"], description="Roles that count as guards for first response."
    )
    police: int = Field(1, ge=0, le=10, description="How many police to alert: the grid's chief first, then the nearest.")
    police_roles: list[Literal["chief", "officer"]] = Field(
        default_factory=lambda: ["chief", "officer"], description="Roles that count as police."
    )
    grid_chief_first: bool = Field(True, description="The chief answering for the place's grid goes before nearer police.")
    radius_m: float = Field(3000.0, gt=0, description="Responders farther than this (metres) are not alerted.")
    position_max_age_s: float = Field(
        300.0, gt=0, description="A GPS fix older than this (seconds) is stale: the responder's post is used instead, "
        "and a phone's fix already this old when it arrives is refused.",
    )  # fmt: skip
    position_max_ahead_s: float = Field(
        120.0, ge=0, description="A phone's fix dated more than this (seconds) ahead of our clock is refused: it would "
        "count as fresh for as long as its date says.",
    )  # fmt: skip


class AlertRules(BaseModel):
    """Acknowledgement, escalation, merging and the spoken call (dispatch/alerts.py, dispatch/dispatcher.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ack_timeout_s: float = Field(60.0, gt=0, description="No acknowledgement within this many seconds: alert the next nearest.")
    merge_radius_m: float = Field(200.0, ge=0, description="Same-type report this close (metres) to an open incident merges.")
    merge_window_s: float = Field(
        300.0, ge=0, description="...if a caller reported it, or a person acted on it, within this many seconds."
    )
    confirm_timeout_s: float = Field(
        120.0, gt=0, description="A 待确认 report no operator has confirmed or dismissed within this many seconds is "
        "flagged overdue (timeline, warning in the log, alarm on the consoles); it stays in the queue until someone acts.",
    )  # fmt: skip
    announce: bool = Field(True, description="Speak an announcement on each alerted channel's transmit path.")
    announce_model: Path | None = Field(
        None, description="Folder of the Kokoro voice model the announcements are spoken with (relative to this file); "
        "None: JINGBAO_TTS_MODEL, the model cache (`jingbao model fetch --tts`), ../shared/models. None found: espeak-ng.",
    )  # fmt: skip
    announce_voice: str = Field("zm_yunjian", description="The Kokoro voice (zf_* female, zm_* male Mandarin voices).")
    devices: dict[str, str] = Field(
        default_factory=dict, description="OwnTracks 'user' or 'user/device' -> responder id (default: the user is the id)."
    )


class PartialRules(BaseModel):
    """When a partial transcript (the recogniser's running guess while someone still talks) may raise a provisional
    incident (dispatch/provisional.py; figures in docs/performance.md, bench/provisional.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stable_partials: int = Field(
        2, ge=1, le=20, description="The same place and type read on this many consecutive changed partials before "
        "anyone is alerted (a word half-heard at a partial's end has not held yet).",
    )  # fmt: skip
    stable_units: int = Field(
        5, ge=1, le=50, description="... and held while this many syllables (characters) were heard, counting the "
        "partial where it first appeared (partials come every ~0.3 s of speech, 1-2 syllables).",
    )  # fmt: skip
    after_pause: int = Field(
        4, ge=0, le=50, description="... and past the end of its clause: a pause after the partial where it first "
        "appeared, then this many syllables without it changing (0: no pause needed).",
    )  # fmt: skip
    min_confidence: float = Field(0.9, ge=0, le=1, description="The classification's confidence a partial must reach.")
    pause_min_confidence: float = Field(
        0.8, ge=0, le=1, description="... and the one a partial taken at a pause in the speech must reach (it holds all"
        " that was said so far; a pause may still be a breath inside the call: 0.7 undid 2-3 % of the alerts on the"
        " development set, docs/performance.md).",
    )  # fmt: skip
    min_place_confidence: float = Field(
        0.7, ge=0, le=1, description="The place's confidence a partial must reach (0.95 a name, 0.9 an alias, 0.9 x "
        "score a spotted keyword, 0.6 a generic word such as 菜市场; a place only being called counts half).",
    )  # fmt: skip
    min_priority: Priority = Field(
        "low", description="Only incidents at least this urgent are alerted from partials; the others wait for the "
        "final (low: every type).",
    )  # fmt: skip


class SosRules(BaseModel):
    """SOS / 一键报警 (dispatch/sos.py): the phone page's SOS button and emergency phrases heard on a radio channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radio_phrases: bool = Field(True, description="An emergency phrase (救命, 紧急求助, 我被打了) on a channel raises an SOS.")
    extra_phrases: list[str] = Field(default_factory=list, description="The site's own emergency phrases besides the built-in.")
    repeat_window_s: float = Field(
        300.0, gt=0, description="Another SOS from the same caller (a phone user, a radio channel) within this many "
        "seconds of his last, while that one is open, is one more press of it, not a new incident.",
    )  # fmt: skip
    hot_mic_s: float = Field(10.0, ge=0, le=60, description="How long the phone page's microphone stays open after an SOS.")
    key_up_s: float | None = Field(
        None, ge=3, description="A carrier held this long on a channel's COR line (a radio keyed and held down: a "
        "guard who cannot speak) raises an SOS for the channel; None: off. Choose it longer than any call on the air.",
    )  # fmt: skip


class TrackRules(BaseModel):
    """Responders' position history (dispatch/tracks.py): personal data, kept no longer than this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retention_days: float = Field(30.0, gt=0, le=366, description="Fixes older than this many days are deleted.")
    max_fixes: int = Field(100_000, ge=100, description="At most this many fixes kept per responder (the oldest go).")


class PatrolPoint(BaseModel):
    """A check-in point (巡更点) of a patrol route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=40, description="What the guard and the operator call it (东门).")
    lat: float = Field(ge=-90, le=90, description="Latitude of the point (WGS84, as the phones report).")
    lon: float = Field(ge=-180, le=180, description="Longitude of the point (WGS84).")
    radius_m: float | None = Field(None, gt=0, le=500, description="A fix this close checks in; default the route's.")
    code: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{4,64}$", description="The NFC tag's or QR code's value posted at the point: "
        "typed or scanned on the phone page, it checks in without a fix.",
    )  # fmt: skip


class PatrolRoute(BaseModel):
    """A patrol route (巡更路线): its points walked in each round of its schedule by one of its patrollers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$", description="The route's id (in the API, the log and events).")
    name: str = Field(min_length=1, max_length=40, description="What the guards and the operator call it (夜间外围巡更).")
    patrollers: list[str] = Field(min_length=1, description="Responder ids who walk it (any of them checks a point in).")
    points: list[PatrolPoint] = Field(min_length=1, description="The check-in points, in the order they are walked.")
    radius_m: float = Field(30.0, gt=0, le=500, description="How close a fix must come to a point to check it in.")
    starts: list[str] = Field(
        min_length=1, description="When each round starts, local time HH:MM (or HH:MM:SS), every day.",
    )  # fmt: skip
    window_min: float = Field(
        60.0, gt=0, le=24 * 60, description="Each point must be checked in within this many minutes of the round's "
        "start; one that is not is raised to the operator as missed.",
    )  # fmt: skip

    @field_validator("starts")
    @classmethod
    def _times_of_day(cls, starts: list[str]) -> list[str]:
        for s in starts:
            if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?", s):
                raise ValueError(f"start {s!r} is not a time of day HH:MM or HH:MM:SS")
        return starts

    @field_validator("points")
    @classmethod
    def _codes_unique(cls, points: list[PatrolPoint]) -> list[PatrolPoint]:
        codes = [p.code for p in points if p.code]
        if len(codes) != len(set(codes)):
            raise ValueError("two points carry the same code")
        return points


class PatrolRules(BaseModel):
    """Patrols (巡更, dispatch/patrols.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[PatrolRoute] = Field(default_factory=list, description="The patrol routes; none: no patrols.")


class GeofenceRules(BaseModel):
    """Geofences from the positions stream (dispatch/geofence.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    post_radius_m: float | None = Field(
        300.0, gt=0, description="A guard on duty whose fix is farther than this from his post has left it (raised "
        "to the operator once per exit); None: not watched.",
    )  # fmt: skip
    scene_radius_m: float | None = Field(
        50.0, gt=0, description="A responder sent to an incident whose fix comes this close to it is on scene (as if "
        "he had answered on_scene); None: only his answer says so.",
    )  # fmt: skip


class DispatchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Turn transcripts into incidents and alerts.")
    lexicon: LexiconExtension = Field(default_factory=LexiconExtension, description="Operator additions to the incident lexicon.")
    responders: ResponderRules = Field(default_factory=ResponderRules, description="Rules for choosing who is alerted.")
    alerts: AlertRules = Field(default_factory=AlertRules, description="Acknowledgement, escalation and merging.")
    provisional: bool = Field(
        True, description="Alert from the live transcript while the speaker is still talking (marked provisional), "
        "then confirm, re-route or retract it when the final transcript arrives.",
    )  # fmt: skip
    partials: PartialRules = Field(default_factory=PartialRules, description="When a partial transcript is sure enough.")
    sos: SosRules = Field(default_factory=SosRules, description="SOS / 一键报警 from the phone page and by radio.")
    tracks: TrackRules = Field(default_factory=TrackRules, description="How long responders' positions are kept.")
    patrols: PatrolRules = Field(default_factory=PatrolRules, description="Patrol routes, their schedules and check-ins.")
    geofences: GeofenceRules = Field(default_factory=GeofenceRules, description="Leaving the post; arriving at the scene.")
