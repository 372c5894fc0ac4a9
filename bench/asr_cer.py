"""Character error rate of what people read from the on-board engine: the 3.3M sherpa-onnx recogniser's toned pinyin
decoded into characters (asr/hanzi.py), on the 53 real recordings of ../shared/audio and the 30 spoken demo calls,
recognised through the project's own path (segmenter -> engine fed in 20 ms frames -> combine, as the live pool and
dispatch/from_audio.py do); the decoder's time per utterance; the recogniser's real-time factor on one thread.

    .venv/bin/python bench/asr_cer.py [--snr 20 10] [--speeds 0.9 1.1]

CER = character edits / reference characters (micro average), punctuation and spaces removed, NFKC, 幺 read as 一,
Arabic numbers in a reference read out as spoken (asr/numbers.py). Rows, to tell apart what limits the result:
  service     the decoder as the service runs it: jieba + the demo jurisdiction's places + the lexicon and radio
              phrases (dispatch/vocabulary.py), spotted keywords as hints, and the places the dispatcher's matcher
              found written as named (dispatch/classify.names_said; no channel's own places, as no channel here)
  no names    the same without the places found written in (the engine's characters)
  no hints    the same without the spotter's keywords either
  jieba only  no words handed in, no hints
  oracle      the decoder (service words) on the reference's own toned pinyin (pypinyin): its error when the
              recogniser is perfect, i.e. the decoder's share of the error
The decoder was developed on sentences written for it (the ORDINARY and RADIO lists below), never on these sets.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr_accuracy import degrade  # noqa: E402  # sibling scripts: bench/ is on sys.path when one is run
from machine import describe  # noqa: E402
from rapidfuzz.distance import Levenshtein  # noqa: E402

from asr.combine import combine  # noqa: E402
from asr.hanzi import HanziDecoder, base_index, reading  # noqa: E402
from asr.numbers import normalise_numbers  # noqa: E402
from asr.pinyin import syllable_errors, text_to_syllables  # noqa: E402
from asr.sherpa_engine import SherpaEngine, keyword_windows  # noqa: E402
from asr.transcript import Transcript  # noqa: E402
from bridge.config import VadConfig  # noqa: E402
from bridge.decode import decode_file, iter_frames  # noqa: E402
from bridge.segmenter import segment_pcm  # noqa: E402
from bridge.shared import shared_dir  # noqa: E402
from dispatch.classify import names_said  # noqa: E402
from dispatch.gazetteer import load_jurisdiction  # noqa: E402
from dispatch.location import PlaceIndex  # noqa: E402
from dispatch.vocabulary import decoder_words, spotter_keywords  # noqa: E402

SHARED = shared_dir()
MODEL = SHARED / "models" / "sherpa-onnx-kws-zipformer-wenetspeech-3.3M-2024-01-01-mobile"
JURISDICTION = SHARED / "demo" / "jurisdiction.yaml"
WHISPER_BASE = "Whisper base (faster-whisper int8, 1 thread) on the shared real speech: CER about 25 % at RTF 0.39"

# Sentences written for the decoder's development from general usage (not from the shared recordings or the calls):
# its text-only check, and the candidates' comparison.
ORDINARY = ["今天天气很好我们出去走走吧", "我们明天去北京开会", "请你把门关上", "这个问题我们已经讨论过了",
            "前面路口发生了交通事故", "他每天早上六点起床跑步", "超市里的水果比昨天便宜", "你吃过晚饭了吗",
            "这家饭店的菜味道不错", "孩子们在公园里放风筝", "我的手机没电了", "下午三点在会议室见面",
            "政府出台了新的住房政策", "经济增长速度有所放缓", "学校明天放假一天", "火车站的人特别多",
            "医院门口停满了车", "他把钱包忘在出租车上了", "这条路晚上没有路灯", "老人走路的时候要小心",
            "我们公司今年招了很多新人", "股市今天大幅下跌", "她正在准备期末考试", "电视上正在播放新闻",
            "请大家按顺序排队", "外面下着大雨记得带伞", "这本书我已经看完了", "周末我们一起去看电影吧",
            "银行的工作人员很热情", "工厂的工人已经下班了"]
RADIO = ["各单位注意", "收到请回答", "指挥中心收到", "请立即赶往现场", "巡逻队请注意安全",
         "东门岗亭发现可疑人员", "有人在商场门口打架", "请保安马上到三号楼", "现场已经控制住了",
         "一名老人在路边摔倒了", "停车场有一辆车被砸了", "请派一辆救护车过来", "嫌疑人往北边跑了",
         "警务室值班民警请回答", "小区里有人报警说家里被偷了", "收到马上过去", "请先期处置并保护好现场",
         "夜间巡逻一切正常", "学校门口有人闹事", "超市里有人偷东西被抓住了", "菜市场着火了请求支援",
         "请各岗位加强巡查", "有一个小孩走丢了穿红色衣服", "门卫报告有陌生车辆进入", "请社区民警到场处理",
         "交警已经到达事故现场", "请问你现在在什么位置", "我在大门口等你", "人员已经疏散完毕",
         "监控室请查看录像"]


def norm(text: str) -> str:
    text = normalise_numbers(unicodedata.normalize("NFKC", text))
    return re.sub(r"[^\u4e00-\u9fff0-9a-z]", "", text.lower()).replace("幺", "一")


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@dataclass
class Heard:
    source: str  # the file's prefix (aishell1, aishellsample, cNNN ...): sources differ a lot in difficulty
    reference: str
    transcripts: list[Transcript]  # one per utterance the segmenter found
    audio_s: float
    cpu_s: float  # recognition (recogniser, spotter and decoder), one thread


def recognise(engine: SherpaEngine, reference: str, path: Path, places: PlaceIndex) -> Heard:
    pcm = decode_file(path)
    out, cpu = [], 0.0
    for utterance in segment_pcm(pcm, VadConfig(), channel=path.stem):
        began = time.process_time()
        stream = engine.start_stream()
        for frame in iter_frames(utterance.pcm):
            stream.feed(frame.pcm)
        heard = combine([stream.finish()])
        cpu += time.process_time() - began
        out.append(engine.write_names(heard, names_said(heard, places)))  # as the service does (no channel's prior)
    return Heard(path.stem.split("_")[0], reference, out, len(pcm) / 32000, cpu)


def cer(pairs: list[tuple[str, str]]) -> tuple[float, int]:
    edits = sum(Levenshtein.distance(norm(ref), norm(hyp)) for ref, hyp in pairs)
    total = sum(len(norm(ref)) for ref, _ in pairs)
    return edits / total, total


def decoded(decoder: HanziDecoder, heard: Heard, hints: bool) -> str:
    return "".join(decoder.decode([w.text for w in t.words], keyword_windows(t.words, t.keywords) if hints else ())
                   for t in heard.transcripts)


def report(name: str, heard: list[Heard], service: HanziDecoder, plain: HanziDecoder) -> None:
    ser = [0, 0, 0]
    for h in heard:
        reference, hypothesis = text_to_syllables(h.reference), " ".join(t.pinyin for t in h.transcripts).split()
        ser = [ser[0] + len(reference), ser[1] + syllable_errors(reference, hypothesis),
               ser[2] + syllable_errors(reference, hypothesis, tones=False)]
    rows = {
        "service": [(h.reference, "".join(t.readable for t in h.transcripts)) for h in heard],
        "no names": [(h.reference, decoded(service, h, hints=True)) for h in heard],
        "no hints": [(h.reference, decoded(service, h, hints=False)) for h in heard],
        "jieba only": [(h.reference, decoded(plain, h, hints=False)) for h in heard],
        "oracle": [(h.reference, service.decode(text_to_syllables(h.reference))) for h in heard],
    }
    chars = cer(rows["service"])[1]
    print(f"  {name}: {len(heard)} recordings, {chars} characters; recogniser syllable error {ser[1] / ser[0]:.1%} toned, "
          f"{ser[2] / ser[0]:.1%} toneless")
    for row, pairs in rows.items():
        print(f"    CER {row:<11} {cer(pairs)[0]:6.1%}")
    sources = sorted({h.source for h in heard})
    if 1 < len(sources) < 10:
        by_source = [(src, [p for h, p in zip(heard, rows["service"], strict=True) if h.source == src]) for src in sources]
        print("    CER by source: " + ", ".join(f"{src} {cer(pairs)[0]:.1%} ({cer(pairs)[1]})" for src, pairs in by_source))
    times = []
    for h in heard:
        for t in h.transcripts:
            syllables, windows = [w.text for w in t.words], keyword_windows(t.words, t.keywords)
            began = time.perf_counter()
            service.decode(syllables, windows)
            times.append(((time.perf_counter() - began) * 1000, len(syllables)))
    per_syllable = sum(ms for ms, _ in times) / max(1, sum(n for _, n in times))
    print(f"    decoder: {statistics.mean(ms for ms, _ in times):.2f} ms mean, "
          f"{sorted(ms for ms, _ in times)[int(0.95 * (len(times) - 1))]:.2f} ms p95 per utterance "
          f"({statistics.mean(n for _, n in times):.0f} syllables on average; {per_syllable * 20:.2f} ms per 20 syllables)")
    cpu, audio = sum(h.cpu_s for h in heard), sum(h.audio_s for h in heard)
    print(f"    recogniser + spotter + decoder, 1 thread: CPU RTF {cpu / audio:.3f} ({audio:.0f} s of audio)")
    worst = sorted(rows["service"], key=lambda p: -Levenshtein.distance(norm(p[0]), norm(p[1])) / max(1, len(norm(p[0]))))
    for ref, hyp in worst[:3]:
        print(f"      worst: {ref} -> {hyp}")


def bare_rtf(paths: list[Path]) -> float:
    engine = SherpaEngine(MODEL, num_threads=1)
    cpu = audio = 0.0
    for path in paths:
        pcm = decode_file(path)
        began = time.process_time()
        stream = engine.start_stream()
        for frame in iter_frames(pcm):
            stream.feed(frame.pcm)
        stream.finish()
        cpu += time.process_time() - began
        audio += len(pcm) / 32000
    return cpu / audio


def text_check(service: HanziDecoder) -> None:
    """The decoder alone on exact toned pinyin of sentences written for it; the PyPI candidates beside it when they
    are installed (they read no tones)."""
    candidates: dict[str, object] = {"ours (service words)": lambda syl: service.decode(syl)}
    try:
        from Pinyin2Hanzi import DefaultDagParams, dag, simplify_pinyin

        params = DefaultDagParams()

        def pinyin2hanzi(syl: list[str]) -> str:
            found = dag(params, [simplify_pinyin(s[:-1]) for s in syl], path_num=1)
            return "".join(found[0].path) if found else ""

        candidates["Pinyin2Hanzi (DAG, toneless)"] = pinyin2hanzi
    except ImportError:
        print("  (Pinyin2Hanzi not installed: `pip install Pinyin2Hanzi` to compare)")
    print("  decoder on the exact toned pinyin of sentences written for it (30 ordinary, 30 radio):")
    for name, decode in candidates.items():
        parts = []
        for label, sentences in (("ordinary", ORDINARY), ("radio", RADIO)):
            began = time.perf_counter()
            pairs = [(s, decode(reading(s))) for s in sentences]  # type: ignore[operator]
            ms = (time.perf_counter() - began) * 1000 / len(sentences)
            parts.append(f"{label} CER {cer(pairs)[0]:5.1%} ({ms:.2f} ms)")
        print(f"    {name:<30} " + "  ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snr", type=int, nargs="*", default=[], help="also the calls through radio_degrade.py at these SNRs")
    parser.add_argument("--speeds", type=float, nargs="*", default=[],
                        help="also hear each utterance at these speeds, as the service does (asr.alternative_speeds: 0.9 "
                             "1.1): the places are found in every hearing, the characters are the main hearing's")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    keywords = spotter_keywords(JURISDICTION)
    words = [*(k.label for k in keywords), *decoder_words()]
    began = time.perf_counter()
    base_index()
    loaded = time.perf_counter() - began
    service = HanziDecoder(words)
    print(f"decoder: index loaded from its cache in {loaded:.2f} s, built with {len(set(words))} words handed in "
          f"(places, aliases, lexicon, radio phrases) in {time.perf_counter() - began - loaded:.2f} s more")
    plain = HanziDecoder()
    text_check(service)
    engine = SherpaEngine(MODEL, keywords, num_threads=1, hanzi=service, alternative_speeds=args.speeds)
    places = PlaceIndex(load_jurisdiction(JURISDICTION))
    shared = [(r["text"], SHARED / "audio" / r["file"]) for r in read_tsv(SHARED / "audio" / "manifest.tsv")]
    calls = [(r["text"], SHARED / "audio" / "calls" / f"{r['id']}.wav") for r in read_tsv(SHARED / "demo" / "calls.tsv")]
    print(f"recognised through segmenter -> sherpa-onnx ({MODEL.name}) -> decoder; {WHISPER_BASE}")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"53 real recordings (../shared/audio)": shared, "30 spoken calls, clean": calls}
        sets |= {f"30 calls, radio {snr} dB": degrade(calls, snr, Path(tmp)) for snr in args.snr}
        for name, items in sets.items():
            heard = [recognise(engine, text, path, places) for text, path in items]
            report(name, heard, service, plain)
    print(f"  recogniser alone (no spotter, no decoder), 1 thread, 53 real recordings: CPU RTF "
          f"{bare_rtf([p for _, p in shared]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
