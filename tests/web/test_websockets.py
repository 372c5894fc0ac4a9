"""Hostile and clumsy WebSocket clients against the real service over real sockets (uvicorn, real bus, real archive;
no speech model, none is needed): a binary or oversized message, a flood, a disconnect without a close frame. Each is
answered with a proper close code or quietly cleaned up, and the service keeps serving everyone else."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from bridge.web.routes_audio import MAX_MESSAGE_BYTES
from bridge.web.sockets import MAX_FEED_MESSAGE_CHARS
from tests.web.browser import PASSWORD, LiveService, live_service, read_pcm

FEEDS = [("op", "/api/events"), ("guard-huaniao", "/api/me/live"), ("op", "/api/channels/ch-market/listen")]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with live_service(tmp_path_factory.mktemp("websockets"), broker=False) as live:
        yield live


@pytest.fixture(scope="module")
def tokens(live: LiveService) -> dict[str, str]:
    def token(name: str) -> str:
        response = httpx.post(f"{live.url}/api/login", json={"name": name, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response.json()["token"]

    return {name: token(name) for name in ("op", "guard-huaniao", "patrol")}


def open_ws(live: LiveService, tokens: dict[str, str], user: str, path: str) -> ClientConnection:
    url = live.url.replace("http", "ws") + path
    return ws_connect(url, additional_headers={"Authorization": f"Bearer {tokens[user]}"}, open_timeout=5,
                      max_size=None)  # fmt: skip


def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """The code of the close frame the server sent (None: the connection dropped without one)."""
    deadline = time.monotonic() + timeout
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))  # live frames may come first; read past them
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def subscribers(live: LiveService) -> int:
    return live.call(lambda: len(live.service.bus.subscribers))


def receives_fault(live: LiveService, ws: ClientConnection, message: str) -> None:
    """Publish a fault on the real bus and read the feed until it arrives (channel and level events may come first)."""
    live.call(live.service.bus.publish, "fault", {"channel": "ch-market", "message": message})
    while (event := json.loads(ws.recv(timeout=10)))["topic"] != "fault":
        pass
    assert event["data"]["message"] == message


def assert_healthy(live: LiveService, tokens: dict[str, str]) -> None:
    """The service answers HTTP, and a new console feed still gets live events."""
    assert httpx.get(f"{live.url}/healthz", timeout=5).status_code == 200
    baseline = subscribers(live)
    with open_ws(live, tokens, "op", "/api/events") as ws:
        live.wait("the new feed to subscribe", lambda: len(live.service.bus.subscribers) > baseline)
        receives_fault(live, ws, "health check")


@pytest.mark.parametrize(("user", "path"), FEEDS)
def test_a_binary_message_to_a_feed_is_closed_with_1003(live, tokens, user, path) -> None:
    baseline = subscribers(live)
    with open_ws(live, tokens, user, path) as ws:
        ws.send(b"\x00\x01" * 100)
        assert close_code(ws) == 1003  # unsupported data: a feed takes none
    live.wait("the feed to unsubscribe", lambda: len(live.service.bus.subscribers) <= baseline)
    assert_healthy(live, tokens)


@pytest.mark.parametrize(("user", "path"), FEEDS)
def test_an_oversized_text_to_a_feed_is_closed_with_1009(live, tokens, user, path) -> None:
    with open_ws(live, tokens, user, path) as ws:
        ws.send("x" * (MAX_FEED_MESSAGE_CHARS + 1))
        assert close_code(ws) == 1009
    assert_healthy(live, tokens)


def test_an_oversized_push_to_talk_message_is_closed_with_1009(live, tokens) -> None:
    with open_ws(live, tokens, "guard-huaniao", "/api/ptt") as ws:
        assert "ready" in ws.recv(timeout=5)
        ws.send(bytes(MAX_MESSAGE_BYTES + 2))
        assert close_code(ws) == 1009
    assert_healthy(live, tokens)


def test_a_flood_of_small_messages_is_read_and_dropped(live, tokens) -> None:
    with open_ws(live, tokens, "op", "/api/events") as ws:
        for _ in range(20_000):
            ws.send("ping")
        receives_fault(live, ws, "after the flood")  # the flooding client itself is still served
    assert_healthy(live, tokens)


def test_a_push_to_talk_flood_is_refused_not_buffered(live, tokens) -> None:
    source = live.channel("ch-market").source
    refused_before = source.stats.rejected
    with open_ws(live, tokens, "guard-huaniao", "/api/ptt") as ws:
        assert "ready" in ws.recv(timeout=5)
        chunk = bytes(16000 * 2 // 2)  # half a second per message, far faster than real time
        for _ in range(40):  # 20 s of audio at once, four times the channel's buffer
            ws.send(chunk)
        assert "refused" in ws.recv(timeout=10)  # the page is told once
        ws.send("end")
        assert close_code(ws) == 1000
    assert source.stats.rejected > refused_before
    assert_healthy(live, tokens)


def test_a_channel_takes_one_press_at_a_time(live, tokens) -> None:
    """Another's press while someone talks is told who and closed (1013), as a radio channel is busy; once the first
    is released the channel is free again. (Two at once would interleave in the channel's one source.)"""
    with open_ws(live, tokens, "guard-huaniao", "/api/ptt?channel=ch-market") as first:
        assert "ready" in first.recv(timeout=5)
        with open_ws(live, tokens, "patrol", "/api/ptt?channel=ch-market") as second:
            busy = json.loads(second.recv(timeout=5))
            assert busy == {"type": "busy", "channel": "ch-market", "by": "万寿路花鸟市场保安"}  # his name, not his login
            assert close_code(second) == 1013
        first.send(bytes(640))
        first.send("end")
        assert close_code(first) == 1000
    with open_ws(live, tokens, "patrol", "/api/ptt?channel=ch-market") as again:
        assert "ready" in again.recv(timeout=5)
        again.send("end")
        assert close_code(again) == 1000
    assert_healthy(live, tokens)


def test_a_guard_pressing_again_takes_the_channel_from_his_own_vanished_press(live, tokens) -> None:
    """His phone lost its connection mid-press without a close frame: his next press is not refused under his own
    name; the old press is closed (1008) and the channel is his new press's."""
    with open_ws(live, tokens, "guard-huaniao", "/api/ptt?channel=ch-market") as stale:
        assert "ready" in stale.recv(timeout=5)
        with open_ws(live, tokens, "guard-huaniao", "/api/ptt?channel=ch-market") as fresh:
            assert "ready" in fresh.recv(timeout=5)
            assert close_code(stale) == 1008
            with open_ws(live, tokens, "patrol", "/api/ptt?channel=ch-market") as other:
                assert json.loads(other.recv(timeout=5))["by"] == "万寿路花鸟市场保安"  # the fresh press holds it
            fresh.send("end")
            assert close_code(fresh) == 1000
    assert_healthy(live, tokens)


@pytest.mark.parametrize(("user", "path"), FEEDS)
def test_a_feed_client_that_vanishes_without_a_close_frame_is_cleaned_up(live, tokens, user, path) -> None:
    baseline = subscribers(live)
    with open_ws(live, tokens, user, path) as ws:
        if path.endswith("/listen"):
            live.wait("the listener", lambda: live.channel("ch-market")._listeners)
        else:
            live.wait("the subscription", lambda: len(live.service.bus.subscribers) > baseline)
        ws.socket.close()  # the network cable pulled: no close frame
    if path.endswith("/listen"):
        live.call(live.channel("ch-market").source.push, bytes(16000 * 2))  # a send is what notices a dead listener
        live.wait("the listener to go", lambda: not live.channel("ch-market")._listeners, timeout=10)
    live.wait("the feed to unsubscribe", lambda: len(live.service.bus.subscribers) <= baseline, timeout=10)
    assert_healthy(live, tokens)


def test_a_guard_who_vanishes_mid_utterance_still_ends_it(live, tokens, calls_audio) -> None:
    """A press cut off by the network ends like a release: the utterance is cut, archived, and the channel goes on."""
    before = len(live.call(live.service.archive.list, "ch-market"))
    pcm = read_pcm(calls_audio / "c009.wav")
    with open_ws(live, tokens, "guard-huaniao", "/api/ptt") as ws:
        assert "ready" in ws.recv(timeout=5)
        step = 16000 * 2 // 25  # 40 ms, as the page sends
        start = time.monotonic()
        for k, offset in enumerate(range(0, len(pcm) // 2, step)):  # half the call, then the connection dies
            time.sleep(max(0.0, start + k * 0.04 - time.monotonic()))
            ws.send(pcm[offset : offset + step])
        ws.socket.close()
    newest = live.wait("the cut-off utterance archived",
                       lambda: len(live.service.archive.list("ch-market")) > before and live.service.archive.list("ch-market")[0])
    assert newest.end_reason != "max_length"
    assert live.call(lambda: live.channel("ch-market").state.talking) is False
    assert_healthy(live, tokens)
