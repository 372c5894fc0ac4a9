"""`jingbao ptt ...` against lines from a real config file, and `jingbao patch ...` against a real HTTP server."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI

from bridge.cli import main
from bridge.config import ConfigError, load_config
from bridge.sinks import FileSink
from hardware.api import patch_router
from hardware.config import FileSinkConfig, SimulatedLineConfig, TransmitConfig
from hardware.lines import SimulatedLine
from hardware.patch import PatchManager
from hardware.transmit import Transmitter
from tests.hardware.fakes import FakeHidraw

CONFIG = """
jurisdiction: jurisdiction.yaml
channels:
  - id: market
    name: 市场保安
    source: {{type: pipe, path: "-"}}
    line: {{type: cm108, device: {device}, ptt_gpio: 3, cor: vol_down}}
    tx:
      output: {{type: rtp, host: 127.0.0.1, port: 5004, codec: pcma}}
      key_up_delay_ms: 300
  - id: police
    name: 警长
    source: {{type: pipe, path: "-"}}
    line: {{type: serial, port: "loop://", ptt: rts, cor: cts}}
    tx: {{output: {{type: file, directory: tx}}}}
patches:
  - {{a: market, b: police, mode: live}}
"""


@pytest.fixture
def fake():
    f = FakeHidraw.create()
    yield f
    f.close()


@pytest.fixture
def config_file(tmp_path, fake):
    path = tmp_path / "jingbao.yaml"
    path.write_text(CONFIG.format(device=fake.path), encoding="utf-8")
    return path


def test_config_with_lines_tx_and_patches_validates(config_file, tmp_path):
    config = load_config(config_file)
    assert config.channels[0].line.type == "cm108" and config.channels[0].tx.key_up_delay_ms == 300
    assert config.patches[0].mode == "live"
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_file.read_text().replace("b: police", "b: nowhere"), encoding="utf-8")
    with pytest.raises(ConfigError, match="no channel 'nowhere'"):
        load_config(bad)


def test_a_patch_to_a_disabled_channel_is_a_config_error(config_file, tmp_path):
    # the service does not start a disabled channel: a patch to it could only fail at start-up
    disabled = tmp_path / "disabled.yaml"
    disabled.write_text(config_file.read_text().replace("  - id: police\n", "  - id: police\n    enabled: false\n"),
                        encoding="utf-8")
    with pytest.raises(ConfigError, match=r"patches\[0\]: channel 'police' is disabled"):
        load_config(disabled)


def test_ptt_test_keys_then_unkeys(config_file, fake):
    assert main(["ptt", "test", "--config", str(config_file), "--channel", "market", "--seconds", "0.1"]) == 0
    assert fake.output_reports() == [bytes.fromhex(r) for r in ("0000000400", "0000040400", "0000000400", "0000000400")]


def test_ptt_watch_prints_carrier_edges(config_file, fake, capsys):
    watch = threading.Thread(target=lambda: main(["ptt", "watch", "--config", str(config_file), "--channel", "market",
                                                  "--seconds", "1.5"]))
    watch.start()
    err = ""
    deadline = time.monotonic() + 5
    while "market: carrier down" not in err:  # the state when watching starts: printed just before it listens
        assert time.monotonic() < deadline, err
        time.sleep(0.02)
        err += capsys.readouterr().err
    assert fake.output_reports() == [bytes.fromhex("0000000400")], "opened unkeyed"
    time.sleep(0.05)
    fake.send_input(0x02)  # the radio's COR on volume-down: carrier
    time.sleep(0.2)
    fake.send_input(0x00)
    watch.join(5)
    edges = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in edges] == ["market: carrier UP", "market: carrier down"]
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", line.split(" ", 1)[0]) for line in edges), edges


def test_ptt_unkey_every_line(config_file, fake):
    assert main(["ptt", "unkey", "--config", str(config_file)]) == 0
    assert bytes.fromhex("0000000400") in fake.output_reports()


def test_ptt_unknown_channel(config_file, capsys):
    assert main(["ptt", "test", "--config", str(config_file), "--channel", "nope"]) == 2
    assert "no channel 'nope'" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    """A real HTTP server on 127.0.0.1 carrying the patch routes, as the service mounts them."""
    txs = {}
    for ch in ("market", "police"):
        config = TransmitConfig(output=FileSinkConfig(type="file", directory=tmp_path / ch))
        txs[ch] = Transmitter(ch, SimulatedLine(ch, SimulatedLineConfig(type="simulated")), FileSink(ch, config.output), config)
    app = FastAPI()
    app.include_router(patch_router(PatchManager(txs)))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def test_patch_commands_talk_to_the_running_service(service, capsys):
    url = ["--url", service]
    assert main(["patch", *url, "add", "market", "police", "--mode", "live"]) == 0
    assert "market <-> police  (live, from api" in capsys.readouterr().out
    assert main(["patch", *url, "add", "police", "market"]) == 1
    assert "already patched" in capsys.readouterr().err
    assert main(["patch", *url, "--json", "list"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["mode"] == "live"
    assert main(["patch", *url, "remove", "police", "market"]) == 0
    assert main(["patch", *url, "remove", "police", "market"]) == 1
    assert "not patched" in capsys.readouterr().err


def test_patch_command_without_a_service(capsys):
    assert main(["patch", "--url", f"http://127.0.0.1:{_free_port()}", "list"]) == 2
    assert "cannot reach the service" in capsys.readouterr().err
