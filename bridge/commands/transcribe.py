"""`jingbao transcribe`: segment audio files (or the archive) and transcribe each utterance, with the jurisdiction's
places and incident words as the spotter's keywords and the decoder's words."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asr.engine import Engine
from asr.transcript import Transcript
from bridge.commands.service import parse_since

if TYPE_CHECKING:
    from asr.live import PlaceWriter
    from bridge.archive import ArchivedUtterance
    from bridge.config import Config, StorageConfig

logger = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this package's subcommands (each sets `func`)."""
    t = sub.add_parser("transcribe", help="segment audio files and transcribe each utterance")
    t.add_argument("files", nargs="*", type=Path, metavar="FILE", help="audio files (any format ffmpeg reads)")
    t.add_argument("--archive", action="store_true",
                   help="re-transcribe archived utterances instead of files (stores the new transcripts; see --since)")
    t.add_argument("--since", type=parse_since, metavar="T",
                   help="with --archive: utterances starting at/after T (ISO date/time, or relative: 30m, 2h, 7d)")
    t.add_argument("--channel", help="with --archive: only this channel")
    t.add_argument("--json", action="store_true", help="one JSON object per utterance on stdout")
    t.add_argument("--engine", choices=["vosk", "sherpa", "all"], help="engines to run (default: the config's asr.engine)")
    t.add_argument("--config", type=Path, help="config file: models, the archive, and the jurisdiction and lexicon whose "
                   "places and incident words are spotted (default: the service's, config/demo.yaml; files are still "
                   "transcribed, without keywords, where there is none)")
    t.set_defaults(func=cmd_transcribe)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from asr.config import AsrConfig
    from asr.worker import build_engines
    from bridge.commands.service import DEFAULT_CONFIG
    from bridge.config import ConfigError, VadConfig, load_config
    from dispatch.vocabulary import decoder_words, spotter_keywords

    if args.archive == bool(args.files):
        print("give audio files, or --archive (not both)", file=sys.stderr)
        return 2
    config = None
    # the service's config by default: a re-transcription that lost the jurisdiction's keywords would overwrite the
    # stored transcripts with poorer ones; only plain files may go without it
    if args.config or args.archive or DEFAULT_CONFIG.is_file():
        try:
            config = load_config(args.config or DEFAULT_CONFIG)
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
    else:
        print(f"no --config and no {DEFAULT_CONFIG} here: no places or incident words are spotted", file=sys.stderr)
    asr_config, keywords, vad, words = AsrConfig(), [], VadConfig(), decoder_words()
    if config is not None:
        asr_config, vad = config.asr, config.channels[0].vad
        keywords = spotter_keywords(config.jurisdiction, config.dispatch.lexicon)
        words = decoder_words(config.dispatch.lexicon)
    if args.engine:
        asr_config = asr_config.model_copy(update={"engine": args.engine})
    engines = build_engines(asr_config, keywords, words)
    if not engines:
        print("no speech recognition engine available (see `jingbao model list`)", file=sys.stderr)
        return 2
    name_places = _place_namer(config, engines)
    if args.archive:
        assert config is not None  # always loaded for --archive (above)
        return _transcribe_archive(args, config.storage, engines, name_places)
    failed = 0
    with _progress(args.files, enabled=sys.stderr.isatty() and not args.json) as advance:
        for path in args.files:
            try:
                for start, end, transcript in transcribe_file(path, engines, vad, name_places):
                    _print_utterance(path, start, end, transcript, args.json)
            except Exception as e:  # a bad file is reported and skipped, the others are still transcribed
                failed += 1
                print(f"{path}: {e}", file=sys.stderr)
            advance()
    return 1 if failed else 0


def _place_namer(config: Config | None, engines: Sequence[Engine]) -> PlaceWriter:
    """What the service does to a final before it is stored: the places its dispatcher reads in it written as named
    in the characters (the on-board engine's; docs/dispatch.md, Location 11). Without a config, as heard."""
    from asr.worker import character_writer
    from dispatch.area import JurisdictionArea, place_namer
    from dispatch.gazetteer import load_jurisdiction

    writer = character_writer(engines)
    if config is None or writer is None:
        return lambda transcript, channel: transcript
    return place_namer(JurisdictionArea(load_jurisdiction(config.jurisdiction)), writer)


