"""Radio hardware section of the configuration: a channel's control line (PTT, COR/carrier), its transmit path
(key-up delay, tail, time-out timer, audio output) and channel patches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- control lines -----------------------------------------------------------------------------------------


class CarrierLineConfig(Strict):
    squelch_tail_ms: int = Field(
        150, ge=0, le=2000,
        description="Received audio this long before each carrier drop is the squelch tail (noise), not speech: trimmed.",
    )


class SerialLineConfig(CarrierLineConfig):
    type: Literal["serial"] = Field(description="Serial-port modem control lines (pyserial): PTT on RTS/DTR, COR on CTS/DSR/DCD.")
    port: str = Field(description="Device path (/dev/ttyUSB0, /dev/serial/by-id/...) or a pyserial URL (loop:// in tests).")
    ptt: Literal["rts", "dtr"] | None = Field("rts", description="Output line that keys the transmitter; None: no PTT.")
    ptt_invert: bool = Field(False, description="Key by dropping the line instead of raising it (see docs: unsafe on crash).")
    cor: Literal["cts", "dsr", "dcd"] | None = Field("cts", description="Input line carrying carrier/COR; None: no COR.")
    cor_invert: bool = Field(False, description="Carrier is present when the input line is low.")
    poll_ms: int = Field(20, ge=5, le=500, description="COR polling interval (pyserial has no change events).")


Cm108Input = Literal["vol_up", "vol_down", "mute_play", "mute_rec"]


class Cm108LineConfig(CarrierLineConfig):
    type: Literal["cm108"] = Field(description="CM108/CM119 USB sound-card GPIO through hidraw ('USB fob').")
    device: str = Field(description="hidraw device, e.g. /dev/hidraw0 (or a stable udev symlink such as /dev/radio-fob-1).")
    ptt_gpio: int | None = Field(3, ge=1, le=8, description="GPIO pin (1-8) keying the transmitter; 3 on most fobs; None: none.")
    ptt_invert: bool = Field(False, description="Key by driving the pin low.")
    cor: Cm108Input | None = Field("vol_down", description="HID button input wired to the radio's COR; None: no COR.")
    cor_invert: bool = Field(False, description="Carrier is present when the input reads 0.")


class GpioLineConfig(CarrierLineConfig):
    type: Literal["gpio"] = Field(description="Linux GPIO character device via libgpiod (single-board computers).")
    chip: str = Field("/dev/gpiochip0", description="GPIO chip device path.")
    ptt_line: int | None = Field(None, ge=0, description="Line offset that keys the transmitter; None: no PTT.")
    ptt_active_low: bool = Field(False, description="The transmitter is keyed when the PTT line is low.")
    cor_line: int | None = Field(None, ge=0, description="Line offset carrying COR; None: no COR.")
    cor_active_low: bool = Field(False, description="Carrier is present when the COR line is low.")
    cor_bias: Literal["as_is", "pull_up", "pull_down", "disabled"] = Field("as_is", description="Bias of the COR input.")
    poll_ms: int = Field(20, ge=5, le=500, description="COR polling interval.")


PttLineConfig = Annotated[SerialLineConfig | Cm108LineConfig | GpioLineConfig, Field(discriminator="type")]


class VoxLineConfig(CarrierLineConfig):
    type: Literal["vox"] = Field(description="Carrier judged from the received audio level (a radio with no COR output).")
    threshold_dbfs: float = Field(-40.0, le=0, description="RMS level above which a 20 ms frame counts as signal.")
    attack_ms: int = Field(60, ge=20, description="Signal must last this long before the carrier is declared up.")
    hang_ms: int = Field(800, ge=20, description="Quiet must last this long before the carrier is declared down.")
    ptt: PttLineConfig | None = Field(
        None, description="Line that keys the transmitter (its COR is ignored); None: the radio keys itself by its own VOX."
    )


class SimulatedLineConfig(CarrierLineConfig):
    type: Literal["simulated"] = Field(description="A line held in memory, for demos and tests.")
    cor: bool = Field(True, description="Offer a carrier signal (False: behave like a radio with no COR).")


LineConfig = Annotated[
    SerialLineConfig | Cm108LineConfig | GpioLineConfig | VoxLineConfig | SimulatedLineConfig, Field(discriminator="type")
]


# --- audio outputs (the transmit path's sinks, implemented in bridge/sinks.py) -----------------------------


class SoundCardSinkConfig(Strict):
    type: Literal["soundcard"] = Field(description="Play through a sound-card output with PyAudio.")
    device: str | int = Field("default", description="Output device: index, a substring of its name, or 'default'.")
    rate: int | None = Field(None, gt=0, description="Native playback rate in Hz; None asks the device for its default.")
    channels: int = Field(1, ge=1, le=8, description="Channels to open; the audio goes to every one of them.")


class RtpSinkConfig(Strict):
    type: Literal["rtp"] = Field(description="Send RTP over UDP to a radio-over-IP gateway.")
    host: str = Field(description="Gateway address.")
    port: int = Field(ge=1, le=65535, description="Gateway UDP port.")
    codec: Literal["pcmu", "pcma", "l16"] = Field("pcmu", description="Payload codec.")
    rate: int = Field(8000, gt=0, description="Payload sample rate in Hz (8000 for G.711).")
    payload_type: int | None = Field(
        None, ge=0, le=127, description="RTP payload type; None uses the static one (0 PCMU, 8 PCMA, else 96)."
    )
    ptime_ms: int = Field(20, ge=10, le=60, description="Audio per packet in milliseconds (a multiple of 10).")


class FileSinkConfig(Strict):
    type: Literal["file"] = Field(description="Write each transmission as a WAV file in a folder (demos, audits, tests).")
    directory: Path = Field(description="Folder for the WAV files; created if missing.")
    realtime: bool = Field(True, description="Take as long as playing would (False: write at once).")


class PipeSinkConfig(Strict):
    type: Literal["pipe"] = Field(description="Raw 16 kHz mono s16le PCM to a named pipe, a file, or standard output.")
    path: str = Field("-", description="Path of a FIFO or file, or '-' for standard output.")
    realtime: bool = Field(True, description="Pace the writes at real time.")


SinkConfig = Annotated[
    SoundCardSinkConfig | RtpSinkConfig | FileSinkConfig | PipeSinkConfig, Field(discriminator="type")
]


class TransmitConfig(Strict):
    output: SinkConfig = Field(description="Where transmitted audio is played (the radio's audio input).")
    key_up_delay_ms: int = Field(250, ge=0, le=5000, description="Keyed, silent time before audio (TX and CTCSS settle).")
    tail_ms: int = Field(300, ge=0, le=5000, description="Keyed time after the audio so the last syllable is not clipped.")
    tot_s: float = Field(120.0, gt=0, le=3600, description="Time-out timer: a transmission keyed this long is cut and unkeyed.")
    clear_ms: int = Field(500, ge=0, le=10000, description="Quiet needed on the channel before a normal transmission.")
    max_wait_s: float = Field(60.0, gt=0, description="A normal transmission waiting this long for a busy channel is dropped.")
    echo_guard_ms: int = Field(
        600, ge=0, le=10000, description="Received audio this long after unkeying is still treated as jingbao's own echo."
    )
    announce_airtime_s: float = Field(
        20.0, ge=0, description="Spoken announcements may take at most this many seconds of airtime per rolling "
        "announce_window_s; one that would exceed it is dropped, counted and logged (its alerts still reach the phones).",
    )  # fmt: skip
    announce_window_s: float = Field(60.0, gt=0, le=3600, description="The rolling window of announce_airtime_s.")


# --- patches -----------------------------------------------------------------------------------------------


class PatchConfig(Strict):
    a: str = Field(description="One channel id.")
    b: str = Field(description="The other channel id; audio flows both ways.")
    mode: Literal["utterance", "live"] = Field(
        "utterance",
        description="utterance: forward each finished utterance; live: stream as it is received (lower latency).",
    )

    @model_validator(mode="after")
    def _two_channels(self) -> PatchConfig:
        if self.a == self.b:
            raise ValueError(f"a patch links two different channels, got {self.a!r} twice")
        return self
