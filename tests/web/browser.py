"""The real service, running in a thread of its own with HTTP on a free port, and a real headless Chromium (Debian's,
driven by Playwright; no browser is ever downloaded) whose microphone is a WAV file. For the browser tests."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from bridge.config import load_config
from bridge.db import connect
from bridge.service import Service
from bridge.web.users import UserStore
from tests.support.broker import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "browser-test-pw"
USERS = {"op": ("operator", None), "guard-huaniao": ("guard", "g-huaniao"), "aud": ("auditor", None),
         "patrol": ("officer", "p-patrol-1")}  # fmt: skip
SCREENSHOTS = REPO / "docs" / "screenshots"
MAX_SCREENSHOT_BYTES = 250_000  # docs stay light in the repository
TEST_TILE_URL = "/static/vendor/leaflet/images/layers.png?z={z}&x={x}&y={y}"
CHROMIUM_LEAD_S = 1.6  # Chromium's fake capture device starts with about this much silence
PALETTE_FILTER = "split[a][b];[a]palettegen=max_colors=256:stats_mode=full[p];[b][p]paletteuse=dither=none"
# expect() waits up to 10 s for what a page should show, not Playwright's 5 s: `make test` runs two workers on two cores
# (scripts/test.sh), and on a busy machine a page draws later (the tasks test's audit log took over 5 s with three)
expect.set_options(timeout=10_000)


class LiveService:
    """A Service whose event loop runs in a background thread; `call(fn, *args)` runs fn on that loop."""

    def __init__(self, config_path: Path) -> None:
        self.config = load_config(config_path)
        self.url = f"http://{self.config.web.host}:{self.config.web.port}"
        self.loop = asyncio.new_event_loop()
        self.service: Service | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="live-service", daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.service = Service(self.config)  # inside the loop: the MQTT client binds to the running loop
        self._task = asyncio.create_task(self.service.run())
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def start(self, timeout: float = 60.0) -> None:
        import httpx

        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._thread.is_alive():
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503):  # 503: answering, with a fault
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not answer /healthz")

    def stop(self) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(30)

    def __enter__(self) -> LiveService:
        """`with live:` starts the service and stops it on the way out (not when it fails to start)."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def channel(self, channel_id: str) -> Any:
        assert self.service is not None
        return next(c for c in self.service.channels if c.config.id == channel_id)

    def play_call(self, channel_id: str, wav: Path) -> None:
        """Push a call into a web channel as a burst, then the silence that ends the utterance."""
        source = self.channel(channel_id).source
        assert self.call(source.push, read_pcm(wav) + bytes(16000 * 2 * 2)), "the channel refused the call"

    def talk(self, channel_id: str, wav: Path, chunk_s: float = 0.04) -> threading.Thread:
        """Push a call into a web channel at the pace a radio (or the guard page) delivers it, from a thread of its
        own, so the channel is talking for as long as the call lasts; join the thread to wait for the end."""
        pcm = read_pcm(wav) + bytes(16000 * 2)
        source, step = self.channel(channel_id).source, int(16000 * 2 * chunk_s)

        def push() -> None:
            start = time.monotonic()
            for k, offset in enumerate(range(0, len(pcm), step)):
                time.sleep(max(0.0, start + k * chunk_s - time.monotonic()))
                assert self.call(source.push, pcm[offset : offset + step]), "the channel refused the audio"

        thread = threading.Thread(target=push, name=f"talk-{channel_id}", daemon=True)
        thread.start()
        return thread

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.call(check)
            if found:
                return found
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")


def write_config(tmp: Path, broker: Mosquitto, model_dir: Path) -> Path:
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp / "data"), "audio_format": "wav"},
        "broker": {"enabled": True, "port": broker.port},
        "asr": {"engine": "sherpa", "sherpa_model": str(model_dir)},
        # map tiles from the service itself (any image will do): the test sees the console load them
        "web": {"port": free_port(), "tile_url": TEST_TILE_URL},
        "channels": [
            # the command channel transmits (talk-back); the market channel does not, so no spoken dispatch
            # announcement keys it (and mutes what the guard says, as a half-duplex radio would) mid-test
            {"id": "ch-command", "name": "指挥调度", "source": {"type": "web", "max_buffer_s": 30},
             "tx": {"output": {"type": "file", "directory": str(tmp / "tx")}}},
            {"id": "ch-market", "name": "市场保安", "source": {"type": "web"},
             "tx": {"output": {"type": "file", "directory": str(tmp / "tx")}}},
        ],
        # no spoken dispatch announcements: one would key the market channel (and mute what a guard says there, as
        # a half-duplex radio would) in the middle of a test, and land in the transmit folder the talk-back test reads
        "dispatch": {"alerts": {"announce": False}},
    }  # fmt: skip
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


