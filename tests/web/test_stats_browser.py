"""The statistics page (统计) in a real Chromium against the real service (SQLite, no broker, no speech model), its
database holding the demo's made-up history (dispatch/demo_history.py): the charts are drawn by the vendored
Chart.js with the API's figures, the filters redraw them, the console links to it, and a guard is refused. Takes
docs/screenshots/statistics.png."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from playwright.sync_api import Browser, Page, expect

from bridge.db import connect
from bridge.events import Utterance
from dispatch import demo_history
from dispatch.gazetteer import load_jurisdiction
from tests.web.browser import CSP_VIOLATIONS, REPO, LiveService, chromium, live_service, log_in, screenshot

pytestmark = pytest.mark.slow
CHARTS = ["chart-period", "chart-type", "chart-place", "chart-grid", "chart-station", "chart-response",
          "chart-channels", "chart-hours"]  # fmt: skip
TRAFFIC, TRAFFIC_CHANNELS = 60, ("ch-market", "ch-market", "ch-police", "ch-school", "ch-volunteer")
DRAWN = "(id) => { const c = Chart.getChart(id); return c ? c.data.datasets.map((d) => d.data) : null; }"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with live_service(tmp_path_factory.mktemp("stats-browser"), broker=False) as service:
        demo_history.seed(connect(service.config.storage.database), load_jurisdiction(REPO / "config" / "jurisdiction.yaml"), 6)
        now = time.time()
        for k in range(TRAFFIC):  # radio traffic of the last day and a half, archived as the channels would
            start = now - k * 1800 - 60
            utterance = Utterance(f"u-traffic-{k}", TRAFFIC_CHANNELS[k % len(TRAFFIC_CHANNELS)], start, start + 1, bytes(32000))
            service.call(service.service.archive.store, utterance)
        yield service


@pytest.fixture
def browser() -> Iterator[Browser]:
    CSP_VIOLATIONS.clear()
    with chromium() as b:
        yield b
    assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)


def drawn(page: Page, chart: str) -> list[float]:
    """The numbers Chart.js drew in a chart (every dataset's), polled until it exists (wait_for_function with a
    string is an eval, which the pages' CSP refuses)."""
    for _ in range(100):
        data = page.evaluate(DRAWN, chart)
        if data is not None:
            return [x for dataset in data for x in dataset]
        page.wait_for_timeout(100)
    raise AssertionError(f"{chart} was never drawn")


def test_the_statistics_page_draws_the_history_as_charts(live: LiveService, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 1440, "height": 2250}, locale="zh-CN")  # the whole page in the screenshot
    log_in(page, live.url, "op", "/console")
    page.click("#stats-link")
    page.wait_for_url(f"{live.url}/stats")
    api = page.evaluate("() => JB.api('/api/stats')")
    assert api["totals"]["incidents"] > 0
    for chart in CHARTS:
        assert page.locator(f"#{chart}").bounding_box()["height"] > 100, chart
    assert sum(drawn(page, "chart-period")) == api["totals"]["incidents"]  # every incident in the trend, by type
    assert sum(drawn(page, "chart-type")) == api["totals"]["incidents"]
    assert sum(drawn(page, "chart-response")) == api["response"]["reported-on_scene"]["n"]
    assert sum(drawn(page, "chart-hours")) == api["totals"]["incidents"] + TRAFFIC  # reports and utterances by hour
    assert sum(drawn(page, "chart-channels")) == api["totals"]["incidents"] + TRAFFIC
    assert (api["channels"][0]["id"], api["channels"][0]["utterances"]) == ("ch-market", 24)  # the busiest first
    page.select_option("#trend-by", "stations")  # the trend split by station instead: the same incidents
    stations = page.evaluate("() => Chart.getChart('chart-period').data.datasets.map((d) => d.label)")
    assert set(stations) == set(api["by_period"]["stations"]) and sum(drawn(page, "chart-period")) == api["totals"]["incidents"]
    page.select_option("#trend-by", "types")
    expect(page.locator("#totals .figure").first).to_contain_text(str(api["totals"]["incidents"]))
    expect(page.locator("#units tr")).to_have_count(len(api["units"]))
    expect(page.locator("#units tr").first.locator("td").nth(3)).to_have_text(str(api["units"][0]["alerted"]))
    screenshot(page, "statistics")

    page.select_option("#f-type", "fight")  # a filter redraws the charts with its figures
    page.click("#filters button[type=submit]")
    fights = sum(api["by_period"]["types"].get("fight", [0]))
    for _ in range(50):
        if sum(drawn(page, "chart-type")) == fights:
            break
        page.wait_for_timeout(100)
    assert sum(drawn(page, "chart-type")) == fights > 0
    assert "type=fight" in page.locator("#csv-incidents").get_attribute("href")


def test_an_auditor_reaches_it_and_a_guard_is_refused(live: LiveService, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, live.url, "aud", "/auditor")
    page.click("#stats-link")
    page.wait_for_url(f"{live.url}/stats")
    expect(page.locator("#back")).to_have_attribute("href", "/auditor")
    assert sum(drawn(page, "chart-type")) > 0
    page.close()
    page = browser.new_page()
    log_in(page, live.url, "guard-huaniao", "/guard")
    page.goto(f"{live.url}/stats")
    expect(page.locator(".refused")).to_contain_text("无权使用本页面")
    assert page.evaluate("() => Object.keys(Chart.instances).length") == 0


def test_the_report_page_draws_its_charts(live: LiveService, browser: Browser) -> None:
    page = browser.new_page()
    log_in(page, live.url, "op", "/stats")
    month = (date.today() - timedelta(days=1)).strftime("%Y-%m")  # a month the history has days of, even on the 1st
    page.fill("#month", month)
    with page.expect_popup() as popup:
        page.click("#report-html")
    report = popup.value
    report.wait_for_url(f"{live.url}/api/stats/report?month={month}")  # the popup opens as about:blank first
    expect(report.locator("h1")).to_contain_text("警保联动工作月报")
    assert report.locator("table").count() == 8
    incidents = int(report.locator("table").first.locator("td").first.inner_text())
    assert sum(drawn(report, "chart-trend")) == sum(drawn(report, "chart-types")) == incidents > 0

