"""The one configuration model: read from one YAML file, strict (unknown keys are errors), every field described.

Each package owns the section it uses (`asr.config`, `dispatch.config`, `hardware.config`); this module composes
them, so there is still one model and one file.
"""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, ValidationError, field_validator, model_validator

from asr.config import AsrConfig
from dispatch.config import DispatchConfig
from hardware.config import FileSinkConfig, LineConfig, PatchConfig, TransmitConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sources -----------------------------------------------------------------------------------------------


class SoundCardSource(Strict):
    type: Literal["soundcard"] = Field(description="Capture from a sound-card input through PyAudio.")
    device: str | int = Field(
        "default", description="Input device: index, or a substring of its name (e.g. 'USB Audio'), or 'default'."
    )
    channel: int = Field(0, ge=0, description="Which channel of a multi-channel card carries this radio (0-based).")
    rate: int | None = Field(
        None, gt=0, description="Native capture rate in Hz; None asks the device for its default rate."
    )
    reopen_backoff_max: float = Field(
        30.0, gt=0, description="Longest wait in seconds between attempts to re-open a vanished device."
    )


class RtpSource(Strict):
    type: Literal["rtp"] = Field(description="Receive RTP over UDP from a radio-over-IP gateway.")
    bind: str = Field(
        "127.0.0.1",
        description="Local IP address to listen on: the station's address on the gateway's network (e.g. 10.1.2.1)."
        " The default hears this machine only; 0.0.0.0 hears every interface.",
    )
    port: int = Field(ge=1, le=65535, description="Local UDP port.")
    allow: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Gateways (addresses or CIDR networks) whose RTP is heard; packets from any other address are"
        " refused. Empty: the first sender heard is latched onto (its address and SSRC) and no other address is heard"
        " until the service restarts.",
    )
    takeover_s: float = Field(
        2.0, ge=0,
        description="How long the latched sender must have been silent before another address on `allow` may take"
        " the channel over. The latched address itself may start a new stream (a new SSRC: a restart, or a new talk"
        " spurt) once its last one has been silent for `new_stream_after_s`.",
    )
    new_stream_after_s: float = Field(
        0.3, ge=0,
        description="How long the latched stream must have been silent before another SSRC from the same address"
        " replaces it (a restarted gateway, a new talk spurt). Shorter lets a second stream from the gateway's own"
        " address (a spoofed or misconfigured sender) take the channel whenever the gateway pauses that long; it is"
        " never less than the jitter buffer's depth.",
    )
    codec: Literal["pcmu", "pcma", "l16"] | None = Field(
        None, description="Payload codec; None takes it from the static payload type (0 = PCMU, 8 = PCMA, 11 = L16)."
    )
    rate: int = Field(8000, gt=0, description="Payload sample rate in Hz (8000 for G.711).")
    jitter_ms: int = Field(60, ge=0, le=1000, description="Jitter buffer depth in milliseconds.")

    @field_validator("bind")
    @classmethod
    def _bind_is_an_address(cls, bind: str) -> str:
        try:
            ip_address(bind)
        except ValueError:
            raise ValueError(f"{bind!r} is not an IP address of this machine (e.g. 10.1.2.1, or 127.0.0.1)") from None
        return bind


class FileSource(Strict):
    type: Literal["file"] = Field(description="Replay audio files (any format ffmpeg reads).")
    paths: list[Path] = Field(min_length=1, description="Files (or directories of audio files) to play, in order.")
    realtime: bool = Field(True, description="Pace frames at real time (False: as fast as possible).")
    loop: bool = Field(False, description="Start again from the first file after the last.")
    gap: tuple[float, float] = Field(
        (0.0, 0.0), description="Silence between files, seconds: a random value in [min, max]."
    )
    shuffle: bool = Field(False, description="Play the files in a random order on each pass.")


