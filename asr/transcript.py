"""The transcript: the same shape from every engine, in SQLite, in JSON output and on the console."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class Word:
    """A recognised word (Vosk) or syllable (pinyin recogniser) with times relative to the utterance start."""

    text: str
    start: float
    end: float
    conf: float


@dataclass(slots=True, frozen=True)
class Keyword:
    """A spotted keyword: `label` as spoken (美食街), `ref` what it refers to (a place id, or `incident:<term>`)."""

    label: str
    ref: str
    start: float
    end: float
    score: float


@dataclass(slots=True, frozen=True)
class Transcript:
    text: str  # Chinese characters, joined without spaces; "" when the engine gives none
    pinyin: str  # tone-numbered syllables separated by spaces, e.g. "mei3 shi2 jie1"
    words: tuple[Word, ...] = ()
    keywords: tuple[Keyword, ...] = ()
    engine: str = ""
    conf: float = 0.0
    partial: bool = False
    # what people read: the engine's own characters (Vosk), or characters decoded from the pinyin (asr/hanzi.py) for
    # the on-board engine; "" when there are none. `text` and `pinyin` stay the engine's own (dispatch reads them).
    readable: str = ""
    # other hearings of the same audio (the on-board recogniser at other speeds: asr/sherpa_engine.py), each a
    # transcript of its own without alternatives; a reader that can use more than the best hypothesis weighs them
    alternatives: tuple[Transcript, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def empty(self) -> bool:
        return not self.text and not self.pinyin and not self.keywords

    @property
    def shown(self) -> str:
        """What a person reads: characters when there are any (the engine's or decoded), else the pinyin."""
        return self.readable or self.text or self.pinyin

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["words"] = [asdict(w) for w in self.words]
        d["keywords"] = [asdict(k) for k in self.keywords]
        d["alternatives"] = [a.to_dict() for a in self.alternatives]
        d.pop("extra")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transcript:
        return cls(
            text=d.get("text", ""),
            pinyin=d.get("pinyin", ""),
            words=tuple(Word(**w) for w in d.get("words", ())),
            keywords=tuple(Keyword(**k) for k in d.get("keywords", ())),
            engine=d.get("engine", ""),
            conf=float(d.get("conf", 0.0)),
            partial=bool(d.get("partial", False)),
            readable=d.get("readable", ""),
            alternatives=tuple(cls.from_dict(a) for a in d.get("alternatives") or ()),
        )
