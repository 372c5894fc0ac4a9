"""Tasks with sign-off in a real browser against the real service (real on-board recogniser, mosquitto, SQLite;
headless Chromium whose microphone plays c009): the operator sends a task from the console's 任务 panel, the guard
signs it off and reports back from his phone page in words, with a photo and with a voice note the recogniser writes
down, and the console shows who has and has not signed, the overdue and reminded, a dispute's stage. Screenshots
docs/screenshots/tasks-console.png and tasks-phone.png."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from asr.transcript import Transcript
from bridge.events import Utterance, new_utterance_id
from tests.support.wav import wave_bytes
from tests.web.browser import (
    CHROMIUM_LEAD_S,
    CSP_VIOLATIONS,
    PASSWORD,
    LiveService,
    chromium,
    hold,
    log_in,
    recognising_service,
    screenshot,
)

pytestmark = pytest.mark.slow

TEXT = "各单位注意：今晚八点开始夜间巡逻"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, sherpa_model: Path) -> Iterator[LiveService]:
    with recognising_service(tmp_path_factory.mktemp("tasks-browser"), sherpa_model) as live:
        yield live


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A camera-sized photo (ffmpeg's test card), for the page to shrink and send."""
    path = tmp_path / "photo.jpg"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=2000x1500:rate=1", "-frames:v", "1",
                    str(path)], check=True)  # fmt: skip
    return path


