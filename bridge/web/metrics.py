"""GET /metrics: the service's counters and gauges in Prometheus' text format, read from the live state at each scrape
(a box's or an edge's: ServiceCollector; central's: CentralCollector).

A scraper has no session: it sends `Authorization: Bearer <token>`, the token being the content of
`web.metrics_token_file`. Without that file configured /metrics is refused to everyone (403); a missing or wrong
token is 401. The metric names and what they count are in docs/metrics.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dispatch.topics import NODE_KINDS

if TYPE_CHECKING:
    from bridge.central_health import CentralHealth
    from bridge.service import Service
    from dispatch.dispatcher import DispatchService


class ServiceCollector(Collector):
    """Reads the channels, recognition, dispatcher, forwarder (an edge's) and event loop of a running Service at scrape
    time."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield from self._channels()
        yield from self._recognition()
        yield from self._dispatch()
        yield from self._forwarding()
        yield from self._loop()

    def _channels(self) -> Iterator[Metric]:
        by_channel = [
            (GaugeMetricFamily, "jingbao_channel_running", "1 while the channel's source is open", "running"),
            (GaugeMetricFamily, "jingbao_channel_talking", "1 while someone is talking on the channel", "talking"),
            (CounterMetricFamily, "jingbao_channel_utterances", "Utterances archived", "utterances"),
            (CounterMetricFamily, "jingbao_channel_discarded", "Sounds too short to be speech, discarded", "discarded"),
            (GaugeMetricFamily, "jingbao_channel_active_faults", "Faults active on the channel", "active_faults"),
            (GaugeMetricFamily, "jingbao_channel_behind_seconds", "How late the channel takes its audio", "behind_s"),
            (CounterMetricFamily, "jingbao_channel_skipped_seconds", "Audio its source dropped (buffer overflow)",
             "skipped_s"),
            (CounterMetricFamily, "jingbao_channel_muted_seconds", "Received audio muted while the channel transmitted",
             "muted_s"),
        ]  # fmt: skip
        states = self.service.channel_states()
        for kind, name, documentation, key in by_channel:
            family = kind(name, documentation, labels=["channel"])
            for state in states:
                family.add_metric([state["id"]], float(state[key]))
            yield family
        rejected = CounterMetricFamily(
            "jingbao_source_rejected",
            "Input a channel's source refused (packets, files, pushed audio), by kind",
            labels=["channel", "reason"],
        )
        for state in states:
            for reason, count in state["rejected_by"].items():
                rejected.add_metric([state["id"], reason], count)
        yield rejected
        switches = CounterMetricFamily("jingbao_source_stream_switches",
                                       "Changes of the RTP stream a channel hears (a new SSRC, another sender)",
                                       labels=["channel"])  # fmt: skip
        for state in states:
            if state["stream_switches"] is not None:  # an RTP channel
                switches.add_metric([state["id"]], state["stream_switches"])
        yield switches
        yield from self._announcements(states)

    def _announcements(self, states: list[dict]) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "jingbao_announcements",
            "Spoken announcements by outcome: announced (on the air), merged (shared a transmission), or dropped "
            "(replaced by an update, over_budget, unrenderable, not_sent)",
            labels=["channel", "outcome"],
        )
        airtime = CounterMetricFamily("jingbao_announcement_airtime_seconds", "Seconds keyed for announcements",
                                      labels=["channel"])  # fmt: skip
        for state in states:
            said = state["announcements"]
            if said is None:  # a channel that cannot transmit
                continue
            for outcome, count in [("announced", said["announced"]), ("merged", said["merged"]), *said["dropped"].items()]:
                outcomes.add_metric([state["id"], outcome], count)
            airtime.add_metric([state["id"]], said["airtime_s"])
        yield outcomes
        yield airtime

    def _recognition(self) -> Iterator[Metric]:
        recognition = self.service.recognition
        if recognition is None:
            return
        lag = recognition.lag()
        pending = GaugeMetricFamily("jingbao_recognition_pending", "Utterances archived and waiting for recognition",
                                    labels=["channel"])  # fmt: skip
        for channel in self.service.channels:
            pending.add_metric([channel.config.id], lag.pending.get(channel.config.id, 0))
        yield pending
        pool = lag.pool
        yield GaugeMetricFamily("jingbao_recognition_open_streams", "Utterances being recognised", value=pool.open_streams)
        yield GaugeMetricFamily("jingbao_recognition_waiting_audio_seconds", "Audio fed to the recogniser, not decoded yet",
                                value=pool.waiting_audio_s)  # fmt: skip
        yield GaugeMetricFamily("jingbao_recognition_oldest_wait_seconds", "How long the oldest undecoded audio waited",
                                value=pool.oldest_wait_s)  # fmt: skip
        yield CounterMetricFamily("jingbao_recognition_refused", "Utterances the recogniser was too busy to take",
                                  value=pool.rejected)  # fmt: skip
        yield CounterMetricFamily("jingbao_recognition_heard_once", "Utterances heard without the alternative hearings "
                                  "(recognition was behind)", value=pool.heard_once)  # fmt: skip
        yield CounterMetricFamily("jingbao_recognition_heard_again", "Utterances heard once, heard again with the "
                                  "alternative hearings after their final", value=pool.heard_again)  # fmt: skip
        yield CounterMetricFamily("jingbao_recognition_failed", "Recognitions that failed", value=pool.failed)

    def _dispatch(self) -> Iterator[Metric]:
        if self.service.dispatch is not None:
            yield from dispatch_metrics(self.service.dispatch)
            yield CounterMetricFamily("jingbao_dispatch_stale", "Final transcripts not dispatched: heard over "
                                      "node.dispatch_max_age_s ago (stored, paging nobody)",
                                      value=self.service.stale_finals)  # fmt: skip

    def _forwarding(self) -> Iterator[Metric]:
        forwarder = self.service.forwarder
        if forwarder is None:  # not an edge
            return
        b = forwarder.backlog
        yield GaugeMetricFamily("jingbao_forward_queued", "Messages for central it has not acknowledged (sent or not)",
                                value=b.queued)  # fmt: skip
        yield GaugeMetricFamily("jingbao_forward_unacknowledged", "Messages the broker took, central has not acknowledged",
                                value=b.unacknowledged)  # fmt: skip
        yield GaugeMetricFamily("jingbao_forward_oldest_seconds", "Age of the oldest message central has not acknowledged",
                                value=b.oldest_age_s())  # fmt: skip
        yield GaugeMetricFamily("jingbao_forward_behind", "1 while the fault 'forwarding behind' is active",
                                value=float(forwarder.behind))  # fmt: skip
        if b.last_ack_at is not None:  # no sample rather than 1970 before the first one
            yield GaugeMetricFamily("jingbao_forward_last_ack_timestamp_seconds", "When central last acknowledged",
                                    value=b.last_ack_at)  # fmt: skip
        for name, documentation, value in [
            ("jingbao_forward_sent", "Messages the broker took (resends included)", b.sent),
            ("jingbao_forward_resent", "Messages sent again, central not having acknowledged them in time", b.resent),
            ("jingbao_forward_acknowledged", "Messages central acknowledged", b.acknowledged),
            ("jingbao_forward_refused", "Messages central acknowledged as refused for good", b.refused),
            ("jingbao_forward_acks_rejected", "Acknowledgements the edge could not read", b.acks_rejected),
        ]:
            yield CounterMetricFamily(name, documentation, value=value)
        live = CounterMetricFamily("jingbao_forward_live", "Messages sent at once and not queued (partials, channels), "
                                   "sent or dropped with the link down", labels=["kind", "outcome"])  # fmt: skip
        for key, count in sorted(forwarder.live.items()):
            kind, outcome = key.split()
            live.add_metric([kind, outcome], count)
        yield live

    def _loop(self) -> Iterator[Metric]:
        lag = self.service.loop_lag
        yield GaugeMetricFamily("jingbao_loop_lag_seconds", "How late the event loop woke up last", value=lag.lag_s)
        yield GaugeMetricFamily("jingbao_loop_lag_max_seconds", "The longest event-loop lag in the last minute",
                                value=lag.max_lag_s)  # fmt: skip
        yield CounterMetricFamily("jingbao_loop_stalls", "Times the event loop was blocked over 100 ms", value=lag.stalls)


