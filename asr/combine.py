"""Merging the results of several engines on one utterance into one transcript.

Engines are given in priority order (the pool's order: text engines such as Vosk first, then sherpa). The first
engine with text gives `text`, `words`, `conf` and (converted from its text) `pinyin`; when none has text, the
first with pinyin gives `pinyin`, `words` and `conf`. `readable` is the lead's (its text, or the characters decoded
from its pinyin), else the first engine's that has one. Text without Han characters (the Korean test model) has no
pinyin of its own and takes the first engine's that has some. Keywords come from every engine (the sherpa spotter's,
and Vosk's found in its text: a place both give is listed twice, once per engine that heard it), and so do the
alternative hearings (the sherpa engine's at other speeds). A third engine slots
in by its place in the list; nothing here names an engine.
"""

from __future__ import annotations

from collections.abc import Sequence

from asr.transcript import Transcript


def combine(transcripts: Sequence[Transcript]) -> Transcript:
    if not transcripts:
        raise ValueError("combine() needs at least one transcript")
    if len(transcripts) == 1:
        return transcripts[0]
    lead = next((t for t in transcripts if t.text), None) or next((t for t in transcripts if t.pinyin), transcripts[0])
    keywords = tuple(k for t in transcripts for k in t.keywords)
    return Transcript(
        text=lead.text,
        pinyin=lead.pinyin or next((t.pinyin for t in transcripts if t.pinyin), ""),  # text with no Han characters
        words=lead.words,
        keywords=tuple(sorted(keywords, key=lambda k: k.start)),
        engine="+".join(t.engine for t in transcripts),
        conf=lead.conf,
        partial=any(t.partial for t in transcripts),
        readable=lead.readable or next((t.readable for t in transcripts if t.readable), ""),
        alternatives=tuple(a for t in transcripts for a in t.alternatives),
        extra={"pinyin_by_engine": {t.engine: t.pinyin for t in transcripts}},
    )
