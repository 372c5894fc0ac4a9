"""Patrols (巡更) in a real Chromium against the real service (SQLite, no broker, no speech model): the guard's phone
page shows his route's round, a position he sends checks one point in and the code he types another; the console's
巡更 panel shows the round point by point, live; his walking off his post is raised there at once, and when the
round's window has passed the point he skipped (the topbar's count, the panel's 漏巡 and 离岗 lists, the map). No
CSP violation. Takes docs/screenshots/patrols-phone.png and patrols-console.png."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.support.web import as_user
from tests.web.browser import CSP_VIOLATIONS, LiveService, chromium, live_service, log_in, screenshot

pytestmark = pytest.mark.slow
POINTS = [("南门", 34.2705, 108.9902, None), ("北门", 34.2715, 108.9902, None), ("东侧仓库", 34.2715, 108.9914, "HN-EAST-03")]
LEAD_S, WINDOW_S = 6.0, 15.0


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveService, float]]:
    """The service with 花鸟市场's guard patrolling three points; its round starts a few seconds after it is up:
    (service, the round's start)."""
    start = int(time.time() + LEAD_S)
    route = {"id": "r-huaniao", "name": "花鸟市场夜巡", "patrollers": ["g-huaniao"], "radius_m": 25,
             "starts": [time.strftime("%H:%M:%S", time.localtime(start))], "window_min": WINDOW_S / 60,
             "points": [{"name": n, "lat": lat, "lon": lon} | ({"code": c} if c else {})
                        for n, lat, lon, c in POINTS]}  # fmt: skip
    with live_service(tmp_path_factory.mktemp("patrols-browser"), dispatch={"patrols": {"routes": [route]}},
                      broker=False) as service:
        yield service, start


@pytest.fixture
def browser() -> Iterator[Browser]:
    CSP_VIOLATIONS.clear()
    with chromium() as b:
        yield b
    assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)


def test_a_guard_checks_in_on_his_phone_and_the_console_sees_the_point_he_missed(
    live: tuple[LiveService, float], browser: Browser
) -> None:
    service, start = live
    time.sleep(max(0.0, start + 0.3 - time.time()))
    console = browser.new_page(viewport={"width": 1600, "height": 950}, locale="zh-CN", timezone_id="Asia/Shanghai")
    log_in(console, service.url, "op", "/console")
    console.click("#patrols-toggle")
    round_row = console.locator("#patrol-routes .patrol-round.open")
    expect(round_row).to_contain_text("进行中")

    phone = browser.new_page(viewport={"width": 400, "height": 860}, locale="zh-CN", timezone_id="Asia/Shanghai")
    log_in(phone, service.url, "guard-huaniao", "/guard")
    card = phone.locator("#my-patrols .my-patrol")
    expect(card).to_contain_text("本轮进行中")
    expect(card.locator("li")).to_have_text(["○ 南门", "○ 北门", "○ 东侧仓库（可扫码）"])
    # at 南门 (his phone's fix, as the page sends it when he shares his position); then he types 东侧仓库's code
    sent = httpx.post(f"{service.url}/api/me/position", json={"lat": 34.27053, "lon": 108.9902},
                      headers=as_user(service, "guard-huaniao"))  # fmt: skip
    assert sent.status_code == 200
    card.locator("input").fill("HN-EAST-99")
    card.locator("button[type=submit]").click()
    expect(card.locator(".state")).to_contain_text("未签到：这个编码不是你巡更路线上的点")
    card.locator("input").fill("HN-EAST-03")
    card.locator("button[type=submit]").click()
    expect(card.locator("li.ok")).to_have_count(2)
    expect(card.locator("li").nth(2)).to_contain_text("✓ 东侧仓库")
    phone.evaluate("() => document.getElementById('my-patrols-area').scrollIntoView()")
    screenshot(phone, "patrols-phone")

    expect(round_row.locator(".ok")).to_have_count(2)  # live on the console: ✓ 南门, ✓ 东侧仓库 (扫码)
    expect(round_row.locator(".ok").nth(1)).to_contain_text("(扫码)")
    # then he walks off, 500 m from his post (the geofence): raised on the console at once
    away = httpx.post(f"{service.url}/api/me/position", json={"lat": 34.2705 + 500 / 111_195, "lon": 108.9902},
                      headers=as_user(service, "guard-huaniao"))  # fmt: skip
    assert away.status_code == 200
    expect(console.locator("#post-exits li.missed")).to_contain_text("万寿路花鸟市场保安 离开万寿路花鸟市场 500 米尚未返回")
    # the window passes with 北门 not checked in: raised on the console
    missed = console.locator("#patrol-missed li.missed")
    expect(missed).to_have_count(1, timeout=(start + WINDOW_S + 5 - time.time()) * 1000)
    expect(missed).to_contain_text("花鸟市场夜巡 · 北门 未签到")
    expect(console.locator("#patrols-badge")).to_have_text("2")  # the missed point, the guard away
    expect(console.locator("#patrol-routes .patrol-round.missed .bad")).to_have_text("✗ 北门")
    drawn = console.evaluate("() => PT.layer.getLayers().filter((l) => l instanceof L.Circle).map((l) => l.options.color)")
    assert drawn == ["#3ccf7a", "#ff4d4f", "#3ccf7a"]  # the map: checked, missed, checked
    screenshot(console, "patrols-console")
