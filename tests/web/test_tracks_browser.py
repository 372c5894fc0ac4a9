"""Track replay (轨迹回放) in a real Chromium against the real service (SQLite, no broker, no speech model): the
operator picks a guard and a range, the console's map draws his track with a marker the slider and ▶ 回放 move, the
incident and the transmission of that time are listed beside it, clicking the transmission moves the slider to it
and ▶ plays its archived recording. No CSP violation. Takes docs/screenshots/track-replay.png."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from asr.transcript import Transcript
from dispatch.positions import Position
from tests.support.archive import make_utterance, speech_pcm
from tests.web.browser import CSP_VIOLATIONS, LiveService, chromium, live_service, log_in, screenshot

__all__ = ["speech_pcm"]  # a fixture, imported for pytest
pytestmark = pytest.mark.slow
ROUTE = [(34.2705, 108.9902), (34.2684, 108.9885), (34.2690, 108.9858), (34.2702, 108.9843)]  # 万寿路花鸟市场 -> 美食街
WALK = 20  # fixes, one a minute


def along(f: float) -> tuple[float, float]:
    """The point a fraction `f` of the way along ROUTE (its legs taken as equally long)."""
    leg = min(int(f * (len(ROUTE) - 1)), len(ROUTE) - 2)
    g = f * (len(ROUTE) - 1) - leg
    (a_lat, a_lon), (b_lat, b_lon) = ROUTE[leg], ROUTE[leg + 1]
    return a_lat + (b_lat - a_lat) * g, a_lon + (b_lon - a_lon) * g


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, speech_pcm: bytes) -> Iterator[tuple[LiveService, str, float]]:
    """The service, with the guard of 花鸟市场 having walked to 美食街 over the last 20 minutes, where a fight was
    reported on his channel 5 minutes ago (between two of his fixes): (service, the call's utterance id, when it started)."""
    with live_service(tmp_path_factory.mktemp("tracks-browser"), broker=False) as service:
        now, dispatch = time.time(), service.service.dispatch
        # the walk's older fixes are written to the history as the intake kept them (it takes none older than 5 min
        # now); the last one comes in as a phone sends it
        for k in range(WALK - 1):
            lat, lon = along(k / (WALK - 1))
            service.call(dispatch.tracks.record, Position("g-huaniao", lat, lon, now - (WALK - k) * 60, 10.0))
        last = json.dumps({"_type": "location", "lat": ROUTE[-1][0], "lon": ROUTE[-1][1], "tst": now - 30, "acc": 8}).encode()
        phone = dispatch.dispatcher.on_message("owntracks/g-huaniao/phone", last)
        asyncio.run_coroutine_threadsafe(phone, service.loop).result(10)
        call = make_utterance(speech_pcm, "ch-market", start=now - 290)
        said = Transcript("美食街有人打架", "", engine="vosk", conf=0.9)
        service.call(service.service.archive.store, call)
        service.call(service.service.transcripts.save, call.id, call.channel, call.start, said)
        asyncio.run_coroutine_threadsafe(service.service._on_transcript(said, call), service.loop).result(10)
        yield service, call.id, call.start


@pytest.fixture
def browser() -> Iterator[Browser]:
    CSP_VIOLATIONS.clear()
    with chromium() as b:
        yield b
    assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)


def test_an_operator_replays_a_guards_track_beside_the_incident_and_the_call(
    live: tuple[LiveService, str, float], browser: Browser
) -> None:
    service, call_id, call_start = live
    page = browser.new_page(viewport={"width": 1600, "height": 950}, locale="zh-CN", timezone_id="Asia/Shanghai")
    log_in(page, service.url, "op", "/console")
    expect(page.locator("#incidents .incident")).to_have_count(1)  # the console has loaded (S.responders with it)
    page.click("#tracks-toggle")
    page.select_option("#track-form select[name=responder]", "g-huaniao")
    page.click("#track-form button[type=submit]")
    expect(page.locator("#track-status")).to_contain_text(f"{WALK} 个定位点，1 起警情，1 段通话")
    drawn = page.evaluate("() => TR.layer.getLayers().filter((l) => l instanceof L.Polyline && !(l instanceof L.Polygon))"
                          ".map((l) => l.getLatLngs().length)")  # fmt: skip
    assert WALK in drawn  # the track's line, every fix on it
    expect(page.locator("#track-incidents li[data-incident]")).to_contain_text("美食街")
    row = page.locator(f"#track-transmissions li[data-utterance='{call_id}']")
    expect(row).to_contain_text("美食街有人打架")

    row.locator(".text").click()  # the slider goes to the call, the marker to where he was then
    assert float(page.locator("#track-slider").input_value()) == pytest.approx(call_start, abs=1)
    marker = page.evaluate("() => { const p = TR.marker.getLatLng(); return [p.lat, p.lng]; }")
    fixes = service.call(service.service.dispatch.tracks.track, "g-huaniao", 0, call_start)
    assert marker == pytest.approx([fixes[-1].lat, fixes[-1].lon])
    assert marker != pytest.approx(list(ROUTE[-1]))  # not there yet
    expect(row).to_have_class("now")
    expect(page.locator("#track-incidents li[data-incident]")).to_have_class("p-high now")

    row.locator("button.play").click()  # its archived recording, through the archive's own route
    expect(row.locator("button.play")).to_have_class("play playing")
    row.locator("button.play").click()
    screenshot(page, "track-replay")

    page.click("#track-play")  # ▶ 回放 runs the marker on along the track
    before = float(page.locator("#track-slider").input_value())
    page.wait_for_timeout(1500)
    assert float(page.locator("#track-slider").input_value()) > before
    page.click("#track-play")
    expect(page.locator("#track-play")).to_have_text("▶ 回放")

    page.click("#patrols-toggle")  # another panel where this one lies: it closes, its track leaves the map
    expect(page.locator("#tracks-panel")).to_be_hidden()
    assert page.evaluate("() => TR.layer") is None
    page.click("#tracks-toggle")
    expect(page.locator("#patrols-panel")).to_be_hidden()
