"""Test calls in many voices: sentences rendered by the Kokoro-82M Mandarin model (../shared/models/kokoro-zh-v1.0,
8 voices: zf_* female, zm_* male) as 16 kHz mono int16 WAV, then made radio copies of by radio_degrade.py (the
flags bench/dispatch_audio.py uses: key-up click, 0.3 s squelch tail, 1 s lead, 1.5 s trail; the tool's pink noise)
at each SNR, several noise realisations each.

Everything is cached under var/bench-audio/ (never committed): a rendering by (voice, hash of the text), a radio copy
by (SNR, seed, hash of the clean file's bytes), so a second run renders and degrades nothing. Only hashes name the
files: no sentence is written to disk beside its audio (the blind test sets' sentences stay in their TSV).

    .venv/bin/python bench/voices.py [--calls FILE | --text TEXT ...] [--voices NAME ...] [--seeds N] [--limit N]
                                     [--listen]

renders the given sentences (default: the demo calls' texts) in every voice, makes the radio copies, and prints the
synthesis real-time factor (seconds of synthesis per second of speech, this run's renderings only); --listen
transcribes the clean renderings back and prints each voice's syllable error (figures only).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import logging
import sys
import tempfile
import time
import wave
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.numbers import normalise_numbers  # noqa: E402
from bench.dispatch_audio import degrade  # noqa: E402
from bench.machine import describe  # noqa: E402
from bridge.audio import SAMPLE_RATE, SAMPLE_WIDTH, float_to_pcm  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402

KOKORO_DIR = shared_dir() / "models" / "kokoro-zh-v1.0"
RADIO_DEGRADE = shared_dir() / "tools" / "radio_degrade.py"
CACHE = REPO / "var" / "bench-audio"
CLEAN = "clean"
CONDITIONS: tuple[str | float, ...] = (CLEAN, 20, 10, 5)  # SNR in dB; clean: the rendering itself, no radio
PAD_S = 0.3  # digital silence each side of a rendering, as the spoken demo calls have (Kokoro trims its own)


def condition_name(condition: str | float) -> str:
    return CLEAN if condition == CLEAN else f"{float(condition):g} dB"


def text_key(text: str) -> str:
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


# Latin letters as Mandarin speakers name them over a radio (B口, A栋): misaki's Chinese G2P passes Latin text through
# unread, and Kokoro then says nothing (or an English vowel) for it
LETTERS = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", (
    "诶", "比", "西", "迪", "伊", "艾弗", "吉", "艾尺", "艾", "杰", "开", "艾勒", "艾姆", "恩", "欧", "批", "丘", "阿",
    "艾斯", "提", "优", "维", "达布溜", "艾克斯", "歪", "贼"), strict=True))


def spell_latin(text: str) -> str:
    return "".join(LETTERS.get(c.upper(), c) if c.isascii() and c.isalpha() else c for c in text)


def write_wav(path: Path, pcm: bytes) -> None:
    """16 kHz mono int16 WAV, written beside and renamed into place (an interrupted run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    with wave.open(str(part), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    part.replace(path)


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def mandarin_voices(voices_file: Path) -> list[str]:
    """The Mandarin voices in a Kokoro voices file: named z<f|m>_<name> (female zf_, male zm_), as in the official
    54-voice file too; sorted, female first."""
    with np.load(voices_file) as voices:
        return sorted(name for name in voices.files if name[:3] in ("zf_", "zm_"))


@dataclass
class SynthesisStats:
    """What this run rendered (cached renderings cost nothing and are not counted)."""

    rendered: int = 0
    cached: int = 0
    speech_s: float = 0.0  # seconds of speech rendered (without the padding)
    wall_s: float = 0.0  # seconds spent in text -> phonemes -> audio -> 16 kHz
    cpu_s: float = 0.0  # CPU seconds of this process over the same spans (both cores)
    per_voice: dict[str, float] = field(default_factory=dict)  # voice -> speech seconds rendered

    @property
    def rtf(self) -> float:
        """Wall seconds of synthesis per second of speech (nan when nothing was rendered)."""
        return self.wall_s / self.speech_s if self.speech_s else float("nan")

    def line(self) -> str:
        if not self.rendered:
            return f"synthesis: nothing rendered ({self.cached} renderings from the cache)"
        return (f"synthesis: {self.rendered} renderings, {self.speech_s:.1f} s of speech in {self.wall_s:.1f} s: "
                f"real-time factor {self.rtf:.2f} (CPU {self.cpu_s / self.speech_s:.2f} s per s); "
                f"{self.cached} from the cache")


class KokoroVoices:
    """Renders Mandarin sentences in the model's voices, cached on disk. The model is loaded on the first render that
    is not in the cache, so a run that finds everything cached never loads it."""

    def __init__(self, model_dir: Path = KOKORO_DIR, cache: Path = CACHE) -> None:
        self.model_dir = model_dir
        self.voices_file = model_dir / "voices-zh-v1.0.bin"
        if not self.voices_file.exists():
            raise FileNotFoundError(f"no Kokoro Mandarin model in {model_dir} (voices-zh-v1.0.bin missing)")
        self.voices = mandarin_voices(self.voices_file)
        self.cache = cache / model_dir.name
        self.stats = SynthesisStats()
        self._tts: Any = None
        self._g2p: Any = None

    def path(self, text: str, voice: str) -> Path:
        return self.cache / voice / f"{text_key(text)}.wav"

    def render(self, text: str, voice: str) -> Path:
        """The rendering of `text` in `voice` (16 kHz mono int16 WAV, PAD_S of silence each side)."""
        if voice not in self.voices:
            raise ValueError(f"unknown voice {voice!r}: {', '.join(self.voices)}")
        path = self.path(text, voice)
        if path.exists():
            self.stats.cached += 1
            return path
        self._load()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        pcm = self.synthesise(text, voice)
        self.stats.wall_s += time.perf_counter() - wall0
        self.stats.cpu_s += time.process_time() - cpu0
        seconds = len(pcm) / (SAMPLE_RATE * SAMPLE_WIDTH)
        self.stats.rendered += 1
        self.stats.speech_s += seconds
        self.stats.per_voice[voice] = self.stats.per_voice.get(voice, 0.0) + seconds
        pad = bytes(round(PAD_S * SAMPLE_RATE) * SAMPLE_WIDTH)
        write_wav(path, pad + pcm + pad)
        return path

    def synthesise(self, text: str, voice: str) -> bytes:
        """Text -> 16 kHz mono int16 PCM of the speech alone (no cache, no padding)."""
        import soxr

        self._load()
        # numbers as the radio says them (110 -> 幺幺零, 5楼 -> 五楼: what the transcripts are compared with), letters named
        phonemes, _ = self._g2p(spell_latin(normalise_numbers(text.strip())))
        samples, rate = self._tts.create(phonemes, voice=voice, is_phonemes=True, lang="z")
        samples = soxr.resample(np.asarray(samples, dtype=np.float32), rate, SAMPLE_RATE)
        ramp = np.linspace(0.0, 1.0, min(160, len(samples)), dtype=np.float32)  # 10 ms fades: no step at either end
        samples[: len(ramp)] *= ramp
        samples[len(samples) - len(ramp):] *= ramp[::-1]
        return float_to_pcm(samples)

    def _load(self) -> None:
        if self._tts is not None:
            return
        import jieba
        from kokoro_onnx import Kokoro
        from misaki import zh

        jieba.setLogLevel(logging.WARNING)
        # the legacy Chinese G2P (jieba + pypinyin): the one Kokoro v1.0 was trained with (misaki's 1.1 frontend is
        # for the Kokoro-82M-v1.1-zh model)
        self._g2p = zh.ZHG2P()
        self._tts = Kokoro(str(self.model_dir / "kokoro-v1.0.int8.onnx"), str(self.voices_file),
                           vocab_config=str(self.model_dir / "vocab.json"))


def radio_copies(clean: Sequence[Path], snr: float, seeds: Iterable[int], cache: Path = CACHE,
                 tool: Path = RADIO_DEGRADE) -> dict[Path, list[Path]]:
    """clean file -> its radio copies at `snr`, one per noise seed, made by radio_degrade.py (bench/dispatch_audio's
    flags) and cached by (SNR, seed, hash of the clean file's bytes): any voice's rendering or recorded call."""
    keys = {path: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for path in clean}
    copies: dict[Path, list[Path]] = {path: [] for path in clean}
    for seed in seeds:
        folder = cache / "radio" / f"snr{snr:g}-seed{seed}"
        missing = [path for path in clean if not (folder / f"{keys[path]}.wav").exists()]
        if missing:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix=".staging-") as tmp:
                staging = Path(tmp)  # degrade() names its outputs after its inputs: stage the inputs under their hash
                (staging / "in").mkdir()
                for path in missing:
                    (staging / "in" / f"{keys[path]}.wav").write_bytes(path.read_bytes())
                made = degrade([staging / "in" / f"{keys[p]}.wav" for p in missing], snr, staging / "out", tool, seed)
                for out in made:
                    out.replace(folder / out.name)
        for path in clean:
            copies[path].append(folder / f"{keys[path]}.wav")
    return copies


def read_sentences(calls_tsv: Path) -> list[str]:
    """The `text` column of a TSV (demo calls or a labelled set; '#' lines are comments)."""
    lines = [line for line in calls_tsv.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return [row["text"] for row in csv.DictReader(lines, delimiter="\t")]


def listen(renderings: dict[str, list[tuple[str, Path]]], model: Path) -> None:
    """Transcribe the renderings back with the on-board recogniser (no keywords: the pinyin alone) and print each
    voice's syllable error against the sentence's own pinyin, with and without tones (bench/asr_accuracy's measure)."""
    from asr.pinyin import syllable_errors, text_to_syllables
    from asr.sherpa_engine import SherpaEngine
    from bridge.decode import decode_file

    engine = SherpaEngine(model)
    print(f"\nheard back by the on-board recogniser ({model.name}), clean renderings:")
    print(f"  {'voice':12} {'sentences':>9} {'syllables':>9} {'toned SER':>10} {'toneless':>9}")
    for voice, items in renderings.items():
        total = toned = plain = 0
        for text, path in items:
            stream = engine.start_stream()
            stream.feed(decode_file(path))
            heard, said = stream.finish().pinyin.split(), text_to_syllables(text)
            total += len(said)
            toned += syllable_errors(said, heard)
            plain += syllable_errors(said, heard, tones=False)
        print(f"  {voice:12} {len(items):>9} {total:>9} {toned / max(total, 1):>10.1%} {plain / max(total, 1):>9.1%}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=Path, default=shared_dir() / "demo" / "calls.tsv", help="TSV with a text column")
    ap.add_argument("--text", nargs="+", help="sentences to render instead of --calls")
    ap.add_argument("--voices", nargs="+", help="default: all the model's Mandarin voices")
    ap.add_argument("--snr", type=float, nargs="*", default=[c for c in CONDITIONS if c != CLEAN])
    ap.add_argument("--seeds", type=int, default=3, help="noise realisations per SNR")
    ap.add_argument("--limit", type=int, help="only the first N sentences")
    ap.add_argument("--model", type=Path, default=KOKORO_DIR)
    ap.add_argument("--cache", type=Path, default=CACHE)
    ap.add_argument("--listen", action="store_true", help="transcribe the clean renderings back: syllable error per voice")
    args = ap.parse_args(argv)
    print(f"machine: {describe()}")
    if not (args.model / "voices-zh-v1.0.bin").exists():
        print(f"no Kokoro Mandarin model in {args.model}: nothing to render", file=sys.stderr)
        return 0
    sentences = args.text or read_sentences(args.calls)
    sentences = sentences[: args.limit] if args.limit else sentences
    tts = KokoroVoices(args.model, args.cache)
    voices = args.voices or tts.voices
    print(f"{len(sentences)} sentences x {len(voices)} voices ({', '.join(voices)}), cache {args.cache}")
    t0 = time.perf_counter()
    renderings = {voice: [(text, tts.render(text, voice)) for text in sentences] for voice in voices}
    clean = [path for items in renderings.values() for _, path in items]
    print(tts.stats.line())
    for voice, seconds in tts.stats.per_voice.items():
        print(f"  {voice}: {seconds:.1f} s of speech rendered")
    for snr in args.snr:
        radio_copies(clean, snr, range(args.seeds), args.cache)
    if args.snr:
        print(f"radio copies at {', '.join(f'{s:g}' for s in args.snr)} dB x {args.seeds} seeds")
    print(f"{time.perf_counter() - t0:.1f} s in all")
    if args.listen:
        from tests.conftest import SHERPA_MODEL

        listen(renderings, SHERPA_MODEL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