def api(live: LiveService, path: str, body: dict[str, Any], user: str = "op") -> dict[str, Any]:
    token = httpx.post(f"{live.url}/api/login", json={"name": user, "password": PASSWORD}).json()["token"]
    response = httpx.post(f"{live.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def card(page: Page, task_id: str, selector: str = ".task") -> Any:
    return page.locator(f"{selector}[data-task='{task_id}']")


def test_a_task_sent_from_the_console_is_signed_and_reported_on_from_the_phone(
    live: LiveService, fake_mic: Path, photo: Path
) -> None:
    # already there: a task the guard let pass its deadline (reminded), and a dispute his grid's chief is mediating
    overdue = api(live, "/api/tasks", {"text": "上报本单位消防器材检查情况", "targets": ["person:g-huaniao", "person:p-patrol-1"],
                                       "deadline_s": 1, "announce": False})  # fmt: skip
    dispute = api(live, "/api/tasks", {"kind": "dispute", "text": "美食街两家商户摊位纠纷", "targets": ["grid:yongding-sq"],
                                       "deadline_s": 3600, "announce": False})  # fmt: skip
    api(live, f"/api/tasks/{dispute['id']}/steps", {"stage": "调处", "note": "双方同意按原摊位经营",
                                                    "follow_up_at": time.time() + 3 * 86400})  # fmt: skip
    live.wait("the reminder at the deadline", lambda: live.service.dispatch.tasks.reminders_sent >= 2, timeout=10)
    now = time.time()
    said = Transcript("美食街有两家商户因为摊位吵起来了", "", engine="vosk", conf=0.9)
    quarrel = asyncio.run_coroutine_threadsafe(live.service.dispatch.dispatcher.handle(
        said, Utterance(new_utterance_id(now), "ch-market", now - 3, now, b"")), live.loop).result(10)  # fmt: skip
    assert quarrel.type == "dispute"

    CSP_VIOLATIONS.clear()
    with chromium(fake_mic) as browser:
        console = browser.new_page(viewport={"width": 1680, "height": 1000})
        log_in(console, live.url, "op", "/console")
        console.click("#tasks-toggle")
        form = console.locator("#task-form")
        form.locator("select[name=target]").select_option("person:g-huaniao")
        form.locator("select[name=target]").select_option("unit:派出所巡逻组")
        expect(console.locator("#task-chosen .chip")).to_have_count(2)
        form.locator("textarea[name=text]").fill(TEXT)
        form.locator("select[name=deadline]").select_option("30")
        form.locator("input[name=announce]").uncheck()  # (this service's channels would key up for it)
        form.get_by_role("button", name="发送任务").click()
        expect(console.locator("#task-error")).to_have_text("已发送")
        sent = next(t for t in live.call(live.service.dispatch.tasks.store.list) if t.text == TEXT)
        assert [r.responder_id for r in sent.recipients] == ["p-patrol-1", "p-patrol-2", "g-huaniao"]
        expect(card(console, sent.id).locator(".signed-count")).to_have_text("已签收 0/3")
        # a dispute reported on the radio, pushed from its incident card to the grid answering for its place
        console.locator(f"#inc-{quarrel.id}").get_by_role("button", name="推送网格").click()
        expect(form.locator("select[name=kind]")).to_have_value("dispute")
        expect(console.locator("#task-chosen")).to_have_text("警情所在网格的民警")
        form.get_by_role("button", name="发送任务").click()
        # "已发送" still shows from the first task: wait for the pushed one itself
        deadline = time.monotonic() + 10
        while not (pushed := next((t for t in live.call(live.service.dispatch.tasks.store.list)
                                   if t.incident_id == quarrel.id), None)):  # fmt: skip
            assert time.monotonic() < deadline, "the task pushed to the grid was not stored"
            time.sleep(0.1)
        assert (pushed.kind, pushed.targets) == ("dispute", ("grid:yongding-sq",))  # 美食街's grid: its police
        assert [r.responder_id for r in pushed.recipients] == ["p-xu-zhen", "p-patrol-2"]
        steps = card(console, pushed.id).locator(".step-form")
        steps.locator("select").select_option("调处")
        steps.get_by_placeholder("处置情况").fill("已电话联系双方")
        steps.get_by_role("button", name="记录进展").click()
        expect(card(console, pushed.id).locator(".stages li.current")).to_have_text("调处")
        assert [s.note for s in live.call(live.service.dispatch.tasks.store.steps, pushed.id)][-1] == "已电话联系双方"

        context = browser.new_context(viewport={"width": 390, "height": 1100}, is_mobile=True, has_touch=True)
        guard = context.new_page()
        log_in(guard, live.url, "guard-huaniao", "/guard")
        mine = card(guard, sent.id, ".my-task")
        expect(mine).to_contain_text(TEXT)
        # a voice note first: the fake microphone plays c009 (万寿路花鸟市场有人晕倒了，需要救护, 3.9 s) and 4 s of
        # silence over and over from the browser's start, so a press this long holds the whole call wherever it starts
        hold(guard, f".my-task[data-task='{sent.id}'] button.voice", CHROMIUM_LEAD_S + 2 * 3.9 + 4.0)
        expect(mine.locator(".state")).to_contain_text("语音已发送", timeout=30_000)
        expect(mine).to_contain_text("已签收")  # reporting back signs it off
        mine.locator("textarea").fill("收到，八点到岗")
        mine.get_by_role("button", name="文字反馈").click()
        expect(mine.locator(".mine-feedback li")).to_have_count(2)
        mine.locator("input[type=file]").set_input_files(str(photo))
        expect(mine.locator(".mine-feedback li")).to_have_count(3, timeout=10_000)
        late = card(guard, overdue["id"], ".my-task")
        late.get_by_role("button", name="签收（已逾期）").click()
        expect(late.locator(".signed")).to_contain_text("逾期")

        feedback = {f.kind: f for f in live.call(live.service.dispatch.tasks.store.feedback, sent.id)}
        assert set(feedback) == {"voice", "text", "photo"}
        assert "花鸟" in feedback["voice"].text  # written down by the recogniser (万寿路花鸟市场...)
        photo_file = live.config.storage.data_dir / "tasks" / feedback["photo"].file
        assert photo_file.read_bytes()[:3] == b"\xff\xd8\xff" and photo_file.stat().st_size <= 1_000_000

        # the console, live: who signed (and what he reported), who has not; the overdue one marked and reminded
        row = card(console, sent.id).locator("li[data-responder='g-huaniao']")
        expect(card(console, sent.id).locator(".signed-count")).to_have_text("已签收 1/3")
        expect(row.locator(".state")).to_contain_text("已签收")
        expect(row.locator(".fb.voice")).to_contain_text(feedback["voice"].text)
        expect(row.locator(".fb.text")).to_contain_text("收到，八点到岗")
        image = row.locator(".fb.photo img")
        expect(image).to_be_visible()
        deadline = time.monotonic() + 10  # (wait_for_function evaluates a string: the pages' CSP refuses that)
        while not image.evaluate("img => img.complete && img.naturalWidth") and time.monotonic() < deadline:
            console.wait_for_timeout(200)
        assert image.evaluate("img => img.naturalWidth") > 0  # served to the operator
        expect(card(console, sent.id).locator("li[data-responder='p-patrol-2'] .state")).to_have_text("未签收")
        old = card(console, overdue["id"])
        expect(old).to_have_class("task open overdue")
        expect(old.locator("li[data-responder='p-patrol-1']")).to_have_class("overdue")
        expect(old.locator("li[data-responder='p-patrol-1'] .reminded")).to_have_text("已提醒 1 次")
        expect(old.locator("li[data-responder='g-huaniao'] .late")).to_have_text("逾期签收")
        expect(card(console, dispute["id"]).locator(".stages li.current")).to_have_text("调处")

        auditor = browser.new_page(viewport={"width": 1400, "height": 900})  # the operator's actions are in the audit log
        log_in(auditor, live.url, "aud", "/auditor")
        expect(auditor.locator("#audit")).to_contain_text("发送任务")
        expect(auditor.locator("#audit")).to_contain_text("查看反馈附件")  # the photo the console showed him
        auditor.close()

        newest = api(live, "/api/tasks", {"text": "明早七点在派出所集合，参加防汛演练", "targets": ["group:guards"],
                                          "deadline_s": 7200, "announce": False})  # fmt: skip
        guard.reload()
        expect(card(guard, newest["id"], ".my-task").get_by_role("button", name="签收")).to_be_visible()
        expect(mine).to_contain_text("已签收")
        guard.locator("#my-tasks").evaluate("list => list.parentElement.scrollIntoView()")
        guard.wait_for_timeout(300)
        screenshot(guard, "tasks-phone")
        console.wait_for_timeout(300)
        screenshot(console, "tasks-console")
        context.close()
    assert not CSP_VIOLATIONS, "\n".join(CSP_VIOLATIONS)


def test_a_voice_note_that_is_no_audio_or_too_short_is_refused(live: LiveService) -> None:
    token = httpx.post(f"{live.url}/api/login", json={"name": "guard-huaniao", "password": PASSWORD}).json()["token"]
    task = api(live, "/api/tasks", {"text": "语音报告到岗情况", "targets": ["person:g-huaniao"], "deadline_s": 600,
                                    "announce": False})  # fmt: skip
    url = f"{live.url}/api/me/tasks/{task['id']}/voice"
    short = wave_bytes(bytes(16000 * 2 // 10))  # 0.1 s
    for body, says in ((b"RIFF not audio at all", "not audio"), (short, "lasts")):
        refused = httpx.post(url, content=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "audio/wav"})
        assert refused.status_code == 422 and says in refused.json()["detail"], refused.text
    assert live.call(live.service.dispatch.tasks.store.feedback, task["id"]) == []
