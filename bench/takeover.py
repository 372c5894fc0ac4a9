"""A central pair taking over (issue 13; bridge/central_lease.py, docs/deployment.md "A central pair"): two
`jingbao run --role central` processes on one private PostgreSQL (durable) and one mosquitto, set up as
bench/cluster.py sets central up (a region of S stations, each a copy of the demo jurisdiction; alerts on the same
broker).

    bench/takeover.py [--stations S] [--rounds R] [--every I] [--settle T]

The bench publishes, as the stations' edges forward them, a fight report every I seconds (a transcript message, QoS 1,
each station in turn) from the start to the end. The first central runs, the second stands by; every T seconds the
one running is killed with SIGKILL, the other takes over, and the killed one is started again to stand by: R
takeovers. A subscriber stamps every alert and incident state central sends; a report is answered by the first
alert or incident state naming its utterance (one that merges into an open incident at the same place, as a backlog
delivered at once does, is answered by that incident's update). Reported:
- per takeover: kill -> the standby logs that it holds the lease, -> its link to the stations' broker is up, -> the
  first message it sends; and the reports published in the gap, with their report -> answer times;
- over all reports: report -> answer p50 / p95 / max, with and without the gaps; reports never answered (must be 0);
  reports dispatched more than once (central's record and its incidents, read at the end: a report held twice by
  the incidents, or recorded but in none); a responder alerted twice about one report by two outbox messages (a
  repeat of one message counts once: a phone drops it);
- the machine and its load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.cluster import central_config, start, stop, until_logged, write_config  # noqa: E402
from bench.loadgen import percentile  # noqa: E402
from bench.machine import describe  # noqa: E402
from tests.support.broker import Mosquitto, free_port  # noqa: E402
from tests.support.central import transcript_message  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

LOGS = REPO / "var" / "bench-takeover"  # the centrals' logs of the last run, one per start
REPORT = "美食街有人打架"  # a place of the demo jurisdiction, every station's copy of it


@dataclass
class Takeover:
    killed_at: float
    leased_at: float | None = None
    linked_at: float | None = None
    first_alert_at: float | None = None


@dataclass
class Run:
    published: dict[str, float] = field(default_factory=dict)  # central utterance id -> when published
    held: dict[str, int] = field(default_factory=dict)  # central utterance id -> how often central's incidents hold it
    recorded: dict[str, str] = field(default_factory=dict)  # central utterance id -> central's record of it
    answered: dict[str, float] = field(default_factory=dict)  # central utterance id -> its first alert or incident state
    # central utterance id -> (when, the responder alerted, the outbox message's id), each alert as it came
    alerts: dict[str, list[tuple[float, str, int]]] = field(default_factory=lambda: defaultdict(list))
    takeovers: list[Takeover] = field(default_factory=list)


async def publish_reports(broker: Mosquitto, stations: list[str], every_s: float, run: Run, done: asyncio.Task[None]) -> None:
    """A report every `every_s` until `done` (the takeovers) is."""
    import aiomqtt

    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-edges",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:  # fmt: skip
        n = 0
        while not done.done():
            station = stations[n % len(stations)]
            topic, payload = transcript_message(station, REPORT, entry=n + 1, heard_ago=0.0)
            run.published[f"{station}.{json.loads(payload)['utterance_id']}"] = time.time()
            await client.publish(topic, payload, qos=1)
            n += 1
            await asyncio.sleep(every_s)


async def listen(broker: Mosquitto, run: Run, ready: asyncio.Event) -> None:
    import aiomqtt

    from dispatch.topics import Topics

    topics = Topics()
    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-phones") as client:
        await client.subscribe(f"{topics.prefix}/alerts/#", qos=1)
        await client.subscribe(f"{topics.prefix}/incidents/#", qos=1)
        ready.set()
        async for m in client.messages:
            now, body = time.time(), json.loads(m.payload)  # type: ignore[arg-type]
            if str(m.topic).startswith(f"{topics.prefix}/alerts/"):
                responder = str(m.topic).rsplit("/", 1)[-1]
                run.alerts[body.get("utterance_id", "")].append((now, responder, body.get("outbox_id", -1)))
                named = [body.get("utterance_id", "")]
            else:
                named = body.get("utterance_ids", [])
            for uid in named:
                run.answered.setdefault(uid, now)


async def takeovers(tmp: Path, broker: Mosquitto, url: str, stations: list[str], opts: argparse.Namespace,
                    run: Run, paired: asyncio.Event) -> None:  # fmt: skip
    """The pair: `paired` set once one central runs and the other stands by; then `opts.rounds` takeovers."""
    first = central_config(tmp, broker, url, stations)
    second = write_config(tmp / "central-b.yaml", {**yaml.safe_load(first.read_text(encoding="utf-8")),
                          "storage": {"data_dir": str(tmp / "central-b"), "database_url": url},
                          "web": {"port": free_port()}})  # fmt: skip
    configs = {"a": first, "b": second}
    starts = iter(range(1, 1000))
    logs = {name: tmp / f"central-{name}-{next(starts)}.log" for name in configs}  # a log per start
    procs = {"a": start("central", configs["a"], logs["a"])}
    await until_logged(procs["a"], logs["a"], "node link connected")
    procs["b"] = start("central", configs["b"], logs["b"])
    await until_logged(procs["b"], logs["b"], "standing by")
    paired.set()
    active, standby = "a", "b"
    try:
        for _ in range(opts.rounds):
            await asyncio.sleep(opts.settle)
            takeover = Takeover(time.time())
            procs[active].send_signal(signal.SIGKILL)
            procs[active].wait()
            run.takeovers.append(takeover)
            log = logs[standby]
            seen = log.read_text(errors="replace").count("node link connected")
            while takeover.linked_at is None:  # (each start() begins its log afresh)
                text = log.read_text(errors="replace")
                if takeover.leased_at is None and "holds the lease: taking over" in text:
                    takeover.leased_at = time.time()
                if text.count("node link connected") > seen:
                    takeover.linked_at = time.time()
                if procs[standby].poll() is not None or time.time() - takeover.killed_at > 120:
                    raise RuntimeError(f"the standby did not take over:\n{text[-3000:]}")
                await asyncio.sleep(0.02)
            logs[active] = tmp / f"central-{active}-{next(starts)}.log"
            procs[active] = start("central", configs[active], logs[active])
            await until_logged(procs[active], logs[active], "standing by")
            active, standby = standby, active
        await asyncio.sleep(opts.settle)
    finally:
        for proc in procs.values():
            stop(proc)
        shutil.rmtree(LOGS, ignore_errors=True)  # the last run's, to read after the run's folder is gone
        LOGS.mkdir(parents=True)
        for log in tmp.glob("central-*.log"):
            shutil.copyfile(log, LOGS / log.name)


def read_central(url: str, run: Run) -> None:
    """What central's incidents hold and its record says of each report, at the end."""
    with psycopg.connect(url) as conn:
        for (ids,) in conn.execute("SELECT utterance_ids FROM incidents"):
            for uid in json.loads(ids):
                run.held[uid] = run.held.get(uid, 0) + 1
        run.recorded = dict(conn.execute("SELECT utterance_id, outcome FROM central_dispatched").fetchall())