def dispatch_metrics(dispatch: DispatchService) -> Iterator[Metric]:
    """A dispatcher's incidents, outbox and counts: a box's and central's alike."""
    dispatcher = dispatch.dispatcher
    incidents = GaugeMetricFamily("jingbao_incidents_open", "Open incidents by status", labels=["status"])
    for status, count in sorted(dispatcher.store.count_open().items()):
        incidents.add_metric([str(status)], count)
    yield incidents
    yield GaugeMetricFamily("jingbao_outbox_pending", "Messages to responders and the broker not delivered yet",
                            value=dispatch.outbox.count_pending())  # fmt: skip
    counters = dispatcher.counters()
    yield CounterMetricFamily("jingbao_alerts_sent", "Alerts sent to responders", value=counters["alerts_sent"])
    yield CounterMetricFamily("jingbao_escalations", "Alerts escalated to the next responder",
                              value=counters["escalations"])  # fmt: skip
    provisional = CounterMetricFamily(
        "jingbao_provisional",
        "Incidents raised from live transcripts, and how their finals settled them",
        labels=["verdict"],
    )
    for verdict, count in counters["provisional"].items():
        provisional.add_metric([verdict], count)
    yield provisional
    rejected = CounterMetricFamily("jingbao_mqtt_rejected", "MQTT messages refused (acks, status, positions), by reason",
                                   labels=["reason"])  # fmt: skip
    for reason, count in counters["rejected"].items():
        rejected.add_metric([reason], count)
    yield rejected


