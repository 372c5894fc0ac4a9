"""Calls told in two transmissions: what the running dispatcher makes of a report whose place and incident come in
separate transmissions on one channel (dispatch/turns.py), against the same report said in one.

    .venv/bin/python bench/split_calls.py [SET.tsv ...] [--forms text,pinyin]   (default: dev set R, blind turn set O)

Each line of a blind or development set (tests/dispatch/blind/, tests/dispatch/dev/) is handed to the real
DispatchService (real classifier, place matcher, ranking, SQLite store, a real mosquitto for its alerts) as final
transcripts, twice: whole, as one transmission, and cut at its first clause mark into two transmissions half a second
apart (the segmenter cuts a hesitant caller's transmission so too); lines with one clause are left out. A turn set
(`turns_*.tsv`: calls written as the transmissions they were spoken in, some answered by another speaker) is handed
over as spoken, and run on into one transmission. Each call is
heard on the channel its set names (the channel's own places are heard more readily), an hour after the one before,
so no call merges with another or is read with another's transmissions. For each report: did any incident holding its
utterances get the labelled place (reports that name one) and type (a guess queued for confirmation counts), and did
a phone get an alert; for the routine lines: incidents raised and phones alerted. Clean text, and the tone-numbered
pinyin the on-board engine gives.

Prints figures only, never a sentence (tests/dispatch/blind/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from asr.transcript import Transcript  # noqa: E402
from bench.dispatch_blind import pct, read_set, toned_pinyin  # noqa: E402
from bench.machine import describe  # noqa: E402
from bridge.bus import EventBus  # noqa: E402
from bridge.config import Config  # noqa: E402
from bridge.events import Utterance  # noqa: E402
from dispatch.dispatcher import DispatchService  # noqa: E402
from dispatch.incidents import Status  # noqa: E402
from tests.support.broker import Mosquitto  # noqa: E402

DEFAULT_SETS = (REPO / "tests" / "dispatch" / "dev" / "set_r.tsv", REPO / "tests" / "dispatch" / "blind" / "turns_o.tsv")
CLAUSE_MARK = re.compile(r"[，,。；;！!？?]")
SPLIT_GAP_S = 0.5
NOT_COUNTED = {Status.RETRACTED, Status.DISMISSED}


Call = tuple[dict[str, str], tuple[str, ...]]  # the call's labels (kind, channel, place, type), its transmissions


def halves(text: str) -> tuple[str, str] | None:
    """The line cut after its first clause mark, when both sides have words."""
    mark = CLAUSE_MARK.search(text)
    if mark is None:
        return None
    first, second = text[: mark.end()].strip(), text[mark.end():].strip()
    return (first, second) if CLAUSE_MARK.sub("", first) and CLAUSE_MARK.sub("", second) else None


def read_calls(path: Path) -> list[Call]:
    """A turn set's calls (its rows grouped by `call`, in `turn` order: tests/dispatch/blind/README.md), or each line
    of any other set of two clauses or more, cut in two by `halves`."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    if "turn" not in lines[0].split("\t"):
        return [(row, cut) for row in read_set(path) if (cut := halves(row["text"])) is not None]
    calls: dict[str, list[dict[str, str]]] = {}
    for row in csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE):
        calls.setdefault(row["call"], []).append(row)
    return [(rows[0], tuple(r["text"] for r in sorted(rows, key=lambda r: int(r["turn"])))) for rows in calls.values()]


def as_one(transmissions: tuple[str, ...]) -> str:
    """The call said in one transmission: its parts run on, a comma where one ended without a mark."""
    return "".join(t if CLAUSE_MARK.fullmatch(t[-1:]) else t + "，" for t in transmissions[:-1]) + transmissions[-1]


@dataclass
class Tally:
    reports: int = 0
    named: int = 0
    place_ok: int = 0
    type_ok: int = 0
    alerted: int = 0
    nothing: int = 0
    routine: int = 0
    false_incidents: int = 0
    false_alerts: int = 0

    def line(self, name: str) -> str:
        return (f"{name:28} {pct(self.place_ok, self.named)} {pct(self.type_ok, self.reports)} "
                f"{pct(self.alerted, self.reports)} {self.nothing:>8} | {self.false_incidents:>10} {self.false_alerts:>12}")


def transcript(text: str, form: str) -> Transcript:
    if form == "pinyin":
        return Transcript(text="", pinyin=toned_pinyin(text), engine="bench")
    return Transcript(text=text, pinyin="", engine="bench")


async def score(service: DispatchService, calls: list[Call], form: str, split: bool, hour: list[float]) -> Tally:
    dispatcher, tally = service.dispatcher, Tally()
    for row, transmissions in calls:
        parts = transmissions if split else (as_one(transmissions),)
        hour[0] += 3600.0  # a call of its own: nothing merges across calls
        channel, start, ids = row.get("channel") or "bench", hour[0], []
        for i, part in enumerate(parts):
            seconds = max(1.0, len(part) / 4.5)
            uid = f"call-{int(hour[0])}-{i}"
            await dispatcher.handle(transcript(part, form), Utterance(uid, channel, start, start + seconds, b""))
            ids.append(uid)
            start += seconds + SPLIT_GAP_S
        found = {i.id: i for uid in ids for i in dispatcher.store.with_utterance(uid) if i.status not in NOT_COUNTED}
        incidents = list(found.values())
        sent = any(dispatcher.store.ever_sent(i) for i in incidents)
        if row["kind"] == "routine":
            tally.routine += 1
            tally.false_incidents += bool(incidents)
            tally.false_alerts += sent
            continue
        tally.reports += 1
        tally.nothing += not incidents
        tally.alerted += sent
        tally.type_ok += any(i.type == row["type"] for i in incidents)
        if row["place"] != "-":
            tally.named += 1
            tally.place_ok += any(i.place_id == row["place"] for i in incidents)
    return tally


async def main_async(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)  # each place-less incident says so: figures only here
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory(prefix="split-calls-") as tmp:
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        try:
            config = Config.model_validate({
                "jurisdiction": REPO / "config" / "jurisdiction.yaml",
                "channels": [{"id": "bench", "name": "bench", "source": {"type": "pipe"}}],
                "storage": {"data_dir": Path(tmp) / "data"},
                "broker": broker.service_config(),
                "dispatch": {"alerts": {"ack_timeout_s": 86400, "announce": False, "confirm_timeout_s": 86400}},
            })  # fmt: skip
            service = DispatchService(config, bus=EventBus())
            task = asyncio.create_task(service.run())
            hour = [time.time() + 86400.0]
            for path in args.sets:
                calls = read_calls(path)
                reports = sum(row["kind"] == "report" for row, _ in calls)
                print(f"\n{path.name}: {reports} reports and {len(calls) - reports} routine calls of two transmissions "
                      f"or more ({sum(map(len, (t for _, t in calls)))} in all)")
                print(f"{'form, transmissions':28} {'place':>7} {'type':>7} {'alerted':>7} {'nothing':>8} | "
                      f"{'false inc.':>10} {'false alerts':>12}")
                for form in args.forms.split(","):
                    for split in (False, True):
                        tally = await score(service, calls, form, split, hour)
                        print(tally.line(f"{form}, {'as spoken' if split else 'as one'}"))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            broker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", type=Path, default=list(DEFAULT_SETS))
    parser.add_argument("--forms", default="text,pinyin", help="text, pinyin or both (comma-separated)")
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
