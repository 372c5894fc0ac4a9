"""`jingbao model fetch`: download an official model archive (or a release's loose files), check it, and unpack it
atomically into the cache.

Integrity: the sherpa-onnx files are compared with sha256 values pinned in `asr.models.SHERPA`. For the Vosk zip no
trusted hash was available offline, so it is checked by the zip's own CRCs and the model's expected layout.
Atomicity: everything happens in a hidden work folder inside the destination (same file system) and the model
directory appears under its final name by one rename, so a failed or interrupted fetch leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from asr.models import ModelSpec, cache_dir, sha256_file

logger = logging.getLogger(__name__)

BASE_URL_ENV = "JINGBAO_MODEL_BASE_URL"  # serve both archives from elsewhere (a mirror, or a test server)
CHUNK = 1 << 16

Progress = Callable[[int, int | None], None]  # (bytes received so far, total bytes when the server says)


class FetchError(Exception):
    """The model could not be downloaded, or what was downloaded is not a good copy; nothing was installed."""


def archive_url(
    spec: ModelSpec, base_url: str | None = None, env: Mapping[str, str] | None = None, file: str | None = None
) -> str:
    env = os.environ if env is None else env
    base = base_url or env.get(BASE_URL_ENV) or spec.official_base_url
    return f"{base.rstrip('/')}/{file or spec.archive}"


def verify(spec: ModelSpec, model_dir: Path) -> list[str]:
    """Layout problems plus pinned-hash mismatches of an unpacked model; empty when it is a good copy."""
    problems = spec.problems(model_dir)
    for name, expected in spec.sha256.items():
        path = model_dir / name
        if path.is_file() and sha256_file(path) != expected:
            problems.append(f"{name} does not have the pinned sha256 (corrupt or a different version)")
    return problems


def fetch(spec: ModelSpec, dest: Path | None = None, base_url: str | None = None, progress: Progress | None = None,
          timeout: float = 60.0) -> Path:
    """Install `spec` into `dest` (default: the model cache) and return the model directory.

    A good copy already there is kept (no download). Raises FetchError, leaving `dest` as it was.
    """
    dest = dest or cache_dir()
    target = dest / spec.dir_name
    if target.exists() and not verify(spec, target):
        logger.info("%s already installed at %s", spec.dir_name, target)
        return target
    url = archive_url(spec, base_url)
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{spec.kind}-", dir=dest))
    try:
        model = work / "unpacked" / spec.dir_name
        if spec.files:
            model.mkdir(parents=True)
            for name in spec.files:
                _download(archive_url(spec, base_url, file=name), model / name, progress, timeout)
        else:
            archive = work / spec.archive
            _download(url, archive, progress, timeout)
            _unpack(archive, work / "unpacked")
        problems = verify(spec, model)
        if problems:
            raise FetchError(f"{url} is not a good copy of {spec.dir_name}: {'; '.join(problems)}")
        if target.exists():  # an incomplete or corrupt earlier copy: move it aside, it is deleted with `work`
            target.rename(work / "replaced")
        model.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("%s installed at %s", spec.dir_name, target)
    return target


def _download(url: str, path: Path, progress: Progress | None, timeout: float) -> None:
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, path.open("wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while chunk := response.read(CHUNK):
                out.write(chunk)
                received += len(chunk)
                if progress:
                    progress(received, total)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise FetchError(f"cannot download {url}: {e}") from e
    if total is not None and received != total:
        raise FetchError(f"download of {url} was cut short: {received} of {total} bytes")


def _unpack(archive: Path, into: Path) -> None:
    try:
        if archive.suffix == ".zip":
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()  # CRC of every member: the zip's own integrity check
                if bad is not None:
                    raise FetchError(f"{archive.name}: member {bad} is corrupt (CRC mismatch)")
                z.extractall(into)  # zipfile drops absolute paths and '..' components itself
        else:
            with tarfile.open(archive) as t:
                t.extractall(into, filter="data")  # refuses links and paths leaving `into`
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise FetchError(f"{archive.name} is not a readable archive (corrupt or truncated download): {e}") from e
