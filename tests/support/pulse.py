"""A private PulseAudio server with a null sink, so the real PyAudio capture path runs without a sound card.

PyAudio (PortAudio's ALSA host API) reaches PulseAudio through the ALSA 'pulse' plug-in (Debian libasound2-plugins,
a dependency of the pulseaudio package). The server gets its own runtime, home and config directories, listens on its
own socket (PULSE_SERVER points every client there, this process included), and loads only what the tests need:
the native protocol and a null sink `jb_null`, whose monitor is the default source. What is played into the sink
with paplay comes out of the monitor at real-time pace.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SINK = "jb_null"
START_TIMEOUT_S = 15.0


class PulseServer:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "runtime" / "native"
        self.env = {
            "XDG_RUNTIME_DIR": str(base / "runtime"),
            "HOME": str(base / "home"),
            "XDG_CONFIG_HOME": str(base / "config"),
            "PULSE_SERVER": f"unix:{self.socket}",
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = base / "pulseaudio.log"

    def start(self) -> None:
        for name in ("runtime", "home", "config"):
            (self.base / name).mkdir(mode=0o700, parents=True, exist_ok=True)
        script = self.base / "jingbao-test.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            f"load-module module-null-sink sink_name={SINK} rate=48000\n"
            f"set-default-sink {SINK}\n"
            f"set-default-source {SINK}.monitor\n"
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                # -n: no default script; as root PulseAudio warns (not in --system mode) but runs
                ["pulseaudio", "-n", "-F", str(script), "--daemonize=no", "--exit-idle-time=-1", "--log-target=stderr",
                 "--use-pid-file=no"],
                env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"pulseaudio exited with {self.process.returncode}:\n{self.log.read_text(errors='replace')}")
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"pulseaudio did not answer within {START_TIMEOUT_S:g} s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["pactl", *args], env={**os.environ, **self.env}, capture_output=True, text=True, timeout=10)
        if check and result.returncode != 0:
            pytest.fail(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def play(self, path: Path) -> subprocess.Popen[bytes]:
        """Start playing a file into the null sink (real-time pace); the caller waits for it."""
        return subprocess.Popen(["paplay", f"--device={SINK}", str(path)], env={**os.environ, **self.env},
                                stderr=subprocess.PIPE)

    def unload_sink(self) -> None:
        """The device vanishes, as a USB card does when unplugged."""
        self.pactl("unload-module", "module-null-sink")

    def load_sink(self) -> None:
        """The device comes back."""
        self.pactl("load-module", "module-null-sink", f"sink_name={SINK}", "rate=48000")
        self.pactl("set-default-source", f"{SINK}.monitor")


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """One server for the whole session (started once, stopped at the end)."""
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pulse(pulse_server: PulseServer, monkeypatch: pytest.MonkeyPatch) -> PulseServer:
    """The server, with this process's PULSE_SERVER pointing at it for the test (PortAudio reads it when initialised).

    Only PULSE_SERVER is set in-process (HOME and the XDG directories stay as they are for other tests); the sink is
    put back if an earlier test left it unloaded.
    """
    if pulse_server.process is None or pulse_server.process.poll() is not None:
        pytest.fail(f"the test PulseAudio server died:\n{pulse_server.log.read_text(errors='replace')}")
    monkeypatch.setenv("PULSE_SERVER", pulse_server.env["PULSE_SERVER"])
    if SINK not in pulse_server.pactl("list", "short", "sinks").stdout:
        pulse_server.load_sink()
    return pulse_server
