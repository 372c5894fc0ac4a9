"""VOX: carrier judged from the received audio level, for radios with no COR output.

The detector is pure logic (fed 20 ms frames, no clock of its own): the carrier comes up after `attack_ms` of
frames above the threshold and goes down after `hang_ms` of frames below it, so a syllable gap does not drop it
and a click does not raise it. The line can borrow PTT from a serial, CM108 or GPIO line; without one, keying is
only recorded and the radio is expected to key itself on its own VOX (set key_up_delay_ms to cover its attack).
"""

from __future__ import annotations

from bridge.audio import FRAME_MS, Frame, levels_dbfs
from hardware.config import VoxLineConfig
from hardware.lines.base import Line


class VoxDetector:
    def __init__(self, threshold_dbfs: float, attack_ms: int, hang_ms: int) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.attack_frames = max(1, -(-attack_ms // FRAME_MS))  # ceiling: never faster than asked
        self.hang_frames = max(1, -(-hang_ms // FRAME_MS))
        self.active = False
        self._run = 0  # consecutive frames disagreeing with the current state

    def feed(self, pcm: bytes) -> bool:
        """One frame in; the carrier state after it."""
        _peak, rms = levels_dbfs(pcm)
        loud = rms >= self.threshold_dbfs
        if loud == self.active:
            self._run = 0
            return self.active
        self._run += 1
        if self._run >= (self.hang_frames if self.active else self.attack_frames):
            self.active = loud
            self._run = 0
        return self.active


class VoxLine(Line):
    has_cor = True

    def __init__(self, name: str, config: VoxLineConfig, ptt: Line | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.detector = VoxDetector(config.threshold_dbfs, config.attack_ms, config.hang_ms)
        self.rise_hindsight_ms = self.detector.attack_frames * FRAME_MS
        self.ptt = ptt
        self.has_ptt = ptt is not None

    def _open(self) -> None:
        if self.ptt is not None:
            self.ptt._open()
        self._set_carrier(False)

    def _close(self) -> None:
        if self.ptt is not None:
            self.ptt._close()

    def _write_ptt(self, active: bool) -> None:
        if self.ptt is not None:
            self.ptt._write_ptt(active)

    async def _watch(self) -> None:
        """Nothing to poll: observe() drives the carrier."""

    def observe(self, frame: Frame) -> None:
        was_up = self.detector.active
        up = self.detector.feed(frame.pcm)
        if up and not was_up:
            # Decided at the end of the attack run, but the signal began with its first frame: dated back there, so
            # the receive glue stamps the whole run (the first syllable) as carrier instead of clipping it.
            self._set_carrier(True, frame.ts - (self.detector.attack_frames - 1) * FRAME_MS / 1000)
        else:
            # A drop is dated at the end of the deciding frame: the hang time stays in, as VOX hardware keeps it.
            self._set_carrier(up, frame.ts + FRAME_MS / 1000)