class PipeSource(Strict):
    type: Literal["pipe"] = Field(description="Raw PCM from standard input or a named pipe.")
    path: str = Field("-", description="Path of a FIFO or file, or '-' for standard input.")
    rate: int = Field(16000, gt=0, description="Sample rate of the raw PCM in Hz.")
    sample_format: Literal["s16le", "u8", "s24le", "f32le"] = Field("s16le", description="Sample encoding.")
    channels: int = Field(1, ge=1, description="Interleaved channels; the first one is used.")


class WebSource(Strict):
    type: Literal["web"] = Field(description="Push-to-talk audio from browsers (the guard page) over WebSocket.")
    max_buffer_s: float = Field(
        5.0, gt=0,
        description="How far (seconds) a client's pushed audio may run ahead of real time; more is refused (a flooding"
        " client). A channel that falls behind has two minutes held for it (bridge/sources/base.py BACKLOG_S).",
    )


SourceConfig = Annotated[
    SoundCardSource | RtpSource | FileSource | PipeSource | WebSource, Field(discriminator="type")
]


# --- segmentation ------------------------------------------------------------------------------------------


class VadConfig(Strict):
    aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode: 0 least, 3 most aggressive at rejecting non-speech.")
    start_window_ms: int = Field(200, ge=20, description="Window over which speech onset is judged.")
    start_ratio: float = Field(0.6, gt=0, le=1, description="Fraction of voiced frames in the window that starts speech.")
    stop_window_ms: int = Field(
        1200, ge=20,
        description="Hang-over window: this much mostly-unvoiced audio ends speech (radio callers pause up to ~0.9 s"
        " between sentences of one transmission).",
    )
    sentence_end_ms: int = Field(
        160, ge=0,
        description="This much unvoiced audio after speech is a pause (UtterancePaused): what was recognised so far is"
        " dispatched at once, provisionally, while the utterance stays open for the hang-over (0: off). A comma's"
        " breath (0.15-0.55 s) may be one too: the dispatcher alerts on a pause only what held (docs/dispatch.md).",
    )
    long_pause_ms: int = Field(
        500, ge=0,
        description="A pause that has lasted this long (more than sentence_end_ms) is most likely the end of what"
        " the speaker had to say: the dispatcher then alerts on the reading at the pause what the final would"
        " dispatch, ~0.5 s before the hang-over ends the utterance (0, or not above sentence_end_ms: off; under a COR"
        " carrier never: its drop ends the call).",
    )
    squelch_tail_detect_ms: int = Field(
        100, ge=0,
        description="This much of a squelch tail (the receiver's noise burst after the far end lets go of the key:"
        " loud, flat across the voice band) after speech ends the utterance at once, with or without a COR line"
        " (0: off; a radio with tail elimination or CTCSS has no tail, and the hang-over or the carrier decides).",
    )
    stop_ratio: float = Field(0.15, ge=0, lt=1, description="Speech ends when the voiced share of the window drops below this.")
    preroll_ms: int = Field(
        500, ge=300,
        description="Audio kept before the detected onset (>= 300 ms: no clipped syllable; an initial fricative can"
        " precede the first voiced frame by ~250 ms).",
    )
    min_speech_ms: int = Field(
        300, ge=0, description="Utterances whose speech (first to last voiced frame) is shorter are discarded (clicks, coughs)."
    )
    max_utterance_s: float = Field(60.0, gt=1, description="A stuck-open channel is split into utterances at most this long.")
    min_level_dbfs: float = Field(-50.0, description="Frames quieter than this never count as speech (radio hiss).")
    noise_margin_db: float = Field(
        6.0, ge=0, description="Frames must be this much louder than the channel's noise floor to count as speech."
    )
    noise_floor_window_s: float = Field(
        5.0, ge=0.5, description="The noise floor is the quietest frame level over this many recent seconds."
    )
    max_zero_crossing_rate: float = Field(
        0.2, gt=0, le=1,
        description="Frames whose zero-crossing rate (per sample) is higher are broadband noise, e.g. a squelch tail,"
        " and never count as speech.",
    )


# --- the rest of the service -------------------------------------------------------------------------------


