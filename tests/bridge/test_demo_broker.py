"""`make run`'s broker on a fresh machine: scripts/run-demo.sh runs `jingbao broker setup` on config/demo.yaml, then
scripts/broker.sh starts mosquitto locked down with what it wrote, and the service's config finds its password.
Run here on a copy of the demo's config and registry in a temp dir (their relative paths then land there too)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from bridge.cli import main
from bridge.config import load_config
from tests.support.broker import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """config/ copied to a fresh machine's checkout; yields the config and broker.sh's environment."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    env = os.environ | {"JINGBAO_MQTT_DIR": str(tmp_path / "var" / "mosquitto"), "JINGBAO_MQTT_PORT": str(free_port())}
    try:
        yield tmp_path / "config" / "demo.yaml", env
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "broker.sh"), "stop"], env=env, capture_output=True)


async def connects(port: int, **login: str) -> bool:
    try:
        async with aiomqtt.Client("127.0.0.1", port, **login):
            return True
    except aiomqtt.MqttError:
        return False


async def test_the_demo_broker_is_locked_down_and_the_service_can_log_in(demo: tuple[Path, dict[str, str]]) -> None:
    config_file, env = demo
    broker_sh = ["bash", str(REPO / "scripts" / "broker.sh"), "start"]
    refused = subprocess.run(broker_sh, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "jingbao broker setup" in refused.stderr  # no accounts, no open broker

    assert main(["broker", "setup", "--config", str(config_file)]) == 0
    assert subprocess.run(broker_sh, env=env, capture_output=True).returncode == 0
    broker = load_config(config_file).broker
    port = int(env["JINGBAO_MQTT_PORT"])
    assert not await connects(port)  # anonymous
    assert await connects(port, username=broker.username, password=broker.read_password())
