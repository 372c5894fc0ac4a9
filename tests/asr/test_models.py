"""Finding the speech models, and `jingbao model fetch` against a local HTTP server (there is no internet here)."""

from __future__ import annotations

import functools
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from asr.config import AsrConfig
from asr.model_fetch import FetchError, fetch
from asr.models import SHERPA, TTS, VOSK, cache_dir, locate, locate_all
from bridge.cli import main as jingbao


def fake_vosk(root: Path) -> Path:
    """A directory with the Vosk model layout (tiny placeholder files: locating checks the layout only)."""
    model = root / VOSK.dir_name
    for alts in VOSK.required:
        path = model / alts[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder")
    return model


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """(base URL, the folder it serves, the paths requested so far)."""
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/models", root, requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def good_sherpa_archive(tmp_path_factory: pytest.TempPathFactory, sherpa_model: Path) -> bytes:
    return sherpa_archive(sherpa_model, tmp_path_factory.mktemp("archive")).read_bytes()


def sherpa_archive(sherpa_model: Path, into: Path, tamper: str | None = None) -> Path:
    """The upstream archive's shape, built from the real model files (so the pinned sha256 values apply)."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / SHERPA.archive
    with tarfile.open(archive, "w:bz2") as tar:
        for name in [*SHERPA.sha256, "MODEL-README.md"]:
            data = (sherpa_model / name).read_bytes()
            if name == tamper:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            info = tarfile.TarInfo(f"{SHERPA.dir_name}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def vosk_zip(into: Path, skip: str | None = None) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = into / VOSK.archive
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for alts in VOSK.required:
            if alts[0] != skip:
                z.writestr(f"{VOSK.dir_name}/{alts[0]}", b"x" * 1000)
    return archive


def serve(www: Path, name: str, data: bytes) -> None:
    (www / "models").mkdir(exist_ok=True)
    (www / "models" / name).write_bytes(data)


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


# --- locating ----------------------------------------------------------------------------------------------


def test_search_order_config_then_env_then_models_folder_then_cache(tmp_path: Path) -> None:
    configured, env_dir, models, cache = (fake_vosk(tmp_path / n) for n in ("cfg", "env", "models", "xdg/jingbao/models"))
    env = {"JINGBAO_VOSK_MODEL": str(env_dir), "JINGBAO_MODELS": str(models.parent), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert cache_dir(env) == cache.parent
    assert locate(VOSK, configured, env).path == configured
    found = locate(VOSK, None, env)
    assert (found.path, found.source) == (env_dir, "env JINGBAO_VOSK_MODEL")
    del env["JINGBAO_VOSK_MODEL"]
    assert locate(VOSK, None, env).path == models
    del env["JINGBAO_MODELS"]
    found = locate(VOSK, None, env)
    assert (found.path, found.source) == (cache, "cache")


def test_shared_models_folder_holds_the_sherpa_model_on_this_machine(tmp_path: Path, sherpa_model: Path) -> None:
    found = locate(SHERPA, None, {"HOME": str(tmp_path), "JINGBAO_SHARED": str(sherpa_model.parent.parent)})
    assert found.found and found.path == sherpa_model and found.source == "shared models"


def test_a_wrong_explicit_path_is_reported_not_skipped(tmp_path: Path) -> None:
    fake_vosk(tmp_path / "xdg/jingbao/models")  # a good copy in the cache must not hide the configured mistake
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    status = locate_all(AsrConfig(vosk_model=tmp_path / "nope", sherpa_model=tmp_path / "xdg"), env)
    assert not status.vosk.found and not status.sherpa.found
    message = status.missing_message()
    assert message is not None
    for option in ("asr.vosk_model", "JINGBAO_VOSK_MODEL", "jingbao model fetch --vosk", "asr.sherpa_model",
                   "JINGBAO_SHERPA_MODEL", "jingbao model fetch --sherpa", str(tmp_path / "nope"), "missing tokens.txt"):
        assert option in message


def test_model_list_cli_names_the_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("JINGBAO_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv("JINGBAO_SHERPA_MODEL", str(fake_vosk(tmp_path)))  # a Vosk layout is not a sherpa model
    assert jingbao(["model", "list"]) == 1
    out, err = capsys.readouterr()
    assert "vosk: not found" in out and "sherpa: not found" in out
    assert "jingbao model fetch --vosk" in err and "missing tokens.txt" in err


# --- fetching ----------------------------------------------------------------------------------------------


def test_fetch_sherpa_checks_pinned_hashes_and_unpacks_atomically(tmp_path: Path, good_sherpa_archive: bytes, server) -> None:
    base, www, requests = server
    serve(www, SHERPA.archive, good_sherpa_archive)
    dest = tmp_path / "cache"
    seen: list[tuple[int, int | None]] = []
    path = fetch(SHERPA, dest, base, progress=lambda done, total: seen.append((done, total)))
    assert path == dest / SHERPA.dir_name
    assert (path / "encoder-epoch-12-avg-2-chunk-16-left-64.int8.onnx").stat().st_size == 3990821
    assert leftovers(dest) == [SHERPA.dir_name]  # no work folder, no archive left behind
    size = (www / "models" / SHERPA.archive).stat().st_size
    assert seen[-1] == (size, size) and len(seen) > 1
    # a good copy is kept: no second download
    assert fetch(SHERPA, dest, base) == path and len(requests) == 1


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_a_corrupt_download_is_rejected_and_leaves_nothing(tmp_path: Path, sherpa_model: Path, good_sherpa_archive: bytes,
                                                          server, damage: str) -> None:
    base, www, _ = server
    if damage == "truncated":
        serve(www, SHERPA.archive, good_sherpa_archive[: len(good_sherpa_archive) // 2])
    else:
        sherpa_archive(sherpa_model, www / "models", tamper="tokens.txt")
    dest = tmp_path / "cache"
    with pytest.raises(FetchError, match="pinned sha256" if damage == "tampered" else "corrupt or truncated"):
        fetch(SHERPA, dest, base)
    assert leftovers(dest) == []


def test_fetch_vosk_zip_checks_crc_and_layout(tmp_path: Path, server) -> None:
    base, www, _ = server
    dest = tmp_path / "cache"
    archive = vosk_zip(www / "models", skip="am/final.mdl")
    with pytest.raises(FetchError, match=r"missing am/final\.mdl"):
        fetch(VOSK, dest, base)
    assert leftovers(dest) == []
    data = bytearray(vosk_zip(www / "models").read_bytes())
    data[200] ^= 0xFF  # inside the first member's compressed data
    archive.write_bytes(bytes(data))
    with pytest.raises(FetchError):
        fetch(VOSK, dest, base)
    assert leftovers(dest) == []
    vosk_zip(www / "models")
    assert (fetch(VOSK, dest, base) / "am/final.mdl").is_file()


def test_fetch_replaces_a_broken_earlier_copy(tmp_path: Path, server) -> None:
    base, www, _ = server
    vosk_zip(www / "models")
    dest = tmp_path / "cache"
    broken = fake_vosk(dest)
    (broken / "am/final.mdl").unlink()
    assert (fetch(VOSK, dest, base) / "am/final.mdl").read_bytes() == b"x" * 1000
    assert leftovers(dest) == [VOSK.dir_name]


def test_fetch_cli_with_unreachable_server_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str], server) -> None:
    base, _, _ = server  # serves nothing: 404
    assert jingbao(["model", "fetch", "--vosk", "--dest", str(tmp_path / "d"), "--base-url", base]) == 1
    assert "404" in capsys.readouterr().err
    assert leftovers(tmp_path / "d") == []


def test_fetch_cli_installs_from_a_mirror(tmp_path: Path, good_sherpa_archive: bytes, server, capsys) -> None:
    base, www, _ = server
    serve(www, SHERPA.archive, good_sherpa_archive)
    dest = tmp_path / "d"
    assert jingbao(["model", "fetch", "--sherpa", "--dest", str(dest), "--base-url", base]) == 0
    assert f"installed at {dest / SHERPA.dir_name}" in capsys.readouterr().err
    assert (dest / SHERPA.dir_name / "tokens.txt").is_file()


def test_fetch_tts_downloads_the_release_files_one_by_one_and_checks_the_model(tmp_path: Path) -> None:
    """`jingbao model fetch --tts` from a local mirror (file://) of kokoro-onnx's release: the model (pinned sha256)
    and the voices file land in the cache's model folder, where the service finds them."""
    shared = locate(TTS, env={"JINGBAO_MODELS": str(tmp_path / "none")})
    if not shared.found or shared.path is None:
        pytest.fail(f"test material missing: {shared.message()}")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "kokoro-v1.0.int8.onnx").symlink_to(shared.path / "kokoro-v1.0.int8.onnx")
    (mirror / "voices-v1.0.bin").symlink_to(shared.path / "voices-zh-v1.0.bin")  # the release's name for it
    dest = tmp_path / "cache"
    assert jingbao(["model", "fetch", "--tts", "--dest", str(dest), "--base-url", mirror.as_uri()]) == 0
    assert sorted(p.name for p in (dest / TTS.dir_name).iterdir()) == ["kokoro-v1.0.int8.onnx", "voices-v1.0.bin"]
    assert locate(TTS, env={"JINGBAO_MODELS": str(dest)}).path == dest / TTS.dir_name
    assert leftovers(dest) == [TTS.dir_name]


def test_a_tts_model_that_is_not_the_release_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "kokoro-v1.0.int8.onnx").write_bytes(b"not the model")
    (mirror / "voices-v1.0.bin").write_bytes(b"voices")
    with pytest.raises(FetchError, match="pinned sha256"):
        fetch(TTS, tmp_path / "cache", mirror.as_uri())
    assert leftovers(tmp_path / "cache") == []
