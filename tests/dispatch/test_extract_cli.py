"""`jingbao extract` as a user runs it: one call, JSON, stdin batches in order, pinyin input, bad jurisdiction."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from bridge.config import load_config
from bridge.db import connect
from dispatch.extract import Extractor, extract
from dispatch.gazetteer import load_jurisdiction
from dispatch.incidents import Incident, IncidentStore, Status

REPO = Path(__file__).resolve().parents[2]


def jingbao(*args: str, stdin: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], input=stdin, capture_output=True, text=True,
                          cwd=cwd, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})


def service_config(folder: Path, **sections: object) -> Path:
    """A service config at <folder>/config/demo.yaml: where `jingbao run` looks by default, seen from `folder`."""
    path = folder / "config" / "demo.yaml"
    path.parent.mkdir(parents=True)
    shutil.copy(REPO / "config" / "jurisdiction.yaml", path.parent / "places.yaml")
    body = {"jurisdiction": "places.yaml", "storage": {"data_dir": str(folder / "data")}, "broker": {"enabled": False},
            "channels": [{"id": "ch-market", "name": "市场保安", "source": {"type": "pipe"}}], **sections}
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def test_one_call_as_json() -> None:
    run = jingbao("extract", "高桥大市场皮具饰品城有人在店里闹事，要货款", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert {k: out["place"][k] for k in ("id", "name", "detail")} == {"id": "piju-city", "name": "皮具饰品城", "detail": None}
    assert set(out["place"]) >= {"id", "name", "detail", "lat", "lon", "confidence"}
    assert out["incident"]["type"] == "dispute" and out["incident"]["priority"] == "medium"
    assert [r["id"] for r in out["responders"]][:2] == ["g-piju", "g-gaoqiao"]
    assert all(set(r) >= {"id", "role", "distance_m"} for r in out["responders"])


def test_stdin_batch_keeps_order_and_reads_pinyin() -> None:
    lines = ["mei si jie you ren da jia", "收到，明白", "", "西光中学门口有可疑人员一直徘徊",
             "wan4 shou4 lu4 di4 tie3 zhan4 B kou3 you3 ren2 qiang3 bao1", "有人打架"]
    run = jingbao("extract", "-", stdin="\n".join(lines) + "\n")
    assert run.returncode == 0, run.stderr
    outs = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(outs) == len(lines)
    assert [o["place"]["id"] if o["place"] else None for o in outs] == [
        "meishijie", None, None, "xiguang-zhongxue", "wanshoulu-ditiezhan", None]
    assert [o["incident"]["type"] for o in outs] == ["fight", "none", "none", "suspicious", "robbery", "fight"]
    assert outs[4]["place"]["detail"] == "B口"
    assert outs[1]["responders"] == [] and outs[5]["location"] == "unknown"  # an incident with no place is kept


def test_readable_summary_and_bad_jurisdiction(tmp_path: Path) -> None:
    run = jingbao("extract", "西光建材市场有人持刀威胁")
    assert run.returncode == 0 and "西光建材市场" in run.stdout and "weapon / critical" in run.stdout
    bad = tmp_path / "j.yaml"
    bad.write_text("name: x\n", encoding="utf-8")
    run = jingbao("extract", "美食街有人打架", "--jurisdiction", str(bad))
    assert run.returncode == 2 and "invalid jurisdiction" in run.stderr and "Traceback" not in run.stderr


def test_extract_seam_takes_a_transcript_dict() -> None:
    jurisdiction = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
    transcript = {"text": "", "pinyin": "dong1 fang1 hua1 yuan2 san1 hao4 lou2 you3 jia1 bao4", "keywords": []}
    out = extract(transcript, jurisdiction)
    assert (out["place"]["id"], out["place"]["detail"], out["incident"]["type"]) == ("dongfang-huayuan", "3号楼", "domestic")


def test_an_extractor_for_a_channel_hears_its_places_more_readily() -> None:
    jurisdiction = load_jurisdiction(REPO / "config" / "jurisdiction.yaml")
    said = "ta1 shuo1 zhong1 fang1 you4 er2 yuan2 men2 kou3 you3 mo4 sheng1 ren2 pai1 zhao4"  # 东方幼儿园, head misheard
    assert Extractor(jurisdiction, channel="ch-school")(said)["place"]["id"] == "dongfang-youeryuan"
    assert Extractor(jurisdiction, channel="ch-market")(said)["place"] is None
    assert Extractor(jurisdiction)(said)["place"] is None


def test_audio_one_line_per_utterance(calls_audio: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really audio")
    run = jingbao("extract", "--audio", str(calls_audio / "c021.wav"), str(broken), "--json")
    assert run.returncode == 1 and "broken.wav" in run.stderr and "Traceback" not in run.stderr  # reported, others read
    (out,) = [json.loads(line) for line in run.stdout.splitlines()]  # c021 is one utterance: 西光建材市场有人持刀威胁
    assert out["file"] == str(calls_audio / "c021.wav") and 0 <= out["start"] < out["end"] <= 4.5
    assert out["engine"] == "sherpa" and "guang1" in out["pinyin"] and out["words"]
    assert (out["place"]["id"], out["incident"]["type"], out["incident"]["priority"]) == ("xiguang-jiancai", "weapon", "critical")
    assert out["responders"]


def test_text_or_audio_not_both() -> None:
    run = jingbao("extract", "美食街有人打架", "--audio", "x.wav")
    assert run.returncode == 2 and "either" in run.stderr


def test_config_gives_the_services_jurisdiction_and_rules(tmp_path: Path) -> None:
    config = service_config(tmp_path, dispatch={"responders": {"guards": 1, "police": 0},
                                                "lexicon": {"types": {"fire": {"terms": ["孔明灯"]}}}})
    for args in (("--config", str(config)), ()):  # explicit, or found where `jingbao run` looks by default
        run = jingbao("extract", "美食街有个孔明灯掉下来了", "--json", *args, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert (out["place"]["id"], out["incident"]["type"], len(out["responders"])) == ("meishijie", "fire", 1)
    plain = json.loads(jingbao("extract", "美食街有个孔明灯掉下来了", "--json", cwd=REPO / "tests").stdout)
    assert plain["incident"]["type"] != "fire"  # no service config there: the built-in lexicon only
    run = jingbao("extract", "美食街有人打架", "--config", str(tmp_path / "missing.yaml"))
    assert run.returncode == 2 and "cannot read" in run.stderr and "Traceback" not in run.stderr


def test_incidents_list_reads_the_services_default_config(tmp_path: Path) -> None:
    config = service_config(tmp_path)
    store = IncidentStore(connect(load_config(config).storage.database))
    store.create(Incident(id="INC-1", type="fight", priority="high", status=Status.REPORTED, created_at=1.7e9,
                          updated_at=1.7e9, place_name="美食街"), actor="dispatcher")
    run = jingbao("incidents", "list", "--json", cwd=tmp_path)  # no --config: the same file `jingbao run` would use
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["id"] for line in run.stdout.splitlines()] == ["INC-1"]
