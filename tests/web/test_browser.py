"""The pages in a real browser against the real service: real ASR (the on-board sherpa model), real dispatcher, real
mosquitto, real SQLite and archive; headless Chromium with a WAV file as its microphone.

(1) an operator sees a transcript and an incident appear after a call is played into a channel, listens live to a
    talking channel (whose meter moves), talks back onto a channel, patches two channels and unpatches them,
    cannot miss a new critical incident, and confirms the type of an unsure report waiting in the 待确认 queue (its
    alerts then reach the broker); (2) a guard holds talk on the guard page and the utterance is archived,
    transcribed and dispatched, and the alert comes back to the page; (3) an auditor finds it by a 2-character term
    and plays it; (4) role checks refuse. Screenshots of the guard, auditor and login pages and of the console's 待确认
    queue land in docs/screenshots/ (the console's own is taken from the running demo: `python -m tests.web.browser`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from playwright.sync_api import Browser, Page, expect
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from asr.live import RecognisedUtterance
from asr.transcript import Transcript
from bridge.db import connect
from bridge.events import Utterance, new_utterance_id
from bridge.service import Service
from bridge.web.metrics import ServiceCollector
from dispatch.incidents import OPEN, Incident
from dispatch.speech import EspeakVoice
from tests.web.browser import (
    CHROMIUM_LEAD_S,
    CSP_VIOLATIONS,
    PASSWORD,
    LiveService,
    chromium,
    hold,
    log_in,
    read_pcm,
    recognising_service,
    screenshot,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sherpa_model: Path) -> Iterator[LiveService]:
    with recognising_service(tmp_path_factory.mktemp("browser"), sherpa_model) as live:
        yield live


@pytest.fixture
def browser(fake_mic: Path) -> Iterator[Browser]:
    """A browser per test: Chromium's fake microphone plays its file from the browser's start, not from the press.
    Whatever the pages did, the Content Security Policy refused none of it."""
    CSP_VIOLATIONS.clear()
    with chromium(fake_mic) as b:
        yield b
    assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)


def incidents(live: LiveService, type_: str) -> list:
    return [i for i in live.service.dispatch.dispatcher.store.list(limit=100) if i.type == type_]


def fight_reported(live: LiveService, calls_audio: Path) -> str:
    """The utterance id of c001 (美食街有人打架斗殴) once it is transcribed and reported; plays it if not yet played."""
    if not incidents(live, "fight"):
        live.play_call("ch-command", calls_audio / "c001.wav")
    incident = live.wait("the fight incident", lambda: next(iter(incidents(live, "fight")), None))
    return incident.utterance_ids[0]


def console(browser: Browser, live: LiveService) -> Page:
    page = browser.new_page(viewport={"width": 1680, "height": 1000})
    log_in(page, live.url, "op", "/console")
    expect(page.locator(".channel")).to_have_count(2)
    expect(page.locator("#conn")).to_have_text("实时连接")
    return page


def test_operator_sees_transcript_and_incident_of_a_call(live: LiveService, browser: Browser, calls_audio: Path) -> None:
    page = console(browser, live)
    expect(page.locator(".leaflet-tooltip.grid-label")).to_have_count(5)  # the jurisdiction's grids, named
    expect(page.locator(".leaflet-tooltip.grid-label", has_text="怡园社区")).to_be_visible()

    live.play_call("ch-command", calls_audio / "c001.wav")  # 怡园警务点请注意，美食街有人打架斗殴，请迅速赶往现场

    final = page.locator(".line:not(.partial)", has_text="美食街")
    expect(final).to_be_visible(timeout=60_000)
    expect(final.locator("button.play")).to_be_visible()
    # the on-board engine hears pinyin: the line reads in the characters decoded from it, the syllables under them
    expect(final.locator(".zh")).to_contain_text("美食街有人打架")
    expect(final.locator(".py.heard")).to_contain_text("měi shí")
    card = page.locator(".incident", has_text="打架斗殴")
    expect(card).to_be_visible(timeout=30_000)
    expect(card).to_contain_text("美食街")
    expect(card.locator(".said .zh")).to_contain_text("有人打架")  # the report in characters too
    expect(card.locator(".responders li").first).to_contain_text("米")  # recommended responders with distances
    expect(page.locator("#banner")).to_contain_text("打架斗殴")  # a high-priority incident cannot be missed
    expect(page.locator(".leaflet-tooltip.incident-label", has_text="美食街")).to_be_visible()  # labelled on the map

    # selecting it in the queue highlights it on the map
    card.locator(".said").click()
    expect(card).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator(".leaflet-tooltip.incident-label.selected")).to_contain_text("美食街")

    # an operator action goes through and shows in the timeline
    card.get_by_role("button", name="到场").click()
    expect(card.locator(".tag", has_text="已到场")).to_be_visible()
    assert incidents(live, "fight")[0].status == "on_scene"
    page.close()


def test_operator_listens_live_to_a_talking_channel(live: LiveService, browser: Browser, calls_audio: Path) -> None:
    page = console(browser, live)
    card = page.locator("#ch-ch-market")
    card.get_by_role("button", name="监听").click()
    expect(card.get_by_role("button", name="监听中")).to_be_visible()
    talking = live.talk("ch-market", calls_audio / "c016.wav")  # 幸福路五金市场东门一切正常 (2.9 s)
    expect(card).to_have_class(re.compile(r"\btalking\b"), timeout=10_000)  # the talking indicator lights
    page.wait_for_function("parseFloat(document.querySelector('#ch-ch-market .meter div').style.width) > 25")  # the meter moves
    talking.join()
    # the channel's frames reached the page, and its AudioWorklet played them
    page.wait_for_function("JB.stats.listenBytes >= 2 * 16000 * 2 && JB.stats.played >= 16000", timeout=10_000)
    expect(card).not_to_have_class(re.compile(r"\btalking\b"), timeout=10_000)
    page.close()


def test_operator_talks_back_onto_a_channel(live: LiveService, browser: Browser) -> None:
    sink = live.config.channels[0].tx.output.directory
    before = set(sink.glob("ch-command-*.wav"))
    page = console(browser, live)
    hold(page, "#ch-ch-command button.talk", CHROMIUM_LEAD_S + 3.9 + 0.5)  # the fake microphone says c009 (3.9 s)
    expect(page.locator("#ch-ch-command .tx-state")).to_contain_text("喊话已发出", timeout=15_000)
    written = set(sink.glob("ch-command-*.wav")) - before
    assert len(written) == 1, written
    pcm = read_pcm(written.pop())
    window = 16000 * 2 // 10  # 100 ms
    levels = [rms_dbfs(pcm[k : k + window]) for k in range(0, len(pcm) - window + 1, window)]
    assert sum(level > -35 for level in levels) >= 20, levels  # at least 2 s of it is speech, not silence or hiss
    page.close()


def test_operator_patches_two_channels_and_unpatches_them(live: LiveService, browser: Browser) -> None:
    page = console(browser, live)
    page.select_option("#patch-a", "ch-command")
    page.select_option("#patch-b", "ch-market")
    page.click("#patch-add")
    patch = page.locator(".patch", has_text="指挥调度 ⇄ 市场保安")
    expect(patch).to_be_visible()
    patches = page.request.get(f"{live.url}/api/patches").json()
    assert [(p["a"], p["b"]) for p in patches] == [("ch-command", "ch-market")]
    patch.get_by_role("button", name="断开").click()
    expect(patch).to_have_count(0)
    assert page.request.get(f"{live.url}/api/patches").json() == []
    page.close()


def test_a_new_critical_incident_cannot_be_missed(live: LiveService, browser: Browser, calls_audio: Path) -> None:
    page = console(browser, live)
    live.play_call("ch-market", calls_audio / "c021.wav")  # 西光建材市场有人持刀威胁: weapon, critical
    banner = page.locator("#banner")
    expect(banner).to_contain_text("紧急警情：西光建材市场 持械", timeout=60_000)
    card = page.locator(".incident", has_text="西光建材市场")
    expect(card).to_have_class(re.compile(r"\bunseen\b"))  # flashing until the operator looks at it
    expect(page.locator(".leaflet-tooltip.incident-label.p-critical", has_text="西光建材市场")).to_be_visible()
    assert page.evaluate("JB.stats.lastAlarm") == {"critical": True, "times": 6, "audio": "running"}  # and it sounded
    banner.click()  # takes the operator to it
    expect(banner).to_be_hidden()
    expect(card).to_have_class(re.compile(r"\bselected\b"))
    expect(card).not_to_have_class(re.compile(r"\bunseen\b"))
    page.close()


def rms_dbfs(pcm: bytes) -> float:
    samples = memoryview(pcm).cast("h")
    energy = sum(s * s for s in samples) / max(1, len(samples))
    return 10 * math.log10(energy / 32768**2) if energy else -120.0


def test_guard_holds_talk_and_the_call_is_archived_transcribed_and_dispatched(live: LiveService, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True)
    page = context.new_page()
    log_in(page, live.url, "guard-huaniao", "/guard")
    expect(page.locator("#ptt")).to_be_enabled()
    expect(page.locator("#channel")).to_have_value("ch-market")  # the guard's own radio channel
    before = len(live.call(live.service.archive.list, "ch-market"))

    hold(page, "#ptt", CHROMIUM_LEAD_S + 3.9 + 1.0)  # c009 is 3.9 s long
    expect(page.locator("#ptt-state")).to_contain_text("已发送", timeout=10_000)

    newest = live.wait("the utterance archived", lambda: len(live.service.archive.list("ch-market")) > before
                       and live.service.archive.list("ch-market")[0])
    utterance_id = newest.id
    live.wait("its transcript", lambda: live.service.transcripts.get(utterance_id))
    incident = live.wait("the medical incident", lambda: next(iter(incidents(live, "medical")), None))
    assert incident.place_name == "万寿路花鸟市场" and incident.priority == "critical"
    assert utterance_id in incident.utterance_ids and "g-huaniao" in incident.assigned

    # the alert comes back to this guard's page, and the guard acknowledges it like an MQTT ack
    alert = page.locator(".alert", has_text="急救")
    expect(alert).to_be_visible(timeout=15_000)
    expect(alert).to_contain_text("万寿路花鸟市场")
    page.wait_for_timeout(300)
    screenshot(page, "guard")
    alert.get_by_role("button", name="收到").click()
    expect(alert.locator(".mine")).to_contain_text("已确认")
    assert live.call(live.service.dispatch.dispatcher.store.get, incident.id).status == "acknowledged"
    context.close()


def test_a_guard_pressing_on_a_busy_channel_is_told_who_is_talking(live: LiveService, browser: Browser) -> None:
    token = httpx.post(f"{live.url}/api/login", json={"name": "patrol", "password": PASSWORD}).json()["token"]
    url = live.url.replace("http", "ws") + "/api/ptt?channel=ch-market"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5) as talking:
        assert "ready" in talking.recv(timeout=5)  # the officer holds the channel
        context = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True)
        page = context.new_page()
        log_in(page, live.url, "guard-huaniao", "/guard")
        box = page.locator("#ptt").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()  # held: told at once, and the button no longer says 正在讲话
        expect(page.locator("#ptt-state")).to_have_text("频道占用：巡逻一组 正在讲话，请稍后再按")
        expect(page.locator("#ptt")).to_have_text("按住讲话")
        page.mouse.up()
        page.wait_for_timeout(300)
        expect(page.locator("#ptt-state")).to_have_text("频道占用：巡逻一组 正在讲话，请稍后再按")  # kept after release
        talking.send("end")
        context.close()


def test_auditor_finds_a_call_by_a_two_character_term_and_plays_it(
    live: LiveService, browser: Browser, calls_audio: Path
) -> None:
    utterance_id = fight_reported(live, calls_audio)
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    log_in(page, live.url, "aud", "/auditor")
    page.fill("#q", "打架")
    page.click("#search button[type=submit]")
    row = page.locator(f"tr[data-utterance='{utterance_id}']")
    expect(row).to_be_visible(timeout=10_000)
    expect(row.locator("mark").first).to_be_visible()  # the match is highlighted
    expect(row.locator("mark").first).to_have_text("打架")  # in the characters decoded from the pinyin...
    expect(row.locator(".py.heard")).to_contain_text("měi shí")  # ...with the syllables heard under them
    expect(page.locator("#export")).to_have_attribute("href", "/api/search/export.csv?q=%E6%89%93%E6%9E%B6")

    row.locator("button.play").click()
    expect(row.locator("button.play")).to_have_text("■ 停止", timeout=10_000)  # the browser is playing the audio
    page.click("#search button[type=submit]")  # refreshes the audit log view too
    expect(page.locator("#audit tr", has_text=utterance_id).first).to_be_visible()
    verified = httpx.get(f"{live.url}/api/archive/verify", cookies={c["name"]: c["value"] for c in page.context.cookies()})
    assert verified.status_code == 200
    ok = verified.json().get("report", verified.json()).get("ok")
    expect(page.locator("#archive-verify")).to_contain_text("档案完整" if ok else "处问题")  # the verdict, as it is
    screenshot(page, "auditor")
    with connect(live.config.storage.database) as db:
        actions = {r["action"] for r in db.execute("SELECT action FROM audit_log WHERE user_name = 'aud'")}
    assert {"search", "playback"} <= actions
    page.close()


def test_roles_refuse_what_they_should(live: LiveService, browser: Browser) -> None:
    base = live.url

    def token(name: str) -> str:
        response = httpx.post(f"{base}/api/login", json={"name": name, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return response.json()["token"]

    guard, auditor = token("guard-huaniao"), token("aud")
    as_guard, as_auditor = ({"Authorization": f"Bearer {t}"} for t in (guard, auditor))
    assert httpx.get(f"{base}/api/incidents").status_code == 401
    assert httpx.get(f"{base}/api/search", params={"q": "打架"}, headers=as_guard).status_code == 403  # a guard cannot search
    assert httpx.get(f"{base}/api/console/state", headers=as_guard).status_code == 403
    assert httpx.post(f"{base}/api/incidents/INC-x/status", json={"status": "resolved"}, headers=as_auditor).status_code == 403
    assert httpx.post(f"{base}/api/incidents/INC-x/dispatch", json={"responders": ["g-huaniao"]},
                      headers=as_auditor).status_code == 403  # an auditor cannot dispatch
    assert httpx.post(f"{base}/api/me/ack", json={"incident_id": "INC-x"}, headers=as_auditor).status_code == 403
    ws_base = base.replace("http", "ws")
    for path, headers in (("/api/events", as_guard), ("/api/ptt", as_auditor), ("/api/channels/ch-market/listen", as_guard),
                          ("/api/channels/ch-market/talk", as_guard), ("/api/ptt", {})):
        with pytest.raises(InvalidStatus):  # refused at the handshake
            ws_connect(f"{ws_base}{path}", additional_headers=headers, open_timeout=5).close()

    # in the browser: a guard who opens the console is told it is not theirs, and sees no data
    page = browser.new_page()
    log_in(page, base, "guard-huaniao", "/guard")
    page.goto(f"{base}/console")
    expect(page.locator(".refused")).to_contain_text("无权使用本页面")
    assert page.locator(".incident").count() == 0
    page.close()


def test_login_page_refuses_a_wrong_password(live: LiveService, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 900, "height": 600})
    page.goto(f"{live.url}/console")
    page.wait_for_url(f"{live.url}/login?next=%2Fconsole")
    page.fill("input[name=name]", "op")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator("#error")).to_have_text("用户名或密码错误")
    screenshot(page, "login")
    page.close()


def test_a_call_shows_partials_replaced_by_its_final_and_on_its_channel_card(
    live: LiveService, browser: Browser, calls_audio: Path
) -> None:
    page = console(browser, live)
    # every line the feed ever adds, in order: a partial must be replaced in place by its final, never added to
    page.evaluate("""() => { window.added = [];
      new MutationObserver((changes) => { for (const c of changes) for (const n of c.addedNodes)
        if (n.classList && n.classList.contains("line")) added.push([n.dataset.utterance, n.classList.contains("partial")]);
      }).observe(document.getElementById("feed"), { childList: true }); }""")
    strip = page.locator("#ch-ch-market canvas.spark")
    calls_before = int(re.search(r"(\d+) 次通话", strip.get_attribute("title")).group(1))
    before = len(live.call(live.service.archive.list, "ch-market"))

    live.talk("ch-market", calls_audio / "c016.wav").join()  # 幸福路五金市场东门一切正常, at the pace of speech
    utterance_id = live.wait("the call archived", lambda: len(live.service.archive.list("ch-market")) > before
                             and live.service.archive.list("ch-market")[0]).id  # fmt: skip
    final = page.locator(f".line[data-utterance='{utterance_id}']:not(.partial)")
    expect(final).to_be_visible(timeout=60_000)
    expect(page.locator(f".line[data-utterance='{utterance_id}']")).to_have_count(1)
    shown = [partial for utterance, partial in page.evaluate("added") if utterance == utterance_id]
    assert shown[0] is True and shown[-1] is False and shown.count(False) == 1, shown  # partials, then the final
    # the channel card says what was said last, and its activity strip counts the call
    expect(page.locator("#ch-ch-market .said")).to_have_text(final.locator(".text").inner_text())
    expect(strip).to_have_attribute("title", re.compile(f"近 60 分钟 {calls_before + 1} 次通话"))
    page.close()


def test_the_map_draws_tiles_from_the_configured_url(live: LiveService, browser: Browser) -> None:
    page = console(browser, live)
    tile = page.locator("#map img.leaflet-tile-loaded").first
    expect(tile).to_be_visible()
    assert re.search(r"/static/vendor/leaflet/images/layers\.png\?z=\d+&x=\d+&y=\d+$", tile.get_attribute("src"))
    page.close()


def test_a_guard_is_alarmed_by_a_new_alert(live: LiveService, browser: Browser, calls_audio: Path) -> None:
    fight_reported(live, calls_audio)
    fight = incidents(live, "fight")[0]
    page = browser.new_page(viewport={"width": 390, "height": 780})
    log_in(page, live.url, "guard-huaniao", "/guard")
    expect(page.locator("#conn")).to_have_text("在线")
    alarms = page.evaluate("JB.stats.alarms")

    # the operator sends this guard to the fight too: the guard's page alerts him at once
    operator = httpx.post(f"{live.url}/api/login", json={"name": "op", "password": PASSWORD}).json()["token"]
    sent = httpx.post(f"{live.url}/api/incidents/{fight.id}/dispatch", json={"responders": [*fight.assigned, "g-huaniao"]},
                      headers={"Authorization": f"Bearer {operator}"})  # fmt: skip
    assert sent.status_code == 200, sent.text
    alert = page.locator(f".alert.fresh[data-incident='{fight.id}']")
    expect(alert).to_be_visible(timeout=10_000)
    expect(alert).to_contain_text("打架斗殴")
    page.wait_for_function(f"JB.stats.alarms > {alarms}")
    assert page.evaluate("JB.stats.lastAlarm") == {"critical": False, "times": 4, "audio": "running"}
    page.close()


def test_an_officer_plays_the_call_of_an_incident_he_is_sent_to_and_no_other(
    live: LiveService, browser: Browser, calls_audio: Path
) -> None:
    utterance_id = fight_reported(live, calls_audio)
    fight = incidents(live, "fight")[0]
    operator = httpx.post(f"{live.url}/api/login", json={"name": "op", "password": PASSWORD}).json()["token"]
    sent = httpx.post(f"{live.url}/api/incidents/{fight.id}/dispatch", json={"responders": [*fight.assigned, "p-patrol-1"]},
                      headers={"Authorization": f"Bearer {operator}"})  # fmt: skip
    assert sent.status_code == 200, sent.text
    start = time.time() - 5
    routine = Utterance(new_utterance_id(start), "ch-market", start, start + 1, bytes(16000 * 2))  # reported nothing
    live.call(live.service.archive.store, routine)

    page = browser.new_page(viewport={"width": 390, "height": 780})
    log_in(page, live.url, "patrol", "/guard")
    play = page.locator(f".alert[data-incident='{fight.id}'] button.play[data-utterance='{utterance_id}']")
    play.click()
    expect(play).to_have_text("■ 停止", timeout=10_000)  # the officer hears the caller of the incident he is sent to
    assert page.request.get(f"{live.url}/api/utterances/{routine.id}/audio").status == 403  # but not the rest
    page.close()


def test_pages_say_sound_is_off_until_they_are_clicked(live: LiveService, browser: Browser) -> None:
    for user, path in (("guard-huaniao", "/guard"), ("op", "/console")):
        page = browser.new_page(viewport={"width": 390, "height": 780} if path == "/guard" else None)
        log_in(page, live.url, user, path)
        hint = page.locator("#sound-hint")
        expect(hint).to_be_hidden()  # sound is on
        # as a browser keeps it before the page is clicked (headless Chromium never does: it allows sound at once)
        page.evaluate("JB.alarmContext().suspend()")
        expect(hint).to_be_visible()
        hint.click()
        expect(hint).to_be_hidden()
        assert page.evaluate("JB.alarmContext().state") == "running"
        page.close()


def hear(live: LiveService, said: str) -> Incident:
    """A call on ch-market as the recogniser delivers it (asr/live.py): archived (its audio spoken by espeak-ng), its
    transcript `said` stored and on the live feed, then handed to the dispatcher; returns what the dispatcher made."""
    pcm = EspeakVoice().synthesise(said)
    start = time.time() - len(pcm) / 32000
    utterance = Utterance(new_utterance_id(start), "ch-market", start, time.time(), pcm)
    transcript = Transcript(said, "", engine="vosk", conf=0.8)

    async def heard() -> Incident | None:
        service = live.service
        service.archive.store(utterance)
        service.archive.set_status(utterance.id, "transcribed")  # (or the archive sweep would recognise it again)
        service.transcripts.save(utterance.id, utterance.channel, utterance.start, transcript)
        service.bus.publish("transcript", {"channel": utterance.channel, "utterance_id": utterance.id,
                                           "start": utterance.start, **transcript.to_dict()})  # fmt: skip
        return await service.dispatch.dispatcher.handle(transcript, utterance)

    incident = asyncio.run_coroutine_threadsafe(heard(), live.loop).result(30)
    assert incident is not None, f"no incident from {said!r}"
    return incident


def test_operator_confirms_an_unsure_report_and_the_alert_reaches_the_broker(
    live: LiveService, browser: Browser, calls_audio: Path
) -> None:
    """Never silent about a report: a call with report words only (what a garbled type word leaves) waits in the
    待确认 queue, alerting nobody; the operator hears it, clicks a type, and the ranked responders' alerts go out.
    Another is dismissed (忽略, two clicks)."""
    said, drill = "长乐公园有情况，请求支援", "东方花园有情况，请求支援"
    alerts: list[dict] = []
    mqtt = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="browser-test-phones")
    mqtt.on_message = lambda client, userdata, message: alerts.append(json.loads(message.payload))
    mqtt.connect(live.config.broker.host, live.config.broker.port)
    mqtt.subscribe("jingbao/alerts/#", qos=1)
    mqtt.loop_start()
    try:
        fight_reported(live, calls_audio)  # a certain report in the list too, for the screenshot
        page = console(browser, live)
        incident = hear(live, said)
        other = hear(live, drill)
        assert incident.status == other.status == "needs_confirmation" and incident.assigned == other.assigned == ()

        queue = page.locator("#confirm-queue")
        entry = queue.locator(f".incident[data-incident='{incident.id}']")
        expect(entry).to_be_visible(timeout=10_000)
        expect(queue.locator(f".incident[data-incident='{other.id}']")).to_be_visible()
        expect(page.locator("#confirm-count")).to_have_text(str(queue.locator(".incident").count()))
        expect(entry).to_contain_text("类型不明")
        expect(entry).to_contain_text("长乐公园")
        expect(entry).to_contain_text("市场保安")  # its channel
        expect(entry).to_contain_text(said)
        expect(entry.locator("button.type")).to_have_count(10)  # the common types, one click each
        expect(entry.get_by_role("button", name="忽略")).to_be_visible()
        assert not page.locator(f"#incidents .incident[data-incident='{incident.id}']").count()  # not in the list yet
        entry.locator("button.play").click()
        expect(entry.locator("button.play")).to_have_text("■ 停止", timeout=10_000)  # its audio plays
        expect(entry.locator("button.play")).to_have_text("▶ 播放", timeout=10_000)  # to its end
        page.wait_for_timeout(5000)  # the new entries' flashing is over
        # the test's stand-in tiles hidden (a style property: the pages' CSP refuses an added <style>, as it should)
        page.locator("#map .leaflet-tile-pane").evaluate("pane => { pane.style.display = 'none'; }")
        screenshot(page, "console-confirm")
        assert not [a for a in alerts if a["incident_id"] in (incident.id, other.id)]  # nobody alerted while they wait

        # 忽略 takes a second click; then the entry goes, and the incident is closed as 已忽略
        dismissed = queue.locator(f".incident[data-incident='{other.id}']")
        dismissed.get_by_role("button", name="忽略").click()
        expect(dismissed.locator("button.dismiss")).to_have_text("确认忽略？")
        assert live.call(live.service.dispatch.dispatcher.store.get, other.id).status == "needs_confirmation"
        dismissed.locator("button.dismiss").click()
        expect(dismissed).to_be_hidden(timeout=10_000)
        expect(page.locator(f"#incidents .incident[data-incident='{other.id}'] .tag", has_text="已忽略")).to_be_visible()

        entry.get_by_role("button", name="打架斗殴").click()
        expect(entry).to_be_hidden(timeout=10_000)  # it leaves the queue
        expect(queue).to_be_hidden()  # empty
        card = page.locator(f"#incidents .incident[data-incident='{incident.id}']")
        expect(card).to_contain_text("打架斗殴")
        expect(card.locator(".tag", has_text="已派警")).to_be_visible()
        expect(card.locator(".responders li").first).to_contain_text("米")
        sent = live.wait("the alerts on the broker", lambda: [a for a in alerts if a["incident_id"] == incident.id])
        assert {a["type"] for a in sent} == {"fight"} and sent[0]["place"] == "长乐公园" and sent[0]["text"] == said
        store = live.service.dispatch.dispatcher.store
        timeline = live.call(store.timeline, incident.id)
        assert [(e.actor, e.detail["type"]) for e in timeline if e.kind == "confirmed"] == [("op", "fight")]
        assert [(e.actor, e.detail["to"]) for e in live.call(store.timeline, other.id) if e.kind == "status"] == [
            ("op", "dismissed")
        ]
        assert not [a for a in alerts if a["incident_id"] == other.id]
        page.close()
    finally:
        mqtt.loop_stop()
        mqtt.disconnect()


def test_a_fault_shows_on_its_channel_card_at_once(live: LiveService, browser: Browser, calls_audio: Path) -> None:
    page = console(browser, live)
    card = page.locator("#ch-ch-market")
    expect(card).not_to_have_class(re.compile(r"\bfault\b"))
    # a real archive fault: where today's ch-market folder should be there is a file (as after a disk error)
    folder = live.service.archive.archive_dir / time.strftime("%Y/%m/%d", time.gmtime()) / "ch-market"
    aside = folder.with_name("ch-market.aside")
    if folder.exists():
        folder.rename(aside)
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder")
    try:
        live.play_call("ch-market", calls_audio / "c016.wav")
        # shown by the fault event itself: no channel state follows a failed archive
        expect(card).to_have_class(re.compile(r"\bfault\b"), timeout=30_000)
        expect(card.locator(".faults")).to_contain_text("could not be archived")
    finally:
        folder.unlink()
        if aside.exists():
            aside.rename(folder)
        assert live.call(live.service.archive.retry_held) == 1  # the held call is archived after all
    page.close()


def test_what_a_channel_refused_shows_on_its_card(live: LiveService, browser: Browser) -> None:
    assert live.call(live.channel("ch-market").source.push, b"\x00\x01\x02") is False  # odd length: no 16-bit audio
    page = console(browser, live)
    state = page.locator("#ch-ch-market .state")
    expect(state).to_contain_text("拒收")
    expect(state).to_have_attribute("title", re.compile("odd length 3"))
    page.close()


def test_metrics_of_a_service_that_recognises_and_dispatches(live: LiveService, calls_audio: Path) -> None:
    """The collector /metrics serves, on a service with recognition and dispatch (no browser): every family there."""
    fight_reported(live, calls_audio)
    text = live.call(lambda: generate_latest(registry_of(live.service)).decode())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip
    assert samples["jingbao_channel_utterances_total", (("channel", "ch-command"),)] >= 1
    assert samples["jingbao_alerts_sent_total", ()] >= 1
    assert ("jingbao_recognition_pending", (("channel", "ch-market"),)) in samples
    for name in ("jingbao_recognition_open_streams", "jingbao_recognition_waiting_audio_seconds",
                 "jingbao_recognition_refused_total", "jingbao_recognition_failed_total", "jingbao_outbox_pending"):  # fmt: skip
        assert (name, ()) in samples, name
    assert {dict(labels)["status"] for name, labels in samples if name == "jingbao_incidents_open"} == set(OPEN)


def registry_of(service: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    return registry


def test_a_guard_goes_off_duty_from_his_page(live: LiveService, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 780})
    log_in(page, live.url, "guard-huaniao", "/guard")
    off_duty = page.locator("#duty button", has_text="下班")
    try:
        off_duty.click()
        expect(off_duty).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#duty-state")).to_have_text("当前状态：下班")
        assert live.call(live.service.dispatch.board.status, "g-huaniao") == "off_duty"
    finally:
        live.call(live.service.dispatch.board.set_status, "g-huaniao", "available")  # on duty for whatever runs next
    page.close()



def test_a_provisional_alert_is_marked_on_both_pages_and_its_retraction_reaches_the_guard(
    live: LiveService, browser: Browser
) -> None:
    """Raised from the partial transcripts while the caller still talks: 初报 on the console's card and the guard's
    alert; the final turns out routine, the guard's page shows the alert withdrawn and the console the incident
    retracted (已撤销)."""
    live.call(live.service.dispatch.board.set_status, "g-huaniao", "available")
    said, start = "万寿路花鸟市场有人拿刀砍人，请求支援", time.time()
    uid = new_utterance_id(start)
    guard = browser.new_page(viewport={"width": 390, "height": 780})
    log_in(guard, live.url, "guard-huaniao", "/guard")
    expect(guard.locator("#conn")).to_have_text("在线")
    page = console(browser, live)

    async def talking() -> None:
        for n in range(1, len(said) + 1):
            heard = RecognisedUtterance(uid, "ch-market", start, time.time())
            await live.service.dispatch.dispatcher.handle_partial(Transcript(said[:n], "", engine="vosk", partial=True), heard)

    asyncio.run_coroutine_threadsafe(talking(), live.loop).result(30)
    raised = live.wait("the provisional incident", lambda: live.service.dispatch.dispatcher.store.provisional_for(uid))
    card = page.locator(f".incident[data-incident='{raised.id}']")
    expect(card.locator(".tag.provisional")).to_have_text("初报·未确认最终文本", timeout=10_000)
    alert = guard.locator(f".alert.provisional[data-incident='{raised.id}']")
    expect(alert).to_be_visible(timeout=10_000)
    expect(alert).to_contain_text("初报")
    screenshot(guard, "guard-provisional")

    final = Transcript("万寿路花鸟市场一切正常", "", engine="vosk", conf=0.8)
    ended = asyncio.run_coroutine_threadsafe(
        live.service.dispatch.dispatcher.handle(final, Utterance(uid, "ch-market", start, time.time(), b"")), live.loop
    ).result(30)
    assert ended.id == raised.id and ended.status == "retracted"
    withdrawn = guard.locator(f".alert.withdrawn[data-incident='{raised.id}']")
    expect(withdrawn).to_contain_text("已撤销：最终文本不是报警", timeout=10_000)
    expect(guard.locator(f".alert.provisional[data-incident='{raised.id}']")).to_have_count(0)
    expect(card.locator(".tag", has_text="已撤销")).to_be_visible(timeout=10_000)
    expect(card.locator(".tag.provisional")).to_have_count(0)
    guard.close()
    page.close()


def test_a_guard_holds_sos_and_the_console_alarms_until_an_operator_acknowledges(live: LiveService, browser: Browser) -> None:
    """SOS / 一键报警: a tap does nothing; held 1.5 s it raises a critical SOS at the phone's position (the grid's chief
    alerted) and opens a hot microphone whose call is recognised and joins the SOS; the console's red banner and tone
    last across a reload until an operator acknowledges it."""
    store = live.service.dispatch.dispatcher.store
    context = browser.new_context(viewport={"width": 390, "height": 780}, is_mobile=True, has_touch=True,
                                  geolocation={"latitude": 34.2705, "longitude": 108.9902, "accuracy": 15},
                                  permissions=["geolocation"])  # fmt: skip
    guard = context.new_page()
    log_in(guard, live.url, "guard-huaniao", "/guard")
    page = console(browser, live)
    button, state = guard.locator("#sos"), guard.locator("#sos-state")
    expect(button).to_be_enabled()

    button.click()  # a tap, as in a pocket
    expect(state).to_contain_text("需按住 1.5 秒")
    guard.wait_for_timeout(2000)
    assert incidents(live, "sos") == []

    box = button.bounding_box()
    guard.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    guard.mouse.down()
    expect(button).to_have_class(re.compile(r"\bholding\b"))  # the bar fills while it is held
    guard.wait_for_timeout(1800)
    guard.mouse.up()
    expect(state).to_contain_text("现场录音中", timeout=10_000)
    incident = live.wait("the SOS", lambda: next(iter(incidents(live, "sos")), None))
    assert (incident.priority, incident.place_name) == ("critical", "万寿路花鸟市场")
    assert (incident.lat, incident.lon) == (34.2705, 108.9902)  # the phone's own fix
    assert "p-xu-zhen" in incident.assigned and "g-huaniao" not in incident.assigned  # the grid's chief; not himself

    alarm = page.locator(f"#sos-banner .sos-alarm[data-incident='{incident.id}']")
    expect(alarm).to_contain_text("万寿路花鸟市场保安", timeout=10_000)
    expect(alarm).to_contain_text("手机一键报警")
    deadline = time.monotonic() + 10
    while (page.evaluate("JB.stats.sosTones") or 0) < 2 and time.monotonic() < deadline:  # (wait_for_function evals:
        page.wait_for_timeout(200)  # the pages' CSP refuses that)
    assert page.evaluate("JB.stats.sosTones") >= 2  # the tone repeats
    screenshot(guard, "sos-phone")
    page.locator("#map .leaflet-tile-pane").evaluate("pane => { pane.style.display = 'none'; }")  # the stand-in tiles
    screenshot(page, "sos-console")
    page.reload()
    expect(alarm).to_be_visible(timeout=10_000)  # a reload does not silence it

    # the hot microphone heard the fake microphone's call (c009): recognised, and part of the SOS, not a report apart
    expect(state).to_contain_text("现场录音", timeout=20_000)
    heard = live.wait("the hot microphone's call", lambda: store.get(incident.id).utterance_ids, timeout=90)
    for uid in heard:
        assert [i.id for i in live.call(store.with_utterance, uid)] == [incident.id]

    alarm.get_by_role("button", name="确认收到").click()
    expect(page.locator("#sos-banner")).to_be_hidden()
    page.reload()
    expect(page.locator("#conn")).to_have_text("实时连接")
    expect(page.locator("#sos-banner")).to_be_hidden()
    assert [e.actor for e in live.call(store.timeline, incident.id) if e.kind == "sos_acknowledged"] == ["op"]
    context.close()
    page.close()