class ChannelConfig(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Channel id (used in paths and topics).")
    name: str = Field(description="Human name shown on the console (e.g. 市场保安).")
    source: SourceConfig = Field(description="Where the channel's received audio comes from.")
    vad: VadConfig = Field(default_factory=VadConfig, description="Segmentation settings for this channel.")
    line: LineConfig | None = Field(None, description="PTT/COR control lines of the radio, if any.")
    tx: TransmitConfig | None = Field(None, description="Transmit path (talk-back, patches, announcements); None: receive only.")
    enabled: bool = Field(True, description="Disabled channels are validated but not started.")


class StorageConfig(Strict):
    data_dir: Path = Field(Path("var"), description="Directory for the database and the audio archive.")
    audio_format: Literal["opus", "wav", "flac"] = Field("opus", description="Archive audio format (Opus in OGG by default).")
    opus_bitrate: str = Field("24k", description="Opus target bitrate, 6k to 256k (VBR: files average near it).")
    opus_complexity: int = Field(5, ge=0, le=10, description="libopus's complexity, 0 to 10: the CPU the archive's "
                                 "encoder spends for the quality at that bitrate (5: a third of the CPU of 10, a fifth "
                                 "of libsndfile's encoder before; docs/performance.md).")
    reserve_mb: float = Field(
        16.0, ge=0,
        description="Room kept on the archive's disk for the database (transcripts, incidents, alerts), as a file "
        "(data_dir/.reserve) the archive deletes when the disk fills up: a report made while audio cannot be written "
        "is still recognised, stored and dispatched (a transcript takes ~2 kB with its search index: 16 MB hold some "
        "8000). Audio is written again once there is room for the reserve twice over. 0: no reserve.",
    )  # fmt: skip
    spill_dir: Path | None = Field(
        None,
        description="A folder on another disk (relative to this file): utterances still held in memory when the "
        "service stops (the archive's disk full) are written there, each as a WAV with a JSON sidecar of its "
        "metadata, and brought back into the archive at the next start. None: such utterances are lost, each logged.",
    )  # fmt: skip

    database_url: str | None = Field(
        None,
        description="PostgreSQL store (a libpq URL, e.g. postgresql://jingbao@db.example/jingbao; the password in "
        "~/.pgpass, never here): what `jingbao run --role central` stores every station's utterances and transcripts "
        "in (docs/deployment.md). The SQLite database in data_dir is used either way for what is not on it yet.",
    )  # fmt: skip
    reader_url: str | None = Field(
        None,
        description="The read-only login for search, replay and audit at central (bridge/pg_roles.py's jingbao_reader, "
        "e.g. postgresql://jingbao_reader@db.example/jingbao). None: database_url's.",
    )  # fmt: skip

    @property
    def database(self) -> Path:
        return self.data_dir / "jingbao.db"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"


class BrokerTls(Strict):
    ca_file: Path = Field(description="CA certificate(s) (PEM) the broker's certificate must be signed by; the broker's "
                          "certificate must also name `broker.host`.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM), for a listener that requires one.")
    key_file: Path | None = Field(None, description="Its private key (PEM).")

    @model_validator(mode="after")
    def _key_with_cert(self) -> BrokerTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BrokerConfig(Strict):
    enabled: bool = Field(True, description="Connect to an MQTT broker (alerts, positions, acknowledgements).")
    host: str = Field("127.0.0.1", description="MQTT broker host.")
    port: int = Field(1883, ge=1, le=65535, description="MQTT broker port (a TLS listener is usually 8883).")
    username: str | None = Field(None, description="MQTT user name of the service (`jingbao broker setup` makes 'jingbao').")
    password: str | None = Field(None, description="MQTT password (better: password_file, kept out of the config).")
    password_file: Path | None = Field(
        None, description="File holding the MQTT password (written by `jingbao broker setup`); relative to this file.",
    )  # fmt: skip
    tls: BrokerTls | None = Field(None, description="Connect over TLS (paths relative to this file); None: plain TCP.")
    topic_prefix: str = Field("jingbao", description="Prefix of every topic jingbao publishes.")
    client_id: str = Field(
        "jingbao-bridge", description="MQTT client id of the service (persistent session). A broker set up by `jingbao "
        "broker` takes the user name as the client id instead, so that nobody else can take the session over.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _one_password(self) -> BrokerConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def read_password(self) -> str | None:
        """The password, from the config or its file; ConfigError when the file cannot be read."""
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"broker.password_file {self.password_file}: cannot read it ({e.strerror}); "
                              "`jingbao broker setup` writes it") from e  # fmt: skip


STATION_ID = r"^[A-Za-z0-9_-]{1,64}$"  # no "." : the central tier names a station's utterance <station>.<id>


class RecognitionNodeConfig(Strict):
    """`jingbao run --role recognition`: what a recognition worker takes from central's queue (bridge/recognition_node.py)."""

    after_s: float = Field(
        5.0, ge=0,
        description="Take an utterance that central has held this long without a transcript: its edge, recognising "
        "live, has one there within a second unless it is behind. 0 for edges that do not recognise (asr.engine: none).",
    )  # fmt: skip
    horizon_s: float = Field(
        3600.0, gt=0, description="Leave utterances begun longer ago than this to their edges (and to search as they are)."
    )
    lease_s: float = Field(
        60.0, gt=0,
        description="A claimed utterance is the worker's this long; a worker that dies (or hangs) mid-decode loses it "
        "then to another.",
    )  # fmt: skip
    max_claims: int = Field(
        5, ge=1, description="An utterance claimed this often without a transcript arriving is given up (logged)."
    )
    poll_s: float = Field(0.5, gt=0, le=60, description="How often an idle worker looks for work.")
    stations: list[Annotated[str, Field(pattern=STATION_ID)]] = Field(
        default_factory=list, description="Only these stations' utterances (empty: every station's)."
    )


class NodeConfig(Strict):
    """This box as a node of several (issue 13: `jingbao run --role edge|central|recognition`; docs/deployment.md)."""

    station: str | None = Field(
        None, pattern=STATION_ID,
        description="This station's id between nodes (ASCII, e.g. gongyuanbeilu): an edge publishes under "
        "<prefix>/nodes/<station>/. Required by --role edge.",
    )  # fmt: skip
    broker: BrokerConfig | None = Field(
        None,
        description="The broker between nodes and this node's own login on it (an edge: node-<station>, central: "
        "central; `jingbao broker add-node`). None: the `broker` section's.",
    )
    region: Path | None = Field(
        None,
        description="The region file (its 分局, their stations, neighbouring stations; relative to this file): the "
        "central tier names each result's station by it and scopes its users by station or 分局 (docs/deployment.md).",
    )
    dispatch: Literal["edge", "central"] = Field(
        "edge",
        description="Who dispatches what an edge's channels hear: the edge itself, as a single box does (the default: "
        "an edge keeps dispatching until central's region names its jurisdiction file), or central, across stations "
        "(bridge/central_dispatch.py); then the edge raises no incident from its transcripts. Only --role edge reads it.",
    )
    dispatch_max_age_s: float = Field(
        900.0, gt=0,
        description="A transcript is dispatched only while its utterance began at most this long ago, by central (a "
        "backlog after a long outage: counted 'stale') as by a box or edge dispatching its own (an utterance left "
        "pending while the service was down, recognised at its next start); an older one is stored and searchable, "
        "logged, and pages nobody. An SOS is raised whatever its age, and a final settles the provisional incident its "
        "partials raised whatever its age.",
    )  # fmt: skip
    ack_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="An edge resends what it sent when central has not acknowledged storing it within this long.",
    )  # fmt: skip
    behind_after_s: float = Field(
        300.0, gt=0,
        description="An edge whose oldest unacknowledged entry is older than this has the fault 'forwarding behind' "
        "(/healthz answers 503) until central has caught up.",
    )  # fmt: skip
    recognition: RecognitionNodeConfig = Field(
        default_factory=RecognitionNodeConfig,
        description="What a recognition worker takes from central's queue. Only --role recognition reads it.",
    )