@contextmanager
def recognising_service(tmp: Path, model_dir: Path) -> Iterator[LiveService]:
    """The service of `write_config` (recognition on, the command and market channels pushed from the web), the test
    users added, its own mosquitto."""
    broker = Mosquitto(tmp / "mosquitto")
    broker.start()
    try:
        live = LiveService(write_config(tmp, broker, model_dir))
        add_users(live.config.storage.database)
        with live:
            yield live
    finally:
        broker.stop()


def read_pcm(wav: Path) -> bytes:
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return w.readframes(w.getnframes())


MARKET_FROM_THE_WEB = [{"id": "ch-market", "name": "市场保安", "source": {"type": "web"}}]


@contextmanager
def live_service(tmp: Path, channels: list[dict[str, Any]] = MARKET_FROM_THE_WEB, dispatch: dict[str, Any] | None = None,
                 broker: bool = True) -> Iterator[LiveService]:
    """The service on the demo jurisdiction without recognition, its `channels` (default: the market's, pushed from
    the web), announcements off unless `dispatch` says otherwise, the test users added; with a private mosquitto
    (`broker`)."""
    mosquitto = Mosquitto(tmp / "mosquitto") if broker else None
    config = {
        "jurisdiction": str(REPO / "config" / "jurisdiction.yaml"),
        "storage": {"data_dir": str(tmp / "data"), "audio_format": "wav"},
        "broker": {"enabled": True, "port": mosquitto.port} if mosquitto else {"enabled": False},
        "asr": {"engine": "none"},
        "web": {"port": free_port()},
        "channels": channels,
        "dispatch": {"alerts": {"announce": False}} | (dispatch or {}),
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    if mosquitto:
        mosquitto.start()
    try:
        service = LiveService(path)
        add_users(service.config.storage.database)
        with service:
            yield service
    finally:
        if mosquitto:
            mosquitto.stop()


def start_live(path: Path, more_users: dict[str, tuple[str, str]] | None = None) -> LiveService:
    """The service of this config, started; its users (the test users and `more_users`: name -> (role, responder))
    made on the first start only, so a restart on the same data keeps them. Stop it with `.stop()`."""
    service = LiveService(path)
    store = UserStore(connect(service.config.storage.database))
    if store.get("op") is None:
        add_users(service.config.storage.database)
        for name, (role, responder) in (more_users or {}).items():
            store.add(name, role, PASSWORD, responder_id=responder)
    return service.__enter__()


def add_users(database: Path) -> None:
    store = UserStore(connect(database))
    for name, (role, responder) in USERS.items():
        store.add(name, role, PASSWORD, responder_id=responder)


@contextmanager
def chromium(fake_mic: Path | None = None) -> Iterator[Browser]:
    """Headless Chromium; `fake_mic`: a WAV file its microphone plays (no microphone without one)."""
    args = [
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
    ]  # fmt: skip
    if fake_mic is not None:
        args += ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 f"--use-file-for-fake-audio-capture={fake_mic}"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


CSP_VIOLATIONS: list[str] = []  # what Chromium refused under the pages' Content Security Policy, on pages log_in opened


def log_in(page: Page, base: str, name: str, then: str) -> None:
    """Log in from the login page and land on `then`; the page is watched for CSP violations from here on."""

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:  # Chromium: "... violates the following Content Security Policy directive"
            CSP_VIOLATIONS.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    page.goto(f"{base}/login?next={then}")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{then}")


def hold(page: Page, button: str, seconds: float) -> None:
    """Press a hold-to-talk button with the mouse for `seconds`."""
    box = page.locator(button).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    expect(page.locator(button)).to_have_class(re.compile(r"\bon\b"))
    page.wait_for_timeout(seconds * 1000)
    page.mouse.up()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), type="png")
    if path.stat().st_size > MAX_SCREENSHOT_BYTES:  # a 256-colour palette keeps the text sharp at a third of the size
        palette = path.with_suffix(".palette.png")
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path), "-vf", PALETTE_FILTER, str(palette)], check=True)
        palette.replace(path)


def demo_console_screenshot(base: str, user: str, password: str, settle_s: float) -> Path:
    """docs/screenshots/console.png from a running demo (`make run`): the console as an operator sees it."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1680, "height": 1000})
        page.goto(f"{base}/login?next=/console")
        page.fill("input[name=name]", user)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/console")
        page.wait_for_timeout(settle_s * 1000)  # live partials, meters and any new incident arrive
        screenshot(page, "console")
    return SCREENSHOTS / "console.png"


if __name__ == "__main__":  # python -m tests.web.browser [URL]: the console screenshot from the running demo
    import sys

    print(demo_console_screenshot(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080", "operator", "operator-demo", 8))
