"""The set-up scripts: setup.sh --check (which Debian packages a machine still needs, what `make run` would
install) and model-offer.sh (what `make run` says when no speech model is found)."""

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
    # Debian keeps PostgreSQL's initdb out of PATH (in /usr/lib/postgresql/<major>/bin): still found, not reinstalled
    assert "postgresql" not in missing_packages("/usr/bin:/bin")


def test_a_fresh_machine_gets_what_building_pyaudio_needs(tmp_path: Path) -> None:
    # a fresh minimal Debian: none of jingbao's tools, no compiler, no python3; only what the script itself runs
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("dirname", "awk"):
        (bare / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    missing = missing_packages(str(bare))
    assert {"build-essential", "python3", "python3-venv", "python3-dev"} <= missing
    assert {"ffmpeg", "sox", "espeak-ng", "pulseaudio-utils"} <= missing


def model_offer(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/bash", str(REPO / "scripts" / "model-offer.sh")], env={"PATH": "/usr/bin:/bin", **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)


def test_make_run_says_plainly_when_no_speech_model_is_found(tmp_path: Path) -> None:
    nowhere = {"JINGBAO_SHARED": str(tmp_path / "no-shared"), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}
    done = model_offer(nowhere)
    assert done.returncode == 0  # the demo runs on without ASR
    assert "No speech model was found" in done.stderr and "jingbao model fetch" in done.stderr


def test_make_run_is_quiet_about_models_when_one_is_found(tmp_path: Path, sherpa_model: Path) -> None:
    done = model_offer({"JINGBAO_SHARED": str(sherpa_model.parents[1]), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0 and done.stderr == ""