def _transcribe_archive(args: argparse.Namespace, storage: StorageConfig, engines: Sequence[Engine],
                        name_places: PlaceWriter) -> int:
    """Re-transcribe archived utterances (a better model, a new keyword list) and store the new transcripts."""
    from asr.store import TranscriptStore
    from bridge.archive import Archive
    from bridge.db import connect

    if not storage.database.is_file():
        print(f"no archive database at {storage.database}", file=sys.stderr)
        return 2
    failed = 0
    with Archive(storage) as archive:
        store = TranscriptStore(connect(storage.database))
        rows = sorted(archive.list(channel=args.channel, since=args.since, limit=1_000_000), key=lambda r: r.seq)
        with _progress(rows, enabled=sys.stderr.isatty() and not args.json) as advance:
            for row in rows:
                try:
                    transcript = name_places(_recognise(archive.read_pcm(row.id), engines), row.channel)
                except Exception as e:  # one unreadable file must not stop the rest
                    failed += 1
                    print(f"{row.id}: {e}", file=sys.stderr)
                else:
                    store.save(row.id, row.channel, row.start_ms / 1000, transcript)
                    archive.set_status(row.id, "transcribed")
                    _print_archived(row, transcript, args.json)
                advance()
    print(f"{len(rows) - failed} utterance(s) re-transcribed", file=sys.stderr)
    return 1 if failed else 0


def _recognise(pcm: bytes, engines: Sequence[Engine]) -> Transcript:
    """Every engine hears the utterance; their results are combined."""
    from asr.combine import combine

    results = []
    for engine in engines:
        stream = engine.start_stream()
        stream.feed(pcm)
        results.append(stream.finish())
    return combine(results)


def transcribe_file(path: Path, engines: Sequence[Engine], vad: object, name_places: PlaceWriter
                    ) -> Iterator[tuple[float, float, Transcript]]:
    """(start, end, transcript) of each utterance the segmenter finds in the file, times in seconds from its start;
    every engine hears every utterance and their results are combined (the places found named: no channel's own)."""
    from bridge.decode import decode_file
    from bridge.segmenter import segment_pcm

    for utterance in segment_pcm(decode_file(path), vad, channel=path.stem):  # type: ignore[arg-type]
        yield utterance.start, utterance.end, name_places(_recognise(utterance.pcm, engines), "")


def _print_utterance(path: Path, start: float, end: float, transcript: Transcript, as_json: bool) -> None:
    if as_json:
        record = {"file": str(path), "start": round(start, 3), "end": round(end, 3), **transcript.to_dict()}
        record.pop("partial", None)
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    places = " ".join(f"[{k.label}→{k.ref}]" for k in transcript.keywords)
    said = transcript.shown or "(nothing recognised)"
    print(f"{path.name} {start:7.2f}-{end:7.2f}  {said}  {places}".rstrip(), flush=True)
    if transcript.readable and transcript.pinyin and not transcript.text:  # decoded characters: the syllables heard too
        print(f"{'':>{len(path.name) + 17}}  {transcript.pinyin}", flush=True)


def _print_archived(row: ArchivedUtterance, transcript: Transcript, as_json: bool) -> None:
    start, end = row.start_ms / 1000, row.end_ms / 1000
    if as_json:
        record = {"utterance_id": row.id, "channel": row.channel, "start": start, "end": end, **transcript.to_dict()}
        record.pop("partial", None)
        print(json.dumps(record, ensure_ascii=False), flush=True)
        return
    said = transcript.shown or "(nothing recognised)"
    print(f"{row.id} {row.channel}  {said}", flush=True)


class _progress:
    """A rich progress bar over the files on stderr, or nothing (not a terminal, or --json)."""

    def __init__(self, files: Sequence[object], enabled: bool) -> None:
        self._files, self._enabled, self._bar = files, enabled and len(files) > 1, None

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self._enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("transcribing", total=len(self._files))
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