def report(run: Run, opts: argparse.Namespace, machine: str, load_after: str) -> list[str]:
    first_alert = run.answered
    for t in run.takeovers:
        t.first_alert_at = min((at for at in first_alert.values() if at > t.killed_at), default=None)
    latency = {uid: first_alert[uid] - at for uid, at in run.published.items() if uid in first_alert}
    in_gap = {uid for uid, at in run.published.items()
              for t in run.takeovers if t.killed_at <= at <= (t.first_alert_at or float("inf"))}  # fmt: skip
    never = [uid for uid in run.published if uid not in first_alert]
    twice = [uid for uid in run.published if run.held.get(uid, 0) != 1 or run.recorded.get(uid) != "dispatched"]
    # a responder alerted twice about one report, by two outbox messages (a repeat of one message a phone drops)
    alerted_twice = [uid for uid, alerts in run.alerts.items() if uid in run.published
                     and len({(r, o) for _, r, o in alerts}) > len({r for _, r, _ in alerts})]  # fmt: skip

    def pct(xs: list[float]) -> str:
        return f"{percentile(xs, 50):.2f} / {percentile(xs, 95):.2f} / {max(xs):.2f} s" if xs else "-"

    lines = [f"machine: {machine}", f"stations {opts.stations}, a report every {opts.every} s, a takeover every "
             f"{opts.settle} s, {opts.rounds} takeovers; PostgreSQL durable", ""]  # fmt: skip
    lines.append("takeover  kill -> lease held  -> stations' link up  -> first answer  reports in the gap: n, -> answer max")
    for i, t in enumerate(run.takeovers, 1):
        gap = [latency[u] for u in in_gap if u in latency and t.killed_at <= run.published[u] <= (t.first_alert_at or 0)]
        worst = f", {max(gap):.2f} s" if gap else ""

        def since(at: float | None, t: Takeover = t) -> str:
            return f"{at - t.killed_at:.2f} s" if at is not None else "-"

        lines.append(f"{i:>8}  {since(t.leased_at):>18}  {since(t.linked_at):>20}  {since(t.first_alert_at):>14}  "
                     f"{len(gap)}{worst}")
    lines += ["", f"reports {len(run.published)}; answered {len(latency)}; never answered {len(never)}; not held by "
              f"exactly one incident or not recorded as dispatched {len(twice)}; a responder alerted twice by two "
              f"outbox messages {len(alerted_twice)}",
              f"report -> answer p50 / p95 / max: all {pct(list(latency.values()))}; "
              f"outside the gaps {pct([v for u, v in latency.items() if u not in in_gap])}; "
              f"in the gaps {pct([v for u, v in latency.items() if u in in_gap])}",
              f"load average after: {load_after}"]  # fmt: skip
    return lines


