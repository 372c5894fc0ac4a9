"""scripts/setup.sh --check: which Debian packages a machine still needs (what `make run` would install)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

SETUP = REPO / "scripts" / "setup.sh"


def missing_packages(path: str) -> set[str]:
    done = subprocess.run(["/bin/bash", str(SETUP), "--check"], env={"PATH": path}, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_this_machine_needs_nothing() -> None:
    # make test runs set-up first, so everything is there: a second run installs nothing
    assert missing_packages("/usr/local/bin:/usr/bin:/bin") == set()


def test_a_fresh_machine_gets_what_building_pyaudio_needs(tmp_path: Path) -> None:
    # a fresh minimal Debian: none of jingbao's tools, no compiler, no python3; only what the script itself runs
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("dirname", "awk"):
        (bare / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    missing = missing_packages(str(bare))
    assert {"build-essential", "python3", "python3-venv", "python3-dev"} <= missing
    assert {"ffmpeg", "sox", "espeak-ng", "pulseaudio-utils"} <= missing