class WebConfig(Strict):
    host: str = Field("127.0.0.1", description="Address the HTTP API and console listen on.")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    tile_url: str | None = Field(
        None, description="Map tile URL template for the console (e.g. a local tile server's /{z}/{x}/{y}.png); None draws"
        " the jurisdiction on a plain background, for command rooms without a network.",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Reverse proxies in front of the service (addresses or CIDR networks) whose X-Forwarded-For is"
        " believed: a request from one of them is from the right-most address in that header that is not one of them"
        " (login throttling, sessions and the audit log use it). Empty (the default): the header is ignored and every"
        " request is from the address that connected.",
    )
    secure_cookies: bool = Field(
        False,
        description="Mark the session cookie Secure, so that browsers send it over HTTPS only: set it when the console"
        " is served over HTTPS (a TLS proxy in front). Off by default, since plain HTTP on 127.0.0.1 is the demo.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) besides the console's own (the Host a request is sent to) whose"
        " pages may change things and open WebSockets: the address users type when a reverse proxy in front rewrites"
        " Host. Requests from any other site's page are refused (403; a WebSocket is closed with 1008).",
    )
    metrics_token_file: Path | None = Field(
        None,
        description="File holding the bearer token a Prometheus scraper sends to GET /metrics (Authorization: Bearer"
        " <token>); relative to this file. None (the default): /metrics is refused to everyone.",
    )

    def read_metrics_token(self) -> str | None:
        """The /metrics token from its file (None when none is configured); ConfigError when it is unreadable or empty."""
        if self.metrics_token_file is None:
            return None
        try:
            token = self.metrics_token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"web.metrics_token_file {self.metrics_token_file}: cannot read it ({e.strerror})") from e
        if not token:
            raise ConfigError(f"web.metrics_token_file {self.metrics_token_file} is empty")
        return token

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        normalised = []
        for origin in origins:
            parts = urlsplit(origin.strip().lower())
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], e.g. https://console.example)")
            normalised.append(f"{parts.scheme}://{parts.netloc}")
        return normalised


