"""Tasks with sign-off over HTTP against the real service (its own thread and port, real SQLite, a real mosquitto
locked down with the ACL `jingbao broker setup` makes, each phone logged in with its own account): an operator's task
reaches each recipient's phone and the radio, sign-offs and feedback show on the console, reminders go out at the
deadline (and after a restart), a dispute moves through its lifecycle, and whoever may not is refused. No speech
recognition here (asr: none); the voice note is tested with the real recogniser in test_tasks_browser.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import yaml

from asr.transcript import Transcript
from bridge.db import connect
from bridge.events import Utterance, new_utterance_id
from dispatch.gazetteer import load_jurisdiction
from dispatch.tasks import announcements, resolve
from tests.support.broker import JURISDICTION, Mosquitto, free_port
from tests.support.web import as_user, wait_for
from tests.web.browser import REPO, LiveService, start_live

MORE_USERS = {"guard-piju": ("guard", "g-piju"), "guard-gaoqiao": ("guard", "g-gaoqiao"),
              "chief-xu": ("officer", "p-xu-zhen")}  # fmt: skip
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200) + b"\xff\xd9"  # a JPEG's opening and end (the server reads no more)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path_factory.mktemp("tasks-broker"), jurisdiction=JURISDICTION)
    server.start()
    yield server
    server.stop()


def write_config(tmp: Path, broker: Mosquitto, *, transmit: bool = True) -> Path:
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp / "data"), "audio_format": "wav"},
        "broker": broker.service_config(),
        "asr": {"engine": "none"},
        "web": {"port": free_port()},
        "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "web"}},
                     {"id": "ch-police", "name": "警长", "source": {"type": "web"}}],
    }  # fmt: skip
    if transmit:  # the market channel transmits (into files): a task for its guards is spoken there
        config["channels"][0]["tx"] = {"output": {"type": "file", "directory": str(tmp / "tx")}}
        # by espeak-ng (no voice model there): fast, and what is said is all this test checks
        config["dispatch"] = {"alerts": {"announce_model": str(tmp / "no-voice-model")}}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path




@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto) -> Iterator[LiveService]:
    service = start_live(write_config(tmp_path_factory.mktemp("tasks"), broker), MORE_USERS)
    yield service
    service.stop()


class Phones:
    """Responders' phones on the broker, each logged in as itself and subscribed to its own task topic (and to
    whatever `also` it tries besides); `received[responder]`: the payloads it got."""

    def __init__(self, broker: Mosquitto, ids: list[str], also: dict[str, list[str]] | None = None) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {rid: [] for rid in ids}
        self._clients = []
        for rid in ids:
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=rid)
            client.username_pw_set(**broker.login(rid))
            client.on_message = lambda c, u, m, rid=rid: self.received[rid].append(json.loads(m.payload))
            client.connect(broker.host, broker.port)
            for topic in [f"jingbao/tasks/{rid}", *(also or {}).get(rid, [])]:
                client.subscribe(topic, qos=1)
            client.loop_start()
            self._clients.append(client)
        time.sleep(0.3)  # subscribed before anything is sent

    def of(self, rid: str, task_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.received[rid] if m["id"] == task_id and kind in (None, m["kind"])]

    def close(self) -> None:
        for client in self._clients:
            client.loop_stop()
            client.disconnect()


@pytest.fixture
def phones(broker: Mosquitto) -> Iterator[Callable[..., Phones]]:
    made: list[Phones] = []

    def connect_phones(ids: list[str], also: dict[str, list[str]] | None = None) -> Phones:
        made.append(Phones(broker, ids, also))
        return made[-1]

    yield connect_phones
    for p in made:
        p.close()


def send(live: LiveService, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{live.url}/api/tasks", json={"deadline_s": 600} | body, headers=as_user(live, "op"))
    assert response.status_code == 200, response.text
    return response.json()


def console_task(live: LiveService, task_id: str) -> dict[str, Any]:
    tasks = httpx.get(f"{live.url}/api/tasks", headers=as_user(live, "op")).json()["tasks"]
    return next(t for t in tasks if t["id"] == task_id)


def by_id(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in task["recipients"]}


# --- recipients and what is said on the air (no service needed) ----------------------------------------------------


def test_recipients_are_resolved_from_the_jurisdiction() -> None:
    j = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
    assert resolve(j, ["unit:派出所巡逻组"]) == ["p-patrol-1", "p-patrol-2"]
    assert resolve(j, ["grid:yongding-sq", "person:g-piju"]) == [  # the grid's people, each once, in registry order
        "p-xu-zhen", "p-patrol-2", "g-gaoqiao", "g-piju", "g-huaniao", "g-dfyey", "g-dfyb", "v-yeshi", "v-yongding"]
    assert set(resolve(j, ["group:police"])) == {"p-zhan-zhengyou", "p-li-xuyang", "p-xu-zhen", "p-zhao-jing", "p-ou-yong",
                                                 "p-patrol-1", "p-patrol-2"}  # fmt: skip
    assert len(resolve(j, ["all"])) == len(j.responders)
    assert resolve(j, ["grid:yongding-sq"], "dispute") == ["p-xu-zhen", "p-patrol-2"]  # its chief first
    with pytest.raises(ValueError, match="person:nobody"):
        resolve(j, ["person:g-piju", "person:nobody"])
    with pytest.raises(ValueError, match="one grid"):
        resolve(j, ["person:p-xu-zhen"], "dispute")


def test_what_is_said_on_each_channel() -> None:
    j = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
    everyone = [r.id for r in j.responders]
    said = announcements(j, everyone, "各单位注意：今晚八点开始夜间巡逻。")
    assert said["ch-market"] == "各单位请注意，今晚八点开始夜间巡逻，收到请签收"  # the operator's own call said once
    assert set(said) == {r.channel for r in j.responders}
    two = announcements(j, ["g-piju", "p-xu-zhen"], "注意防火")  # 注意 that is the message itself stays
    assert two == {"ch-market": "皮具饰品城保安请注意，注意防火，收到请签收",
                   "ch-police": "永定社区警长请注意，注意防火，收到请签收"}


# --- over the web, with the broker --------------------------------------------------------------------------------


def test_a_task_reaches_each_recipients_phone_and_the_console_shows_who_signed(
    live: LiveService, phones: Callable[..., Phones]
) -> None:
    ph = phones(["g-huaniao", "g-piju", "g-gaoqiao"], also={"g-gaoqiao": ["jingbao/tasks/#", "jingbao/tasks/g-piju"]})
    task = send(live, text="各单位注意：今晚八点开始夜间巡逻", targets=["person:g-huaniao", "person:g-piju", "unit:派出所巡逻组"])
    assert (task["signed"], task["total"], task["status"]) == (0, 4, "open")
    assert set(by_id(task)) == {"g-huaniao", "g-piju", "p-patrol-1", "p-patrol-2"}
    assert set(task["announced"]) == {"ch-market", "ch-police"}  # the recipients' radio channels
    for rid in ("g-huaniao", "g-piju"):
        [sent] = wait_for(f"the task on {rid}'s phone", lambda rid=rid: ph.of(rid, task["id"], "task"))
        assert sent["text"] == "各单位注意：今晚八点开始夜间巡逻" and sent["mine"]["id"] == rid
        assert "recipients" not in sent  # a phone is told of its own sign-off, not of the others'
    time.sleep(0.3)
    assert ph.received["g-gaoqiao"] == []  # the ACL: another's task topic (or all of them) is not his to read

    guard = as_user(live, "guard-huaniao")
    mine = httpx.get(f"{live.url}/api/me/tasks", headers=guard).json()["tasks"]
    assert [t["id"] for t in mine if t["id"] == task["id"]] == [task["id"]] and mine[0]["mine"]["signed_at"] is None
    signed = httpx.post(f"{live.url}/api/me/tasks/{task['id']}/sign", headers=guard)
    assert signed.status_code == 200 and signed.json()["mine"]["signed_at"] is not None
    again = httpx.post(f"{live.url}/api/me/tasks/{task['id']}/sign", headers=guard)  # the first sign-off stands
    assert again.status_code == 200 and again.json()["mine"]["signed_at"] == signed.json()["mine"]["signed_at"]
    reported = httpx.post(f"{live.url}/api/me/tasks/{task['id']}/feedback", json={"text": "收到，八点到岗"},
                          headers=as_user(live, "guard-piju"))  # fmt: skip
    assert reported.status_code == 200 and reported.json()["mine"]["signed_at"] is not None  # reporting back signs it

    seen = console_task(live, task["id"])
    assert (seen["signed"], seen["total"], seen["overdue"]) == (2, 4, False)
    people = by_id(seen)
    assert people["p-patrol-1"]["signed_at"] is None and people["p-patrol-1"]["overdue"] is False
    assert [(f["kind"], f["text"]) for f in people["g-piju"]["feedback"]] == [("text", "收到，八点到岗")]
    with connect(live.config.storage.database) as db:
        audited = [r["user_name"] for r in db.execute("SELECT * FROM audit_log WHERE action = 'task' AND target = ?",
                                                       (task["id"],))]  # fmt: skip
    assert audited == ["op"]

    # spoken on the market channel, which transmits here (into a file)
    market = live.service.radios.transmitters["ch-market"]
    wait_for("the announcement on the air", lambda: f"announce {task['id']}" == live.call(market.state)["current"],
             timeout=30)  # fmt: skip

    # cancelled: the phones are told, it leaves their list, nothing can be signed any more
    assert httpx.post(f"{live.url}/api/tasks/{task['id']}/cancel", headers=as_user(live, "op")).status_code == 200
    wait_for("the cancellation on the phone", lambda: ph.of("g-piju", task["id"], "cancelled"))
    assert task["id"] not in [t["id"] for t in httpx.get(f"{live.url}/api/me/tasks", headers=guard).json()["tasks"]]
    assert httpx.post(f"{live.url}/api/me/tasks/{task['id']}/sign", headers=as_user(live, "patrol")).status_code == 409


def test_who_may_send_sign_and_report_and_what_is_refused(live: LiveService) -> None:
    base, op, guard = live.url, as_user(live, "op"), as_user(live, "guard-huaniao")
    body = {"text": "检查消防通道", "targets": ["person:g-piju"], "deadline_s": 600}
    assert httpx.post(f"{base}/api/tasks", json=body).status_code == 401
    for who in ("guard-huaniao", "aud"):  # only operators send tasks and see them all
        assert httpx.post(f"{base}/api/tasks", json=body, headers=as_user(live, who)).status_code == 403
        assert httpx.get(f"{base}/api/tasks", headers=as_user(live, who)).status_code == 403
    for bad, says in (({"targets": ["person:g-piju", "grid:mars"]}, "grid:mars"), ({"targets": []}, ""),
                      ({"deadline_s": 0}, ""), ({"text": ""}, ""), ({"kind": "party"}, ""),
                      ({"kind": "dispute"}, "one grid"), ({"incident_id": "INC-none"}, "INC-none")):  # fmt: skip
        refused = httpx.post(f"{base}/api/tasks", json=body | bad, headers=op)
        assert refused.status_code in (404, 422) and says in refused.text, (bad, refused.text)
    task = send(live, **body)
    tid = task["id"]
    assert httpx.post(f"{base}/api/me/tasks/{tid}/sign", headers=op).status_code == 403  # an operator signs nothing
    # not his task: nothing to sign, report on or even learn of
    for path, kwargs in (("sign", {}), ("feedback", {"json": {"text": "x"}})):
        assert httpx.post(f"{base}/api/me/tasks/{tid}/{path}", headers=guard, **kwargs).status_code == 404
    assert httpx.post(f"{base}/api/me/tasks/TASK-none/sign", headers=guard).status_code == 404
    assert httpx.post(f"{base}/api/tasks/{tid}/steps", json={"stage": "调处"}, headers=op).status_code == 409  # no dispute
    assert httpx.post(f"{base}/api/tasks/TASK-none/cancel", headers=op).status_code == 404
    assert httpx.post(f"{base}/api/me/tasks/{tid}/feedback", json={"text": ""}, headers=as_user(live, "guard-piju")
                      ).status_code == 422  # fmt: skip


def test_photos_and_voice_notes_are_checked_stored_and_served_only_to_those_allowed(live: LiveService) -> None:
    base, piju = live.url, as_user(live, "guard-piju")
    tid = send(live, text="拍一张消防通道的照片", targets=["person:g-piju", "person:g-huaniao"])["id"]
    url = f"{base}/api/me/tasks/{tid}/photo"
    sent = httpx.post(url, params={"text": "通道畅通"}, content=JPEG, headers=piju | {"Content-Type": "image/jpeg"})
    assert sent.status_code == 200, sent.text
    [photo] = sent.json()["mine"]["feedback"]
    assert (photo["kind"], photo["text"], photo["has_file"]) == ("photo", "通道畅通", True)
    file_url = f"{base}/api/tasks/{tid}/feedback/{photo['id']}/file"
    served = httpx.get(file_url, headers=as_user(live, "op"))
    assert served.status_code == 200 and served.content == JPEG and served.headers["content-type"] == "image/jpeg"
    assert httpx.get(file_url, headers=piju).content == JPEG  # his own
    for other in ("guard-huaniao", "aud"):  # a fellow recipient's, or an auditor: not theirs
        assert httpx.get(file_url, headers=as_user(live, other)).status_code in (403, 404)
    stored = list((live.config.storage.data_dir / "tasks" / tid).iterdir())
    assert [p.suffix for p in stored] == [".jpg"]  # named by the server

    for content, kind, status in ((b"hello", "text/plain", 415), (JPEG, "image/png", 422), (b"", "image/jpeg", 422),
                                  (JPEG, "", 415), (b"\xff\xd8\xff" + bytes(1_000_001), "image/jpeg", 413),
                                  (b"RIFF\x00\x00\x00\x00WAVE", "image/webp", 422)):  # fmt: skip
        refused = httpx.post(url, content=content, headers=piju | {"Content-Type": kind})
        assert refused.status_code == status, (kind, refused.status_code, refused.text)
    voice = f"{base}/api/me/tasks/{tid}/voice"
    assert httpx.post(voice, content=b"x", headers=piju | {"Content-Type": "video/mp4"}).status_code == 415
    off = httpx.post(voice, content=b"RIFF", headers=piju | {"Content-Type": "audio/wav"})
    assert off.status_code == 503 and "recognition is off" in off.text  # this service recognises nothing
    assert len(console_task(live, tid)["recipients"][0]["feedback"]) == 1  # nothing of the refused ones kept


def test_unsigned_recipients_are_reminded_when_the_deadline_passes(live: LiveService, phones: Callable[..., Phones]) -> None:
    ph = phones(["g-huaniao", "g-piju"])
    piju = as_user(live, "guard-piju")  # logged in first: a login takes a while on purpose (argon2)
    task = send(live, text="清点灭火器数量", targets=["person:g-huaniao", "person:g-piju"], deadline_s=3, announce=False)
    assert task["announced"] == []
    assert httpx.post(f"{live.url}/api/me/tasks/{task['id']}/sign", headers=piju).status_code == 200
    assert time.time() < task["deadline"]  # signed in time (else the machine is too busy for this test to mean much)
    [reminder] = wait_for("the reminder", lambda: ph.of("g-huaniao", task["id"], "reminder"), timeout=8)
    assert reminder["mine"]["reminders"] == 1
    time.sleep(0.5)
    assert ph.of("g-piju", task["id"], "reminder") == []  # he signed in time
    seen = console_task(live, task["id"])
    people = by_id(seen)
    assert seen["overdue"] is True
    assert people["g-huaniao"]["overdue"] is True and people["g-huaniao"]["reminded_at"] is not None
    assert people["g-piju"]["overdue"] is False and people["g-piju"]["reminded_at"] is None
    # reminded once by the service; an operator may remind again
    again = httpx.post(f"{live.url}/api/tasks/{task['id']}/remind", headers=as_user(live, "op")).json()
    assert again["reminded"] == ["g-huaniao"]
    assert len(wait_for("the second reminder", lambda: ph.of("g-huaniao", task["id"], "reminder")[1:])) == 1
    late = httpx.post(f"{live.url}/api/me/tasks/{task['id']}/sign", headers=as_user(live, "guard-huaniao")).json()
    assert late["mine"]["late"] is True and late["mine"]["overdue"] is False


def test_a_dispute_pushed_to_its_grid_officer_goes_through_its_lifecycle(
    live: LiveService, phones: Callable[..., Phones]
) -> None:
    ph = phones(["p-xu-zhen"])
    now = time.time()
    heard = Utterance(new_utterance_id(now), "ch-market", now - 3, now, b"")
    said = Transcript("美食街有两家商户因为摊位吵起来了", "", engine="vosk", conf=0.9)
    incident = asyncio.run_coroutine_threadsafe(live.service.dispatch.dispatcher.handle(said, heard), live.loop).result(10)
    assert incident is not None and incident.type == "dispute" and incident.place_id == "meishijie"
    task = send(live, kind="dispute", text="美食街商户摊位纠纷，请调处", incident_id=incident.id, announce=False)
    assert [t["key"] for t in task["targets"]] == ["grid:yongding-sq"]  # the grid of 美食街, where it is
    assert set(by_id(task)) == {"p-xu-zhen", "p-patrol-2"} and task["stage"] == "发现"
    assert [(s["stage"], s["actor"]) for s in task["steps"]] == [("发现", "op")]
    wait_for("the dispute on the chief's phone", lambda: ph.of("p-xu-zhen", task["id"], "task"))

    base, chief = live.url, as_user(live, "chief-xu")
    steps = f"{base}/api/tasks/{task['id']}/steps"
    assert httpx.post(steps, json={"stage": "调处"}, headers=as_user(live, "guard-huaniao")).status_code == 404  # not his
    due = time.time() + 3
    mediated = httpx.post(steps, json={"stage": "调处", "note": "双方同意按原摊位经营", "follow_up_at": due}, headers=chief)
    assert mediated.status_code == 200, mediated.text
    assert (mediated.json()["stage"], mediated.json()["follow_up_at"]) == ("调处", due)
    assert httpx.post(steps, json={"stage": "发现"}, headers=chief).status_code == 409  # never back
    assert httpx.post(steps, json={"stage": "和解"}, headers=chief).status_code == 422
    assert httpx.post(steps, json={"stage": "跟踪", "follow_up_at": time.time() - 60}, headers=chief).status_code == 422
    wait_for("the follow-up reminder", lambda: ph.of("p-xu-zhen", task["id"], "follow_up"), timeout=8)
    assert console_task(live, task["id"])["follow_up_due"] is True
    for stage, note in (("跟踪", "三天后回看"), ("联动", "市场管理方到场"), ("回访", "双方满意")):
        done = httpx.post(steps, json={"stage": stage, "note": note}, headers=chief if stage != "联动" else as_user(live, "op"))
        assert done.status_code == 200, done.text
    closed = console_task(live, task["id"])
    assert (closed["status"], closed["stage"], closed["follow_up_at"]) == ("closed", "回访", None)  # 回访, no further date
    assert [(s["stage"], s["actor"]) for s in closed["steps"]] == [
        ("发现", "op"), ("调处", "chief-xu"), ("跟踪", "chief-xu"), ("联动", "op"), ("回访", "chief-xu")]
    assert httpx.post(steps, json={"stage": "回访"}, headers=chief).status_code == 409  # closed
    timeline = [e.kind for e in live.call(live.service.dispatch.dispatcher.store.timeline, incident.id)]
    assert timeline.count("task") == 1 and timeline.count("dispute_step") == 4  # on the incident's timeline too


def test_reminders_due_while_the_service_was_down_go_out_when_it_starts(
    tmp_path: Path, broker: Mosquitto, phones: Callable[..., Phones]
) -> None:
    ph = phones(["g-huaniao"])
    service = start_live(write_config(tmp_path, broker, transmit=False), MORE_USERS)
    try:
        early = send(service, text="早班交接", targets=["person:g-huaniao"], deadline_s=1, announce=False)
        # due after 1 s; a busy machine may take seconds more (a run beside a CPU hog lost its MQTT link here once)
        wait_for("the first reminder", lambda: ph.of("g-huaniao", early["id"], "reminder"), timeout=15)
        later = send(service, text="晚班交接", targets=["person:g-huaniao"], deadline_s=5, announce=False)
    finally:
        service.stop()
    assert time.time() < later["deadline"]  # stopped before it fell due (else the machine is too busy for this test)
    time.sleep(max(0.0, later["deadline"] - time.time()) + 0.5)  # it falls due while nobody runs
    assert ph.of("g-huaniao", later["id"], "reminder") == []
    # the same data, a new port (the old may linger)
    service = start_live(write_config(tmp_path, broker, transmit=False), MORE_USERS)
    try:
        [reminder] = wait_for("the reminder after the restart", lambda: ph.of("g-huaniao", later["id"], "reminder"))
        assert reminder["mine"]["reminders"] == 1
        time.sleep(0.5)
        assert len(ph.of("g-huaniao", early["id"], "reminder")) == 1  # the one reminded before is not reminded again
    finally:
        service.stop()
