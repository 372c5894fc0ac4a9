"""The spoken announcements (dispatch/speech.py, hardware/announcements.py): how fast they render, how soon the
channel is keyed after an incident, and whether the project's own recogniser understands them over a noisy radio.

    .venv/bin/python bench/announce.py [--snr 10] [--seed 0] [--limit N] [--voice V] [--latency-runs 5 (0: none)]

1. Intelligibility: for every demo place (each place a demo call names, with that call's incident type), the
   announcement the dispatcher would make (announcements_for: the units the Extractor recommends, on the first
   one's channel), rendered as it goes on the air (`Speaker.render`, the phrases joined), made a radio copy by
   ../shared/tools/radio_degrade.py at --snr (bench/dispatch_audio's flags), then segmented, recognised as the
   service hears (three hearings) and extracted (dispatch/from_audio.py): right when the place is the
   announcement's and the incident words heard name its type (the classifier's type is printed beside it).
2. Synthesis real-time factor: wall seconds of rendering per second of speech, over the phrases rendered in 1.
3. Incident -> key-up: an announcement submitted to a channel's announcement queue (hardware/announcements.py) with a
   real Transmitter on a file sink, until its line is keyed; cold (no phrase rendered before) and warm (its phrases
   rendered before, as the service's start-up phrases cover them), with the recogniser kept busy on both cores
   meanwhile (--load-threads threads each recognising the demo calls in a loop) as a stand-in for live channels.
   bench/load.py --announce measures it in the whole service with 24 channels talking.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.config import AsrConfig  # noqa: E402
from asr.engine import Engine  # noqa: E402
from bench.dispatch_audio import degrade  # noqa: E402
from bench.machine import describe  # noqa: E402
from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from dispatch.announce import Announcement, announcements_for  # noqa: E402
from dispatch.classify import incident_terms  # noqa: E402
from dispatch.extract import Extractor  # noqa: E402
from dispatch.from_audio import extract_file  # noqa: E402
from dispatch.gazetteer import Jurisdiction  # noqa: E402
from dispatch.speech import Speaker  # noqa: E402

JURISDICTION = REPO / "config" / "jurisdiction.yaml"
CALLS = shared_dir() / "demo" / "calls.tsv"
RADIO_DEGRADE = shared_dir() / "tools" / "radio_degrade.py"


@dataclass(slots=True, frozen=True)
class Case:
    place: str  # place id
    type: str
    channel: str
    text: str


TERM_TYPES = incident_terms()  # an incident word -> the type it names


@dataclass(slots=True, frozen=True)
class Heard:
    case: Case
    place: str | None
    type: str  # as the classifier typed it
    named: frozenset[str]  # the types the incident words heard name
    pinyin: str

    @property
    def right(self) -> bool:
        """Understood: the place, and words that say what happened. Not the classifier's type: it reads the command
        room's own 「…请注意，…请迅速赶往…」 as the command room talking (routine), which a guard hearing it does not."""
        return self.place == self.case.place and self.case.type in self.named


def demo_cases(jurisdiction: Jurisdiction, extractor: Extractor, calls: Path = CALLS) -> list[Case]:
    """One announcement per demo place: the first demo call naming it gives the incident type."""
    cases: dict[str, Case] = {}
    for row in csv.DictReader(calls.open(encoding="utf-8"), delimiter="\t"):
        if not row["place"] or row["incident"] == "none" or row["place"] in cases:
            continue
        place = jurisdiction.place(row["place"])
        responders = [r["id"] for r in extractor(row["text"])["responders"]]
        said = announcements_for(jurisdiction, responders, place.name, row["incident"])
        channel, text = next(iter(said.items()))
        cases[row["place"]] = Case(row["place"], row["incident"], channel, text)
    return list(cases.values())


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)


def hear(cases: Sequence[Case], speaker: Speaker, engines: Sequence[Engine], extractor: Extractor, snr: float,
         workdir: Path, seed: int = 0) -> list[Heard]:  # fmt: skip
    """Each case's announcement rendered, over a radio at `snr`, recognised and extracted."""
    clean = workdir / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    for i, case in enumerate(cases):
        write_wav(clean / f"{i:03d}.wav", speaker.render(case.text))
    radio = degrade(sorted(clean.glob("*.wav")), snr, workdir / f"snr{snr:g}", RADIO_DEGRADE, seed)
    out = []
    for case, path in zip(cases, radio, strict=True):
        heard = list(extract_file(path, engines, extractor))
        place = next((h.result["place"]["id"] for h in heard if h.result["place"]), None)
        kind = next((h.result["incident"]["type"] for h in heard if h.result["incident"]["type"] != "none"), "none")
        named = frozenset(TERM_TYPES[t] for h in heard for t in h.result["incident"]["terms"] if t in TERM_TYPES)
        out.append(Heard(case, place, kind, named, " | ".join(h.transcript.pinyin for h in heard)))
    return out


