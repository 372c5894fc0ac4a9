"""The demo `make run` serves (config/demo.yaml, its users from `jingbao user demo`) lets a guard talk from the guard
page: the demo's radios are file channels, so it needs a `web` channel, and the demo guard's talk on it is archived,
transcribed and dispatched like a radio's. Real service, sherpa model, mosquitto, SQLite, Chromium with a WAV as
its microphone."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import expect

from bridge.commands.users import cmd_user_demo
from bridge.web.users import demo_password
from tests.support.broker import Mosquitto, free_port
from tests.web.browser import CHROMIUM_LEAD_S, REPO, LiveService, chromium, hold

pytestmark = pytest.mark.slow
DEMO_CONFIG = REPO / "config" / "demo.yaml"


def demo_web_channels() -> list[dict]:
    demo = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    return [c for c in demo["channels"] if c["source"]["type"] == "web"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, sherpa_model: Path) -> Iterator[LiveService]:
    """The demo's push-to-talk channels exactly as config/demo.yaml has them (its file channels would replay the
    demo calls, which this test does not need), with storage, broker and model of the test's own."""
    tmp = tmp_path_factory.mktemp("demo")
    demo = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    channels = demo_web_channels()
    for channel in channels:
        if "tx" in channel:
            channel["tx"]["output"]["directory"] = str(tmp / "tx")
    broker = Mosquitto(tmp / "mosquitto")
    broker.start()
    try:
        config = demo | {
            "jurisdiction": str(REPO / "config" / demo["jurisdiction"]),
            "storage": demo["storage"] | {"data_dir": str(tmp / "data")},
            "broker": {"enabled": True, "port": broker.port},
            "asr": {"engine": "sherpa", "sherpa_model": str(sherpa_model)},
            "web": {"port": free_port()},
            "channels": channels,
        }
        path = tmp / "demo.yaml"
        path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        assert cmd_user_demo(argparse.Namespace(config=path)) == 0  # the demo logins, as `make run` creates them
        with LiveService(path) as live:
            yield live
    finally:
        broker.stop()


def test_the_demo_has_a_channel_guards_can_talk_on() -> None:
    assert demo_web_channels(), "config/demo.yaml has no `web` channel: the guard page's talk button has nowhere to go"


def test_the_demo_guard_talks_and_is_archived_transcribed_and_dispatched(demo: LiveService, fake_mic: Path) -> None:
    channel = demo_web_channels()[0]["id"]
    with chromium(fake_mic) as browser:
        context = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True)
        page = context.new_page()
        page.goto(f"{demo.url}/login?next=/guard")
        page.fill("input[name=name]", "guard")
        page.fill("input[name=password]", demo_password("guard"))
        page.click("button[type=submit]")
        page.wait_for_url(f"{demo.url}/guard")
        expect(page.locator("#ptt")).to_be_enabled()
        expect(page.locator("#channel")).to_have_value(channel)
        hold(page, "#ptt", CHROMIUM_LEAD_S + 3.9 + 1.0)  # the fake microphone says c009 (3.9 s)
        expect(page.locator("#ptt-state")).to_contain_text("已发送", timeout=10_000)
        context.close()

    # the first on the channel (newest first): Chromium's fake microphone plays its file in a loop, and a held button
    # can catch the call's first syllables again after it
    archived = demo.wait("the guard's utterance archived", lambda: demo.service.archive.list(channel))[-1]
    transcript = demo.wait("its transcript", lambda: demo.service.transcripts.get(archived.id))
    assert not transcript.empty
    incident = demo.wait("the incident", lambda: next(iter(demo.service.dispatch.dispatcher.store.list(limit=10)), None))
    assert (incident.type, incident.place_name) == ("medical", "万寿路花鸟市场")
    assert archived.id in incident.utterance_ids and incident.channel == channel
