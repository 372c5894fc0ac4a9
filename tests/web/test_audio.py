"""Playback of archived audio: content type, ranges, and no way out of the archive."""

from __future__ import annotations

import pytest

from tests.web.conftest import archive_utterance


@pytest.fixture(scope="module")
def archived(service):
    return archive_utterance(service, "u-audio-1", "ch-market", 100)


def test_the_archived_file_is_streamed_with_its_type_and_ranges(login, archived):
    client = login("auditor")
    whole = client.get("/api/utterances/u-audio-1/audio")
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
    assert whole.content == archived.read_bytes() and whole.content[:4] == b"RIFF"
    part = client.get("/api/utterances/u-audio-1/audio", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == archived.read_bytes()[100:200]
    assert login("officer").get("/api/utterances/u-audio-1/audio").status_code == 200


TRAVERSALS = [
    "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%252F..%252Fetc%252Fpasswd",
    "....//....//etc/passwd", "..\\..\\etc\\passwd", "%2Fetc%2Fpasswd", "/etc/passwd", "..", ".", "%00", "u-audio-1%00.wav",
    "u-audio-1/../../../../etc/passwd", "archive%2F..%2F..%2Fjingbao.db", "jingbao.db", "~root", "%c0%ae%c0%ae%c0%af",
]  # fmt: skip


@pytest.mark.parametrize("evil", TRAVERSALS)
def test_path_traversal_finds_nothing(login, archived, evil):
    response = login("auditor").get(f"/api/utterances/{evil}/audio")
    assert response.status_code in (404, 400, 405), response.status_code
    assert b"root:" not in response.content and b"SQLite format" not in response.content


def test_unknown_id_is_404(login):
    assert login("auditor").get("/api/utterances/u-never/audio").status_code == 404


def test_a_tampered_row_pointing_outside_the_data_directory_is_not_served(service, login, tmp_path):
    archive_utterance(service, "u-tampered", "ch-market", 200)
    secret = tmp_path / "secret.wav"
    secret.write_bytes(b"RIFF secret")
    conn = service.archive._conn  # the archive's own connection: what a tamperer with database access would edit
    with conn:
        conn.execute("UPDATE utterances SET path = ? WHERE id = 'u-tampered'", (f"../../../../../../{secret}",))
    response = login("auditor").get("/api/utterances/u-tampered/audio")
    assert response.status_code == 404 and b"secret" not in response.content
