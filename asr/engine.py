"""The engine interface every recognizer implements: start a stream, feed audio as it arrives, read partial
results, finish with the final result. Engines are built once (their model is shared and read-only); a stream
holds all per-utterance state, so one engine serves many channels at once from worker threads."""

from __future__ import annotations

from typing import Protocol

from asr.transcript import Transcript


class RecognitionStream(Protocol):
    def feed(self, pcm: bytes) -> None:
        """Accept 16 kHz mono int16 PCM (any length) and decode what is ready. Called from a worker thread."""

    def partial(self) -> Transcript | None:
        """The best hypothesis so far (`partial=True`), or None when nothing has been recognised yet."""

    def finish(self) -> Transcript:
        """Flush the end of the audio and return the final transcript. The stream is not used afterwards."""

    def pause_partial(self) -> Transcript | None:
        """The speaker paused: the best hypothesis of everything heard so far, its last words included (a streaming
        recogniser is flushed for them), with the alternative hearings' where there are; None when nothing yet."""

    def drop_alternatives(self) -> None:
        """Stop the alternative hearings (the final then has none): recognition is behind and needs their CPU."""


class Engine(Protocol):
    name: str
    alternative_speeds: tuple[float, ...]  # the alternative hearings a stream makes (none: the engine hears once)

    def start_stream(self, alternatives: bool = True) -> RecognitionStream:
        """A new, independent stream for one utterance. `alternatives`: with the engine's alternative hearings, when
        it has any (the final transcript's `alternatives`, each at extra CPU); the pool leaves them out while
        recognition is behind."""

    def start_alternatives(self) -> RecognitionStream | None:
        """A stream of the alternative hearings alone, for an utterance the pool heard once (recognition was behind):
        its final is the first of them, the others its `alternatives`. None for an engine that hears once."""


class EngineUnavailable(Exception):
    """An engine's model is missing or unusable; the message names the options (config, env var, fetch)."""