class CentralCollector(Collector):
    """Reads central's ingest, its PostgreSQL probe and its dispatcher (`--role central`) at scrape time."""

    def __init__(self, health: CentralHealth) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        yield from self._links()
        yield from self._ingest()
        yield from self._dispatch()

    def _links(self) -> Iterator[Metric]:
        link, database = self.health.ingest.link, self.health.database
        yield GaugeMetricFamily("jingbao_central_broker_up", "1 while the ingest is connected to the broker between "
                                "nodes", value=float(link.connected))  # fmt: skip
        yield CounterMetricFamily("jingbao_central_broker_connects", "Connections the ingest made to the broker",
                                  value=link.connects)  # fmt: skip
        yield GaugeMetricFamily("jingbao_central_database_up", "1 while PostgreSQL answers the probe",
                                value=float(database.up))  # fmt: skip
        if database.answered_at is not None:  # no sample rather than 1970 before the first answer
            yield GaugeMetricFamily("jingbao_central_database_last_answer_timestamp_seconds",
                                    "When PostgreSQL last answered the probe", value=database.answered_at)  # fmt: skip

    def _ingest(self) -> Iterator[Metric]:
        ingest = self.health.ingest
        for name, documentation, counts in [
            ("jingbao_central_stored", "Messages stored (a new row, or a newer transcript version), by kind",
             ingest.stored),
            ("jingbao_central_repeats", "Messages held already (or an older transcript version), by kind",
             ingest.repeats),
        ]:  # fmt: skip
            family = CounterMetricFamily(name, documentation, labels=["kind"])
            for kind in NODE_KINDS:
                family.add_metric([kind], counts[kind])
            yield family
        rejected = CounterMetricFamily("jingbao_central_rejected", "Messages refused for good, by station ('?': not a "
                                       "node topic)", labels=["station"])  # fmt: skip
        for station, count in sorted(ingest.rejected.items()):
            rejected.add_metric([station], count)
        yield rejected
        yield CounterMetricFamily("jingbao_central_acks_sent", "Acknowledgement messages to the edges the broker took",
                                  value=ingest.acks_sent)  # fmt: skip
        yield CounterMetricFamily("jingbao_central_commits", "Transactions the ingest committed (the messages that "
                                  "arrived together are stored in one)", value=ingest.commits)  # fmt: skip
        if ingest.last_stored_at is not None and ingest.stored_lag_s is not None:
            yield GaugeMetricFamily("jingbao_central_last_stored_timestamp_seconds", "When the latest message was "
                                    "stored", value=ingest.last_stored_at)  # fmt: skip
            yield GaugeMetricFamily("jingbao_central_stored_lag_seconds", "Of the latest message stored, how long "
                                    "after its utterance began", value=ingest.stored_lag_s)  # fmt: skip


    def _dispatch(self) -> Iterator[Metric]:
        dispatch = self.health.dispatch
        if dispatch is None:  # central dispatches nothing
            return
        refused = CounterMetricFamily("jingbao_central_dispatch_refused", "Transcripts not dispatched, by reason",
                                      labels=["reason"])  # fmt: skip
        for reason, count in sorted(dispatch.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        partials = CounterMetricFamily("jingbao_central_dispatch_partials", "The edges' partial transcripts, by what "
                                       "became of them (read, ignored, stale, failed)", labels=["outcome"])  # fmt: skip
        for outcome, count in sorted(dispatch.partials.items()):
            partials.add_metric([outcome], count)
        yield partials
        for name, documentation, value in [
            ("jingbao_central_dispatched", "Transcripts the dispatcher read", dispatch.dispatched),
            ("jingbao_central_dispatch_recovered", "Transcripts read back from PostgreSQL at start, committed and not "
             "dispatched by the last run", dispatch.recovered),
            ("jingbao_central_dispatch_repeats", "Transcript versions handed over again and not dispatched twice",
             dispatch.repeats),
        ]:  # fmt: skip
            yield CounterMetricFamily(name, documentation, value=value)
        yield GaugeMetricFamily("jingbao_central_dispatch_queued", "Transcripts committed, waiting for the dispatcher",
                                value=dispatch.queued)  # fmt: skip
        yield from dispatch_metrics(dispatch.service)

def metrics_router(collector: Collector, token: str | None) -> APIRouter:
    """The /metrics route over `collector`, answering with a bearer `token` only (None: refused to all)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if token is None:
            raise HTTPException(403, "metrics are off: set web.metrics_token_file (docs/security.md)")
        offered = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise HTTPException(401, "a bearer token is needed", headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
