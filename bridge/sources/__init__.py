"""Channel audio sources: each turns one kind of input into 20 ms frames of 16 kHz mono int16 (bridge.audio)."""

from __future__ import annotations

from bridge.config import FileSource, PipeSource, RtpSource, SoundCardSource, SourceConfig, WebSource
from bridge.sources.base import Source, SourceError, SourceStats
from bridge.sources.file import FileInput
from bridge.sources.pipe import PipeInput
from bridge.sources.push import PushSource
from bridge.sources.rtp import RtpInput, RtpStats
from bridge.sources.soundcard import SoundCardInput

__all__ = [
    "FileInput", "PipeInput", "PushSource", "RtpInput", "RtpStats", "SoundCardInput",
    "Source", "SourceError", "SourceStats", "open_source",
]


def open_source(channel_id: str, config: SourceConfig) -> Source:
    """The source for a channel's configured input (nothing is opened until its frames() is iterated)."""
    match config:
        case SoundCardSource():
            return SoundCardInput(channel_id, config)
        case RtpSource():
            return RtpInput(channel_id, config)
        case FileSource():
            return FileInput(channel_id, config)
        case PipeSource():
            return PipeInput(channel_id, config)
        case WebSource():
            return PushSource(channel_id, config)
    raise TypeError(f"unknown source config {type(config).__name__}")