async def main_async(opts: argparse.Namespace) -> list[str]:
    machine = describe()
    run = Run()
    with tempfile.TemporaryDirectory(prefix="jingbao-takeover-") as tmp_name:
        tmp = Path(tmp_name)
        broker = Mosquitto(tmp / "mosquitto")
        cluster = PostgresCluster(durable=True)
        try:
            broker.start()
            await asyncio.to_thread(cluster.start)
            url = cluster.url(cluster.create_database())
            stations = [f"st{k}" for k in range(opts.stations)]
            ready = asyncio.Event()
            phones = asyncio.create_task(listen(broker, run, ready))
            await ready.wait()
            paired = asyncio.Event()
            pair = asyncio.create_task(takeovers(tmp, broker, url, stations, opts, run, paired))
            await asyncio.wait([pair, asyncio.create_task(paired.wait())], return_when=asyncio.FIRST_COMPLETED)
            if pair.done():
                pair.result()  # what went wrong starting the pair
            await asyncio.gather(publish_reports(broker, stations, opts.every, run, pair), pair)
            deadline = time.time() + 30  # the last alerts
            while time.time() < deadline and any(uid not in run.answered for uid in run.published):
                await asyncio.sleep(0.2)
            phones.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await phones
            await asyncio.to_thread(read_central, url, run)
        finally:
            broker.stop()
            await asyncio.to_thread(cluster.stop)
    load_after = Path("/proc/loadavg").read_text().split()[0]
    return report(run, opts, machine, load_after)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4, help="takeovers (default 4)")
    p.add_argument("--every", type=float, default=0.5, help="seconds between reports (default 0.5)")
    p.add_argument("--settle", type=float, default=20.0, help="seconds between takeovers (default 20)")
    opts = p.parse_args(argv)
    print("\n".join(asyncio.run(main_async(opts))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
