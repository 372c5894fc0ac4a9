"""Transcript search: 2-character terms, pinyin matching (also of pinyin-only transcripts), filters, highlighted
snippets, hostile queries, CSV export."""

from __future__ import annotations

import csv
import io
import re
import time

import pytest

from asr.transcript import Keyword
from bridge.web.search import SearchIndex
from bridge.web.search_text import analyze, parse_query
from dispatch.incidents import Incident, IncidentStore, Status
from tests.web.conftest import T0, add_transcript


@pytest.fixture(scope="module")
def transcripts(service):
    """A small archive of what the demo channels say; utterance ids name what each one is for."""
    add_transcript(service, "u-fight-text", "ch-market", 10, text="高桥大市场门口有人打架，请保安过去看看")
    add_transcript(service, "u-fight-pinyin", "ch-market", 20, pinyin="gao1 qiao2 you3 ren2 da3 jia4",
                   keywords=(Keyword("高桥大市场", "gaoqiao-market", 0.1, 0.9, 0.8),))  # fmt: skip
    add_transcript(service, "u-homophone", "ch-police", 30, text="大家注意，西光中学放学了")  # 大家 sounds like 打架
    add_transcript(service, "u-fire", "ch-police", 40, text="东郊农贸市场冒烟了，疑似着火")
    add_transcript(service, "u-theft", "ch-market", 50, text="电动车被偷了")
    add_transcript(service, "u-fight-old", "ch-police", -7200, text="昨天也有人打架")
    store = IncidentStore(service.db)
    store.create(Incident("INC-fight", "fight", "high", Status.DISPATCHED, T0 + 11, T0 + 11,
                          utterance_ids=("u-fight-text",), assigned=("g-market-01",)), actor="test")  # fmt: skip
    store.create(Incident("INC-fire", "fire", "critical", Status.REPORTED, T0 + 41, T0 + 41,
                          utterance_ids=("u-fire",), assigned=("chief-1",)), actor="test")  # fmt: skip


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["utterance_id"] for r in response.json()["results"]]


def test_a_two_character_term_is_found_in_text_and_in_pinyin_only_transcripts(login, transcripts):
    found = ids(login("auditor").get("/api/search", params={"q": "打架"}))
    # exact matches first (newest first), then what only sounds alike: the pinyin-only transcript and the homophone
    assert found[:2] == ["u-fight-text", "u-fight-old"]
    assert set(found[2:]) == {"u-fight-pinyin", "u-homophone"}
    assert "u-fire" not in found and "u-theft" not in found


def test_results_carry_highlighted_snippets_audio_url_and_incidents(login, transcripts):
    results = {r["utterance_id"]: r for r in login("auditor").get("/api/search", params={"q": "打架"}).json()["results"]}
    text = results["u-fight-text"]
    assert text["match"] == "exact" and "有人<mark>打架</mark>，" in text["snippet"]
    assert text["audio_url"] == "/api/utterances/u-fight-text/audio"
    assert text["incidents"][0] | {"id": "INC-fight", "type": "fight"} == text["incidents"][0]
    pinyin = results["u-fight-pinyin"]
    assert pinyin["match"] == "sounds_like" and pinyin["snippet_field"] == "pinyin"
    assert pinyin["snippet"].endswith("<mark>da3 jia4</mark>") and pinyin["keywords"] == ["高桥大市场"]


def test_pinyin_queries_and_keyword_labels(login, transcripts):
    client = login("auditor")
    assert set(ids(client.get("/api/search", params={"q": "da jia"}))) == {"u-fight-text", "u-fight-pinyin", "u-homophone",
                                                                         "u-fight-old"}  # fmt: skip
    assert "u-fight-pinyin" in ids(client.get("/api/search", params={"q": "dajia"}))
    # a pinyin-only transcript is found by the Chinese name of a keyword the on-board engine spotted
    assert "u-fight-pinyin" in ids(client.get("/api/search", params={"q": "高桥大市场"}))
    assert ids(client.get("/api/search", params={"q": "着火"})) == ["u-fire"]  # 3+ characters and 1 work too
    assert ids(client.get("/api/search", params={"q": "冒烟 疑似"})) == ["u-fire"]
    assert "u-fire" in ids(client.get("/api/search", params={"q": "烟"}))