class Config(Strict):
    jurisdiction: Path = Field(description="Jurisdiction file (places, channels, responders); relative to this file.")
    channels: list[ChannelConfig] = Field(min_length=1, description="Radio channels to bridge.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Database and audio archive.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker.")
    web: WebConfig = Field(default_factory=WebConfig, description="HTTP API and console.")
    asr: AsrConfig = Field(default_factory=AsrConfig, description="Speech recognition.")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig, description="Incident dispatch rules.")
    patches: list[PatchConfig] = Field(default_factory=list, description="Channel pairs linked both ways at start-up.")
    node: NodeConfig = Field(default_factory=NodeConfig, description="This box as an edge or the central tier.")

    @model_validator(mode="after")
    def _unique_channel_ids(self) -> Config:
        seen: set[str] = set()
        for ch in self.channels:
            if ch.id in seen:
                raise ValueError(f"channel id {ch.id!r} is declared twice")
            seen.add(ch.id)
        return self

    @model_validator(mode="after")
    def _patches_link_transmitting_channels(self) -> Config:
        by_id = {ch.id: ch for ch in self.channels}
        for i, patch in enumerate(self.patches):
            for end in (patch.a, patch.b):
                if end not in by_id:
                    raise ValueError(f"patches[{i}]: no channel {end!r}")
                if by_id[end].tx is None:
                    raise ValueError(f"patches[{i}]: channel {end!r} has no tx section, so nothing can be played onto it")
                if not by_id[end].enabled:
                    raise ValueError(f"patches[{i}]: channel {end!r} is disabled (enabled: false): remove the patch too")
        return self


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file and each bad field path."""


def load_config(path: Path | str) -> Config:
    """Read and validate a YAML config; relative paths inside it are resolved against the file's folder."""
    path = Path(path)
    return _resolve_paths(read_model(path, Config, ConfigError, "configuration"), path.parent)


