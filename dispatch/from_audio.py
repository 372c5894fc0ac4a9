"""From recorded audio to extract results: segment a file as a channel would, recognise each utterance streamed in
20 ms frames (as the live service feeds its engines), and pass each final transcript to the `Extractor`.

Used by `jingbao extract --audio`, bench/dispatch_accuracy.py and the from-audio tests, so all three measure the
same path the service runs (segmenter -> engines -> combine -> extract).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asr.combine import combine
from asr.engine import Engine
from asr.transcript import Transcript
from bridge.config import VadConfig
from bridge.decode import decode_file, iter_frames
from bridge.events import Utterance
from bridge.segmenter import segment_pcm
from dispatch.extract import Extractor

logger = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class HeardUtterance:
    """One utterance of a file: where it lies (seconds from the file's start), what was heard, what it means."""

    file: Path
    start: float
    end: float
    transcript: Transcript
    result: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        heard = self.transcript.to_dict()
        heard.pop("partial", None)
        return {"file": str(self.file), "start": round(self.start, 3), "end": round(self.end, 3), **heard, **self.result}


def recognise(pcm: bytes, engines: Sequence[Engine]) -> Transcript:
    """The final transcript of one utterance, every engine fed frame by frame as the live pool feeds them."""
    streams = [engine.start_stream() for engine in engines]
    for frame in iter_frames(pcm):
        for stream in streams:
            stream.feed(frame.pcm)
    return combine([stream.finish() for stream in streams])


def hear_pcm(pcm: bytes, engines: Sequence[Engine], vad: VadConfig | None = None, name: Path = Path("-")
             ) -> Iterator[tuple[Utterance, Transcript]]:
    """Each utterance the segmenter finds in 16 kHz mono int16 `pcm`, with its final transcript."""
    for utterance in segment_pcm(pcm, vad or VadConfig(), channel=name.stem):
        yield utterance, recognise(utterance.pcm, engines)


def recognise_file(path: Path, engines: Sequence[Engine], vad: VadConfig | None = None) -> str:
    """The toned pinyin of every utterance the segmenter finds in an audio file, in order (empty when none)."""
    return " ".join(t.pinyin for _, t in hear_pcm(decode_file(path), engines, vad, Path(path)) if t.pinyin)


def extract_pcm(pcm: bytes, engines: Sequence[Engine], extractor: Extractor, vad: VadConfig | None = None,
                name: Path = Path("-")) -> Iterator[HeardUtterance]:
    """Each utterance the segmenter finds in 16 kHz mono int16 `pcm`, recognised and extracted."""
    for utterance, transcript in hear_pcm(pcm, engines, vad, name):
        yield HeardUtterance(name, utterance.start, utterance.end, transcript, extractor(transcript.to_dict()))


def extract_file(path: Path, engines: Sequence[Engine], extractor: Extractor, vad: VadConfig | None = None
                 ) -> Iterator[HeardUtterance]:
    """`extract_pcm` of an audio file in any format ffmpeg reads (raises AudioDecodeError for a bad file)."""
    yield from extract_pcm(decode_file(path), engines, extractor, vad, Path(path))
