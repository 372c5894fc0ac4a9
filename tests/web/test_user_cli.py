"""`jingbao user demo|add|list` through a subprocess, on a config in a temp folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def jingbao(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args], cwd=REPO, input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_demo_users_link_the_guard_and_officer_to_responders_and_add_lists(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp_path / "data")},
        "channels": [{"id": "ch", "name": "ch", "source": {"type": "pipe"}}],
    }), encoding="utf-8")
    demo = jingbao("user", "demo", "--config", str(config))
    assert demo.returncode == 0, demo.stderr
    assert "operator   password operator-demo" in demo.stdout and "guard-demo" in demo.stdout
    added = jingbao("user", "add", "zhang", "--role", "auditor", "--password-stdin", "--config", str(config),
                    stdin="long-enough-password\n")
    assert added.returncode == 0, added.stderr
    listed = [json.loads(line) for line in jingbao("user", "list", "--json", "--config", str(config)).stdout.splitlines()]
    by_name = {u["name"]: u for u in listed}
    assert by_name["guard"]["responder_id"] == "g-gaoqiao" and by_name["officer"]["responder_id"] == "p-zhan-zhengyou"
    assert by_name["zhang"]["role"] == "auditor"
    again = jingbao("user", "demo", "--config", str(config))  # idempotent: nobody is added twice
    assert again.returncode == 0 and again.stdout == demo.stdout
    bad = jingbao("user", "add", "x", "--role", "pilot", "--config", str(config))
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
