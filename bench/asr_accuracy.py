"""ASR accuracy: pinyin syllable error rate (with and without tones) of the sherpa-onnx engine on ../shared/audio
and on the spoken calls, clean and through ../shared/tools/radio_degrade.py at SNR 20/10/5 dB; keyword recall and
false alarms for the jurisdiction's places on the calls, with default and with length-tuned boosts/thresholds;
Vosk character error rate when a Mandarin Vosk model is installed.

    .venv/bin/python bench/asr_accuracy.py [--snr 20 10 5]

Degraded audio is generated into a temporary directory (voice band, pink noise at the SNR, key-up click, 0.25 s
squelch tail, 0.4 s lead and trail; seed = call number, so runs compare).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine import describe  # noqa: E402  # a sibling script: bench/ is on sys.path when one is run
from rapidfuzz.distance import Levenshtein  # noqa: E402

from asr.config import AsrConfig  # noqa: E402
from asr.keywords import KeywordEntry, jurisdiction_keywords, refs_in_text  # noqa: E402
from asr.models import VOSK, locate  # noqa: E402
from asr.pinyin import syllable_errors, text_to_syllables  # noqa: E402
from asr.sherpa_engine import SherpaEngine  # noqa: E402
from asr.transcript import Transcript  # noqa: E402
from bridge.decode import decode_file  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from dispatch.classify import incident_terms  # noqa: E402

SHARED = shared_dir()
MODEL = SHARED / "models" / "sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile"
DEGRADE = SHARED / "tools" / "radio_degrade.py"

Item = tuple[str, Path]  # (reference text, audio file)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def transcribe(engine: SherpaEngine | object, path: Path) -> Transcript:
    stream = engine.start_stream()  # type: ignore[attr-defined]
    stream.feed(decode_file(path))
    return stream.finish()


def degrade(items: list[Item], snr: int, out_dir: Path) -> list[Item]:
    degraded = []
    for n, (text, src) in enumerate(items):
        dst = out_dir / f"{src.stem}_{snr}dB.wav"
        subprocess.run([sys.executable, str(DEGRADE), str(src), str(dst), "--snr", str(snr), "--click",
                        "--squelch-tail", "0.25", "--lead", "0.4", "--trail", "0.4", "--seed", str(n)], check=True)
        degraded.append((text, dst))
    return degraded


def syllable_error_line(name: str, results: list[tuple[str, Transcript]]) -> str:
    total = toned = toneless = 0
    for text, transcript in results:
        reference, hypothesis = text_to_syllables(text), transcript.pinyin.split()
        total += len(reference)
        toned += syllable_errors(reference, hypothesis)
        toneless += syllable_errors(reference, hypothesis, tones=False)
    return f"  {name:<22} {len(results):>3} utts {total:>4} syl  SER {toned / total:6.1%} toned {toneless / total:6.1%} toneless"


def keyword_line(name: str, results: list[tuple[str, Transcript]], entries: list[KeywordEntry]) -> str:
    """Recall and false alarms (spotted but not named in the reference text), places and incident terms apart."""
    counts = {"place": [0, 0, 0], "incident": [0, 0, 0]}  # found, expected, false alarms
    for text, transcript in results:
        truth = refs_in_text(text, entries)
        spotted = {k.ref for k in transcript.keywords}
        for kind, refs in (("place", lambda r: not r.startswith("incident:")), ("incident", lambda r: r.startswith("incident:"))):
            t, s = {r for r in truth if refs(r)}, {r for r in spotted if refs(r)}
            counts[kind] = [counts[kind][0] + len(s & t), counts[kind][1] + len(t), counts[kind][2] + len(s - t)]
    parts = []
    for kind, (found, expected, false_alarms) in counts.items():
        if expected or false_alarms:
            recall = f"{found}/{expected} = {found / expected:5.1%}" if expected else "-"
            parts.append(f"{kind} recall {recall:<16} false alarms {false_alarms:>2}")
    return f"  {name:<22} " + "   ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr", type=int, nargs="*", default=[20, 10, 5])
    args = parser.parse_args()
    jurisdiction = SHARED / "demo" / "jurisdiction.yaml"
    shared = [(r["text"], SHARED / "audio" / r["file"]) for r in read_tsv(SHARED / "audio" / "manifest.tsv")]
    calls = [(r["text"], SHARED / "audio" / "calls" / f"{r['id']}.wav") for r in read_tsv(SHARED / "demo" / "calls.tsv")]
    terms = incident_terms()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"shared audio (real)": shared, "calls clean": calls}
        sets |= {f"calls {snr} dB": degrade(calls, snr, Path(tmp)) for snr in args.snr}
        print(f"sherpa-onnx pinyin recogniser ({MODEL.name})")
        bare = SherpaEngine(MODEL)
        for name, items in sets.items():
            print(syllable_error_line(name, [(text, transcribe(bare, path)) for text, path in items]))
        places = jurisdiction_keywords(jurisdiction, {}, tune=False)
        print(f"keyword spotting: {len(places)} place names and aliases of {jurisdiction.name}; incident terms from "
              "the dispatch lexicon")
        for label, entries in (
            ("default boost/threshold", places),
            ("tuned by length", jurisdiction_keywords(jurisdiction, {}, tune=True)),
            (f"tuned + {len(terms)} incident terms", jurisdiction_keywords(jurisdiction, terms, tune=True)),
        ):
            print(f" {label}")
            engine = SherpaEngine(MODEL, entries)
            for name, items in sets.items():
                print(keyword_line(name, [(text, transcribe(engine, path)) for text, path in items], entries))
    vosk_cer(shared)
    return 0


def vosk_cer(shared: list[Item]) -> None:
    location = locate(VOSK, AsrConfig().vosk_model)
    if location.path is None:
        print("Vosk: no Mandarin Vosk model installed (vosk-model-small-cn-0.22); CER not measured")
        return
    from asr.vosk_engine import VoskEngine

    engine = VoskEngine(location.path)
    errors = total = 0
    for text, path in shared:
        reference = "".join(ch for ch in text if "\u4e00" <= ch <= "\u9fff")
        errors += Levenshtein.distance(reference, transcribe(engine, path).text)
        total += len(reference)
    print(f"Vosk ({location.path.name}) CER on shared audio: {errors / total:.1%} ({total} characters)")


if __name__ == "__main__":
    sys.exit(main())
