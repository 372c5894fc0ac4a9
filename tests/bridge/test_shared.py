"""Where the never-committed material is found: env var, beside the checkout, beside the local repository cloned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bridge.shared import REPO, shared_dir


def test_the_environment_variable_wins(tmp_path: Path) -> None:
    assert shared_dir({"JINGBAO_SHARED": str(tmp_path)}) == tmp_path


def test_a_local_clone_elsewhere_finds_shared_beside_the_repository_it_was_cloned_from(tmp_path: Path) -> None:
    """`git clone . /tmp/x && cd /tmp/x && make test` must find the models and audio of the original checkout."""
    expected = shared_dir({})
    assert expected.exists(), "this checkout has no shared material beside it or its origin"
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", str(origin)], check=True)
    (origin / "bridge").mkdir()
    (origin / "bridge" / "shared.py").write_text((REPO / "bridge" / "shared.py").read_text(encoding="utf-8"))
    (tmp_path / "shared").symlink_to(expected)  # the origin's ../shared
    subprocess.run(["git", "-C", str(origin), "add", "."], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["git", "clone", "-q", str(origin), str(elsewhere / "clone")], check=True)
    found = subprocess.run(
        [sys.executable, "-c", "from bridge.shared import shared_dir; print(shared_dir({}))"],
        cwd=elsewhere / "clone", capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(found) == tmp_path / "shared"
