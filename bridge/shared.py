"""Where the material that is never committed lives: speech models, recordings, the demo calls (`../shared`).

Looked for, in order: `JINGBAO_SHARED`; `shared/` beside this checkout; `shared/` beside the repository this checkout
was cloned from, when that is a local folder (`git clone . /tmp/x` on this machine still finds the models and audio).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def shared_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("JINGBAO_SHARED"):
        return Path(env["JINGBAO_SHARED"])
    beside = REPO.parent / "shared"
    if beside.exists():
        return beside
    origin = _local_origin()
    if origin is not None and (origin.parent / "shared").exists():
        return origin.parent / "shared"
    return beside  # absent: callers say what is missing and where it was looked for


@cache
def _local_origin() -> Path | None:
    """The folder this checkout was cloned from, if it was cloned from a local path (not a URL)."""
    try:
        url = subprocess.run(
            ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    url = url.removeprefix("file://")
    if not url or "://" in url or ":" in url.split("/")[0]:  # http(s)://, ssh://, git@host:path
        return None
    path = Path(url)
    return path.resolve() if path.is_dir() else None