M = TypeVar("M", bound=BaseModel)


def read_model(path: Path, model: type[M], error: type[Exception], what: str) -> M:
    """A YAML file validated as `model`; an unreadable or invalid file raises `error`, naming the file and each bad
    field path (`what` the file is: "configuration", "region")."""
    raw = read_yaml(path, error)
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise error(f"{path}: invalid {what}:\n{format_validation_error(e, raw)}") from e


def read_yaml(path: Path, error: type[Exception]) -> object:
    """The parsed YAML file; an unreadable file or bad YAML raises `error` with a message naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {e}") from e


def format_validation_error(error: ValidationError, data: object = None) -> str:
    """One line per problem, naming the field path the way it is written in YAML (channels[2].source.port).

    pydantic puts the tag of a discriminated union into the path (channels[0].source.rtp.port); walking the
    validated `data` alongside tells such a tag (the mapping's `type`, not one of its keys) from a field, and drops it.
    """
    lines = []
    for err in error.errors():
        parts: list[str] = []
        node = data
        for loc in err["loc"]:
            if isinstance(node, dict) and isinstance(loc, str) and loc not in node and node.get("type") == loc:
                continue  # a union tag, not a key the user wrote
            node = _child(node, loc)
            if isinstance(loc, int):
                parts[-1:] = [f"{parts[-1] if parts else ''}[{loc}]"]
            else:
                parts.append(str(loc))
        lines.append(f"  {'.'.join(parts) or '(top)'}: {err['msg']}")
    return "\n".join(lines)


def _child(node: object, loc: str | int) -> object:
    if isinstance(node, dict):
        return node.get(loc)
    if isinstance(node, list) and isinstance(loc, int) and 0 <= loc < len(node):
        return node[loc]
    return None


def _resolve_paths(config: Config, base: Path) -> Config:
    def resolve(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    channels = []
    for ch in config.channels:
        if ch.tx is not None and isinstance(ch.tx.output, FileSinkConfig):
            output = ch.tx.output.model_copy(update={"directory": resolve(ch.tx.output.directory)})
            ch = ch.model_copy(update={"tx": ch.tx.model_copy(update={"output": output})})
        if isinstance(ch.source, FileSource):
            ch = ch.model_copy(update={"source": ch.source.model_copy(update={"paths": [resolve(p) for p in ch.source.paths]})})
        channels.append(ch)
    spill_dir = config.storage.spill_dir
    storage = config.storage.model_copy(
        update={"data_dir": resolve(config.storage.data_dir), "spill_dir": spill_dir and resolve(spill_dir)}
    )
    node = config.node
    if node.broker is not None:
        node = node.model_copy(update={"broker": _resolve_broker(node.broker, resolve)})
    if node.region is not None:
        node = node.model_copy(update={"region": resolve(node.region)})
    web = config.web
    if web.metrics_token_file is not None:
        web = web.model_copy(update={"metrics_token_file": resolve(web.metrics_token_file)})
    dispatch = config.dispatch
    if dispatch.alerts.announce_model is not None:
        alerts = dispatch.alerts.model_copy(update={"announce_model": resolve(dispatch.alerts.announce_model)})
        dispatch = dispatch.model_copy(update={"alerts": alerts})
    return config.model_copy(update={"jurisdiction": resolve(config.jurisdiction), "channels": channels,
                                     "storage": storage, "broker": _resolve_broker(config.broker, resolve), "web": web,
                                     "dispatch": dispatch, "node": node})  # fmt: skip


def _resolve_broker(broker: BrokerConfig, resolve: Callable[[Path], Path]) -> BrokerConfig:
    if broker.password_file is not None:
        broker = broker.model_copy(update={"password_file": resolve(broker.password_file)})
    if broker.tls is not None:
        tls = {k: resolve(v) for k, v in broker.tls.model_dump().items() if v is not None}
        broker = broker.model_copy(update={"tls": broker.tls.model_copy(update=tls)})
    return broker
