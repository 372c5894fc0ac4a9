"""A non-editable install (pip install .) carries every file the packages read beside their code."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from tests.conftest import REPO


def test_every_data_file_in_the_packages_is_declared_package_data() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    declared: set[Path] = set()
    for package, patterns in setuptools.get("package-data", {}).items():
        folder = REPO.joinpath(*package.split("."))
        declared.update(p.relative_to(REPO) for pattern in patterns for p in folder.glob(pattern) if p.is_file())
    tracked = subprocess.run(["git", "ls-files", "bridge", "asr", "dispatch", "hardware"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    data_files = {Path(f) for f in tracked if not f.endswith(".py")}
    assert data_files, "no data files found: is this a git checkout?"
    assert data_files - declared == set()
    assert {Path("dispatch/lexicon.yaml"), Path("bridge/web/static/console.html")} <= data_files