async def key_up_latency(speaker: Speaker, text: str, workdir: Path) -> float:
    """Seconds from an announcement submitted to its channel's queue until the channel's line is keyed."""
    from bridge.sinks import open_sink
    from hardware.announcements import ChannelAnnouncements
    from hardware.config import FileSinkConfig, SimulatedLineConfig, TransmitConfig
    from hardware.lines import make_line
    from hardware.transmit import Transmitter

    config = TransmitConfig(output=FileSinkConfig(type="file", directory=workdir, realtime=False), clear_ms=0)
    line = make_line("bench", SimulatedLineConfig(type="simulated"))
    await line.open()
    transmitter = Transmitter("bench", line, open_sink("bench", config.output), config)
    await transmitter.start()
    channel = ChannelAnnouncements(transmitter, speaker)
    player = asyncio.create_task(channel.run())
    t0 = time.perf_counter()
    channel.submit(Announcement("bench", "INC-BENCH", text))
    while not line.keyed:
        await asyncio.sleep(0.005)
    latency = time.perf_counter() - t0
    while channel.transmissions == 0 and not channel.dropped:
        await asyncio.sleep(0.05)
    player.cancel()
    await transmitter.close()
    await line.close()
    return latency


class BusyRecogniser:
    """Threads recognising the demo calls in a loop until stopped: the cores kept as busy as live channels keep them."""

    def __init__(self, engine: Engine, files: Sequence[Path], threads: int) -> None:
        from bridge.decode import decode_file

        self._pcm = [decode_file(f) for f in files]
        self._engine = engine
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> BusyRecogniser:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pcm in self._pcm:
                stream = self._engine.start_stream()
                for i in range(0, len(pcm), 640):
                    stream.feed(pcm[i : i + 640])
                    if self._stop.is_set():
                        return
                stream.finish()


def intelligibility(cases: Sequence[Case], speaker: Speaker, engine: Engine, extractor: Extractor,
                    args: argparse.Namespace) -> None:  # fmt: skip
    print(f"voice {speaker.name}; {len(cases)} demo places at {args.snr:g} dB")
    with tempfile.TemporaryDirectory() as tmp:
        heard = hear(cases, speaker, [engine], extractor, args.snr, Path(tmp), args.seed)
    for h in heard:
        mark = "ok " if h.right else "BAD"
        words = ",".join(sorted(h.named)) or "-"
        print(f"  {mark} {h.case.place:24} {h.case.type:10} heard {h.place or '-':24} {words:18} (typed {h.type:10}) "
              f"{h.case.text}")  # fmt: skip
    right = sum(h.right for h in heard)
    typed = sum((h.place, h.type) == (h.case.place, h.case.type) for h in heard)
    print(f"intelligibility at {args.snr:g} dB: {right}/{len(heard)} places heard with the right place and the words "
          f"of the right type ({typed} also typed so by the classifier)")  # fmt: skip
    print(f"synthesis: {speaker.rendered} phrases, {speaker.speech_s:.1f} s of speech in {speaker.render_s:.1f} s: "
          f"real-time factor {speaker.render_s / speaker.speech_s:.2f}")  # fmt: skip
    speaker.close()


def main(argv: Sequence[str] | None = None) -> int:
    from asr.models import TTS, locate
    from asr.sherpa_engine import SherpaEngine
    from dispatch.announce import fixed_phrases
    from dispatch.gazetteer import load_jurisdiction
    from dispatch.speech import DEFAULT_VOICE, KokoroVoice, phrases
    from dispatch.vocabulary import spotter_keywords
    from tests.conftest import CALLS_AUDIO, SHERPA_MODEL

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--snr", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, help="only the first N demo places")
    ap.add_argument("--voice", default=DEFAULT_VOICE)
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--load-threads", type=int, default=2)
    ap.add_argument("--latency-only", action="store_true", help="skip 1 and 2 (intelligibility, synthesis speed)")
    args = ap.parse_args(argv)
    print(f"machine: {describe()}")
    model = locate(TTS)
    if not model.found:
        print(model.message(), file=sys.stderr)
        return 1
    print(f"voice model: {model.path} ({model.source})")
    jurisdiction = load_jurisdiction(JURISDICTION)
    extractor = Extractor(jurisdiction)
    # heard as the service hears: as spoken and at its alternative speeds (asr.alternative_speeds)
    engine = SherpaEngine(SHERPA_MODEL, spotter_keywords(JURISDICTION), alternative_speeds=AsrConfig().alternative_speeds,
                          noise_floor=AsrConfig().noise_floor)
    cases = demo_cases(jurisdiction, extractor)[: args.limit]
    if not args.latency_only:
        intelligibility(cases, Speaker(KokoroVoice(model.path, args.voice)), engine, extractor, args)

    text = cases[0].text
    fixed = set(fixed_phrases(jurisdiction, [cases[0].channel]))
    for label, warm in (("cold", False), ("warm", True)) if args.latency_runs else ():
        latencies = []
        for run in range(args.latency_runs):
            fresh = Speaker(KokoroVoice(model.path, args.voice))
            if warm:  # what the service renders at start-up covers every phrase of it (no detail of the place)
                assert all(phrase in fixed for phrase, _ in phrases(text))
                fresh.render(text)
            files = sorted(CALLS_AUDIO.glob("*.wav"))[run::3]
            with BusyRecogniser(engine, files, args.load_threads), tempfile.TemporaryDirectory() as tmp:
                time.sleep(1.0)  # the recognisers running
                latencies.append(asyncio.run(key_up_latency(fresh, text, Path(tmp))))
            fresh.close()
        print(f"incident -> key-up, {label} ({args.load_threads} recogniser threads busy): "
              f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s over {len(latencies)} runs")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
