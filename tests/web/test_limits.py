"""Oversized request bodies are refused with 413 and the app keeps serving."""

from __future__ import annotations

from bridge.web.app import MAX_BODY_BYTES


def test_a_declared_oversized_body_is_413(login):
    client = login("admin")
    response = client.post("/api/users", content=b"x" * (MAX_BODY_BYTES + 1), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.get("/api/me").status_code == 200


def test_a_chunked_oversized_body_is_413(fresh_app):
    from fastapi.testclient import TestClient

    def chunks():
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    client = TestClient(fresh_app)
    response = client.post("/api/login", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert client.get("/healthz").status_code == 200
