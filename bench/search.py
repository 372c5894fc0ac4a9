"""Transcript search on a large archive: build time and query latency.

Fills a temporary database with N synthetic radio transcripts (default 1,000,000) spread over a year on the demo
jurisdiction's 6 channels: sentences made from its place names, responders and the dispatcher's incident words, one
in five pinyin-only (what the on-board keyword engine gives), one in fifty linked to an incident. Then indexes them
(bridge.web.search.SearchIndex.sync, exactly what the service runs) and times first pages (50 results) of queries:

    2-char        打架, 着火, 小偷 ...            a 2-character term (FTS5's trigram tokenizer would miss these)
    3+-char       高桥大市场, 电动车被偷 ...       place names and phrases
    pinyin        "da jia", "zhao huo" ...         typed pinyin, matched in pinyin space
    filtered      a term + channel + a 7-day window, or + incident type, or filters only
    deep page     a frequent term at offset 1000

    .venv/bin/python bench/search.py [--transcripts 1000000] [--queries 40] [--keep DB] [--postgres]

--postgres searches the same transcripts on PostgreSQL (bridge.web.search_pg): a private cluster made as the tests
make it (tests/support/postgres.py: default settings but no fsync), the transcripts copied into it, indexed there;
the incident filters are left out (incidents are not on PostgreSQL yet).

Goal: p95 < 50 ms per query.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from machine import cpu_model  # a sibling script: bench/ is on sys.path when one is run
from pypinyin.contrib.tone_convert import to_tone3
from pypinyin.pinyin_dict import pinyin_dict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bridge.db import connect, connect_postgres
from bridge.web.search import Filters, SearchIndex, TranscriptSearch
from bridge.web.search_pg import PostgresSearchIndex
from dispatch.classify import incident_terms
from dispatch.gazetteer import load_jurisdiction

REPO = Path(__file__).resolve().parent.parent
YEAR_MS = 365 * 86400 * 1000
START_MS = 1_700_000_000_000
console = Console(stderr=True)

TEMPLATES = [
    "{place}{where}有人{incident}，请{responder}马上过去",
    "{place}{where}{incident}了，需要支援",
    "收到，{responder}正在赶往{place}",
    "{responder}已到{place}{where}，现场{incident}，正在处理",
    "指挥中心，{place}{where}一切正常",
    "{place}{where}发现{incident}，请派人过来看看",
    "报告，{place}有群众反映{incident}",
    "{responder}收到请回答，{place}{where}的情况怎么样",
    "明白，{place}{where}我们马上过去",
    "{place}巡逻结束，没有发现异常",
]
WHERE = ["门口", "东门", "西门", "南门", "北门", "停车场", "里面", "二楼", "后面", "旁边", "路口", ""]
CHATTER = ["收到", "明白", "请重复一遍", "信号不好，听不清", "好的，马上到", "收到收到，正在处理", "请讲"]


@cache
def char_tone3(ch: str) -> str | None:
    readings = pinyin_dict.get(ord(ch))
    return to_tone3(readings.split(",")[0], neutral_tone_with_five=True).replace("ü", "v") if readings else None


def engine_pinyin(text: str) -> str:
    """What the on-board engine would give for `text`: tone-numbered syllables (each character's usual reading)."""
    return " ".join(s for s in map(char_tone3, text) if s)


class Generator:
    def __init__(self, seed: int = 7) -> None:
        jurisdiction = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
        self.places = [n for p in jurisdiction.places for n in (p.name, *p.aliases)]
        self.responders = [r.name for r in jurisdiction.responders] + ["保安", "巡逻队", "警长", "值班民警"]
        self.responder_ids = [r.id for r in jurisdiction.responders]
        self.channels = [c.id for c in jurisdiction.channels]
        self.incidents = list(incident_terms().items())
        self.rng = random.Random(seed)

    def sentence(self) -> tuple[str, str | None]:
        """(text, incident type it reports or None)."""
        rng = self.rng
        if rng.random() < 0.15:
            return rng.choice(CHATTER), None
        term, type_ = rng.choice(self.incidents)
        template = rng.choice(TEMPLATES)
        text = template.format(place=rng.choice(self.places), where=rng.choice(WHERE), incident=term,
                               responder=rng.choice(self.responders))  # fmt: skip
        return text, type_ if "{incident}" in template else None


def fill(conn: sqlite3.Connection, count: int, progress: Callable[[int], None]) -> None:
    gen, rng = Generator(), random.Random(11)
    step_ms = YEAR_MS // count
    batch: list[tuple] = []
    incidents: list[tuple] = []
    for n in range(count):
        text, type_ = gen.sentence()
        start_ms = START_MS + n * step_ms + rng.randrange(step_ms)
        uid = f"u{n:08d}"
        if rng.random() < 0.2:  # the on-board engine: pinyin and keywords, characters decoded from the pinyin
            row = (uid, rng.choice(gen.channels), start_ms, "sherpa-kws", "", engine_pinyin(text), "[]", "[]", 0.7, 0.0, text)
        else:
            row = (uid, rng.choice(gen.channels), start_ms, "vosk", text, "", "[]", "[]", 0.85, 0.0, text)
        batch.append(row)
        if type_ and rng.random() < 0.1:
            at = start_ms / 1000 + 2
            incidents.append((f"INC-{n:08d}", type_, "high", "resolved", at, at, json.dumps([uid]),
                              json.dumps(rng.sample(gen.responder_ids, 2))))  # fmt: skip
        if len(batch) == 10_000 or n == count - 1:
            with conn:
                conn.executemany("INSERT INTO transcripts (utterance_id, channel, start_ms, engine, text, pinyin, words,"
                                 " keywords, conf, created_at, readable) VALUES (?,?,?,?,?,?,?,?,?,?,?)", batch)
                conn.executemany(
                    "INSERT INTO incidents (id, type, priority, status, created_at, updated_at, utterance_ids, assigned)"
                    " VALUES (?,?,?,?,?,?,?,?)",
                    incidents,
                )
            progress(len(batch))
            batch, incidents = [], []


def query_set(gen: Generator) -> dict[str, list[tuple[str, Filters, int]]]:
    """Per kind, (query, filters, offset) cases."""
    week = 7 * 86400 * 1000
    windows = [START_MS + k * YEAR_MS // 10 for k in range(10)]
    two = ["打架", "着火", "小偷", "冒烟", "吵架", "晕倒", "报警", "被偷", "斗殴", "受伤"]
    longer = ["高桥大市场", "请派人过来", "西光中学", "东郊农贸市场", "打架斗殴", "皮具饰品城", "有人晕倒", "长乐坊菜市场"]
    pinyin = ["da jia", "jiu hu che", "xiao tou", "mao yan", "gao qiao", "dian dong che", "dajia", "yun dao"]
    return {
        "2-char": [(q, Filters(), 0) for q in two],
        "3+-char": [(q, Filters(), 0) for q in longer],
        "pinyin": [(q, Filters(), 0) for q in pinyin],
        "filtered": [
            (q, Filters(channel=gen.channels[i % 6], since_ms=w, until_ms=w + week), 0)
            for i, (q, w) in enumerate(zip(two, windows, strict=True))
        ]
        + [(q, Filters(incident_type=t), 0) for q, t in (("打架", "fight"), ("市场", "theft"), ("", "fire"), ("", "medical"))]
        + [("", Filters(channel="ch-market", since_ms=windows[3], until_ms=windows[3] + week), 0)],
        "deep page": [(q, Filters(), 1000) for q in ("收到", "打架", "门口")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transcripts", type=int, default=1_000_000, help="how many transcripts to fill (default 1,000,000)")
    parser.add_argument("--queries", type=int, default=40, help="timed runs per kind (cycling through its cases)")
    parser.add_argument("--keep", type=Path, help="build the database here and keep it (default: a temp dir)")
    parser.add_argument("--postgres", action="store_true", help="search on PostgreSQL (a private cluster) instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="jingbao-search-") as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        conn = connect(path)
        conn.execute("PRAGMA synchronous=NORMAL")  # the bench measures the index, not fsync
        index = SearchIndex(conn)  # creates transcripts, incidents, and the search tables with their triggers
        with _progress() as bar:
            task = bar.add_task("fill transcripts", total=args.transcripts)
            t0 = time.perf_counter()
            fill(conn, args.transcripts, lambda n: bar.advance(task, n))
            fill_s = time.perf_counter() - t0
        if args.postgres:
            on_postgres(conn, args.transcripts, args.queries)
            return
        with _progress() as bar:
            task = bar.add_task("index", total=args.transcripts)
            t0 = time.perf_counter()
            index.sync(lambda n: bar.advance(task, n))
            index_s = time.perf_counter() - t0
        size_mb = os.path.getsize(path) / 1e6
        report(index, args.queries, fill_s, index_s, size_mb, args.transcripts)


def on_postgres(filled: sqlite3.Connection, count: int, runs: int) -> None:
    sys.path.insert(0, str(REPO))  # the tests' private cluster: tests/ is not an installed package
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster()
    cluster.start()
    try:
        conn = connect_postgres(cluster.url(cluster.create_database()))
        index = PostgresSearchIndex(conn)
        columns = [r[1] for r in filled.execute("PRAGMA table_info(transcripts)")]
        with _progress() as bar:
            task = bar.add_task("copy to PostgreSQL", total=count)
            t0 = time.perf_counter()
            with conn.cursor().copy(f"COPY transcripts ({', '.join(columns)}) FROM STDIN") as copy:
                for row in filled.execute("SELECT * FROM transcripts"):
                    copy.write_row(tuple(row))
                    bar.advance(task)
            copy_s = time.perf_counter() - t0
            task = bar.add_task("index", total=count)
            t0 = time.perf_counter()
            index.sync(lambda n: bar.advance(task, n))
            index_s = time.perf_counter() - t0
        conn.execute("VACUUM ANALYZE")  # the planner's statistics after a bulk load, as autovacuum soon makes them
        size_mb = conn.execute("SELECT pg_database_size(current_database()) AS size").fetchone()["size"] / 1e6
        report(index, runs, copy_s, index_s, size_mb, count, incidents=False)
        conn.close()
    finally:
        cluster.stop()


def report(
    index: TranscriptSearch, runs: int, fill_s: float, index_s: float, size_mb: float, count: int, *, incidents: bool = True
) -> None:
    cases = query_set(Generator())
    if not incidents:
        cases = {kind: [c for c in kind_cases if c[1].incident_type is None] for kind, kind_cases in cases.items()}
    engine = "SQLite" if isinstance(index, SearchIndex) else "PostgreSQL"
    table = Table(title=f"search over {count:,} transcripts on {engine} (first page of 50; {runs} runs per kind)")
    for column in ("kind", "p50 ms", "p95 ms", "max ms", "results/page (mean)"):
        table.add_column(column, justify="right" if column != "kind" else "left")
    for kind, kind_cases in cases.items():
        for q, filters, offset in kind_cases:  # warm the page cache once, as a running service would be
            index.search(q, filters, offset=offset)
        times, hits = [], []
        for i in range(runs):
            q, filters, offset = kind_cases[i % len(kind_cases)]
            t0 = time.perf_counter()
            page = index.search(q, filters, offset=offset)
            times.append((time.perf_counter() - t0) * 1000)
            hits.append(len(page.results))
        times.sort()
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        table.add_row(kind, f"{statistics.median(times):.1f}", f"{p95:.1f}", f"{times[-1]:.1f}", f"{statistics.mean(hits):.0f}")
    console.print(table)
    console.print(
        f"build: {'fill' if incidents else 'copy'} {fill_s:.1f} s, index {index_s:.1f} s ({count / index_s:,.0f} transcripts/s);"
        f" database {size_mb:,.0f} MB;"
        f" {cpu_model()}, {os.cpu_count()} CPUs"
    )


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console)


if __name__ == "__main__":
    main()
