"""Speech-recognition section of the configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from asr.denoise import DEFAULT_FLOOR


class AsrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: Literal["auto", "sherpa", "vosk", "all", "none"] = Field(
        "auto", description="Recognizer: auto uses every engine whose model is found; none turns ASR off."
    )
    sherpa_model: Path | None = Field(
        None, description="Directory of the sherpa-onnx Mandarin keyword/pinyin model; None searches the usual places."
    )
    vosk_model: Path | None = Field(
        None, description="Directory of the Vosk model (vosk-model-small-cn-0.22); None searches the usual places."
    )
    workers: int = Field(
        2, ge=1, le=16, description="Recognition worker threads (threads beat processes here: both engines release the GIL)."
    )
    queue_size: int = Field(
        256, ge=1, le=1000,
        description="Utterances recognised at once at most (a bound on memory); beyond this new ones stay 'pending' in"
        " the archive until ASR catches up.",
    )
    admit_lag_s: float = Field(
        3.0, gt=0,
        description="A new utterance is recognised live only while the oldest audio waiting for a worker has waited"
        " less than this; otherwise it stays 'pending' and is recognised from the archive, oldest first, once ASR"
        " catches up.",
    )
    hanzi: bool = Field(
        True, description="Write the on-board engine's pinyin as Chinese characters for people to read (asr/hanzi.py); "
        "false keeps pinyin only.",
    )
    alternative_speeds: list[float] = Field(
        [0.9, 1.1],
        description="The on-board engine also hears each utterance slowed and sped up by these factors (0.5-2, not 1);"
        " the dispatcher weighs the hearings together (a place garbled in one is often whole in another). Each costs"
        " about as much recognition CPU as the main hearing, spent only while recognition keeps up: [] for the most"
        " channels per core (docs/dispatch.md, 'More than the best hypothesis').",
    )
    noise_floor: float | None = Field(
        None, gt=0, le=1,
        description="The on-board engine hears the audio through a noise suppressor (asr/denoise.py) that scales the"
        f" channel's steady hiss down to this share of its amplitude, never lower ({DEFAULT_FLOOR} measured); null, the"
        " default, hears the audio as received: on blind sets its gain was within a sample's spread (docs/dispatch.md,"
        " 'Noise suppression'). The archive always keeps the audio as received.",
    )
    vosk_grammar: list[str] | None = Field(
        None, min_length=1,
        description="Restrict Vosk to these phrases (words of its vocabulary, space-separated); None recognises free text.",
    )

    @field_validator("alternative_speeds")
    @classmethod
    def _speeds(cls, speeds: list[float]) -> list[float]:
        if any(not 0.5 <= speed <= 2.0 or speed == 1.0 for speed in speeds):
            raise ValueError(f"each speed lies in [0.5, 2] and is not 1 (the main hearing): {speeds}")
        return speeds