def test_filters_channel_time_incident_type_and_responder(login, transcripts):
    client = login("auditor")
    assert ids(client.get("/api/search", params={"q": "打架", "channel": "ch-police"})) == ["u-fight-old", "u-homophone"]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(T0))  # naive ISO: the server's local time
    assert "u-fight-old" not in ids(client.get("/api/search", params={"q": "打架", "since": since}))
    assert ids(client.get("/api/search", params={"q": "打架", "until": T0})) == ["u-fight-old"]
    assert ids(client.get("/api/search", params={"q": "打架", "incident_type": "fight"})) == ["u-fight-text"]
    assert ids(client.get("/api/search", params={"incident_type": "fire"})) == ["u-fire"]  # no query: filters only
    assert ids(client.get("/api/search", params={"responder": "chief-1"})) == ["u-fire"]
    assert ids(client.get("/api/search", params={"q": "打架", "responder": "chief-1"})) == []


def test_a_retranscribed_utterance_is_reindexed(service, login, transcripts):
    add_transcript(service, "u-theft", "ch-market", 50, text="电瓶车被偷了")
    client = login("auditor")
    assert ids(client.get("/api/search", params={"q": "电瓶"})) == ["u-theft"]
    assert "u-theft" not in ids(client.get("/api/search", params={"q": "电动车"}))


HOSTILE = [
    '"', '""', '"打架', "打架*", "*", "NEAR(打架 斗殴)", "打架 OR 着火", "OR", "AND", "NOT", "-打架", "(打架", ")",
    "打架)", "'", "'; DROP TABLE transcripts; --", "1' OR '1'='1", "打架'; DELETE FROM audit_log; --", "words:打架",
    "{words pinyin}: 打架", "^打架", "打架 +", "\\", "%", "_", "\x00", "打\x00架", "😀", "Ａ＊", "da3 jia4 \"",
    "a" * 100, "打" * 100,
]  # fmt: skip


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_are_searched_literally_or_refused_with_400(login, transcripts, query):
    response = login("auditor").get("/api/search", params={"q": query})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["detail"]
    elif "打架" in query and not re.search("[A-Za-z]", query):
        assert "u-fight-text" in ids(response)  # the punctuation around the term was dropped, the term still found
    else:
        assert isinstance(response.json()["results"], list)  # words like NEAR and OR are searched as words


def test_hostile_queries_change_nothing(service, login, transcripts):
    before = service.db.execute("SELECT count(*) FROM transcripts").fetchone()[0]
    for query in HOSTILE:
        login("auditor").get("/api/search", params={"q": query})
    assert service.db.execute("SELECT count(*) FROM transcripts").fetchone()[0] == before
    assert login("auditor").get("/api/search", params={"q": "a" * 201}).status_code == 422  # over the parameter limit


def test_queries_become_quoted_tokens_only():
    exact, _ = parse_query('NEAR(打架 "x" OR y*)').expressions(SearchIndex.syntax)
    assert exact == '(words : "near") AND (words : "打架") AND (words : "x") AND (words : "or") AND (words : "y")'
    assert analyze("有人打架", "", ["美食街"]).words.split() == ["有", "人", "打", "架", "有人", "人打", "打架",
                                                             "美", "食", "街", "美食", "食街"]  # fmt: skip


def test_csv_export_has_the_results_and_defuses_formulas(service, login, transcripts):
    add_transcript(service, "u-formula", "ch-market", 60, text="=HYPERLINK(打架)")
    response = login("auditor").get("/api/search/export.csv", params={"q": "打架", "channel": "ch-market"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    assert response.text.startswith("\ufeff")
    rows = list(csv.DictReader(io.StringIO(response.text.removeprefix("\ufeff"))))
    by_id = {r["utterance_id"]: r for r in rows}
    assert set(by_id) == {"u-formula", "u-fight-text", "u-fight-pinyin"}
    assert by_id["u-fight-text"]["text"] == "高桥大市场门口有人打架，请保安过去看看"
    assert by_id["u-fight-text"]["incident_types"] == "fight" and by_id["u-fight-text"]["channel"] == "ch-market"
    assert by_id["u-fight-pinyin"]["pinyin"] == "gao1 qiao2 you3 ren2 da3 jia4"
    assert by_id["u-formula"]["text"] == "'=HYPERLINK(打架)"
