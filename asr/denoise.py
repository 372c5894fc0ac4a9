"""Noise suppression in front of the recogniser: a streaming Wiener filter on a short-time spectrum.

A handheld intercom's channel hiss is steady: it changes over seconds while speech changes every few tens of
milliseconds. So each frequency's noise power is tracked as the minimum of its smoothed power (falling at once to a
quieter frame, rising slowly, about 5 dB a second, when the channel gets noisier; silent frames, a muted squelch,
left out), and each frame is scaled per frequency by the Wiener gain SNR / (1 + SNR), with the a-priori SNR estimated
the decision-directed way (Ephraim and Malah), which keeps the residual noise from warbling ("musical noise"). The
gain never falls below `floor`: removing the noise entirely leaves holes the model was never trained on; a floor
keeps a lower, smoother copy of the hiss.

Only what the recogniser hears is filtered; the archive keeps the audio as received. Off unless `asr.noise_floor` is
set: on blind sets its gain was within a sample's spread (docs/dispatch.md, "Noise suppression").
"""

from __future__ import annotations

import numpy as np

FRAME = 320  # 20 ms analysis window at 16 kHz
HOP = 160  # 10 ms: half-overlapping square-root Hann windows, so analysis then synthesis add back to the input
FFT_SIZE = 512
SMOOTHING = 0.3  # weight of the new frame in the smoothed power the minimum is taken of
NOISE_RISE = 1.0115  # per hop: the noise estimate may grow ~5 dB a second
DECISION_DIRECTED = 0.98  # weight of the last frame's cleaned power in the a-priori SNR
# A frame quieter than -80 dBFS is a muted squelch or digital silence: it says nothing of the channel's noise, and
# taken for it the estimate would start from zero and need many seconds to climb to the hiss (the filter off)
SILENT_POWER = 1e-8
DEFAULT_FLOOR = 0.4  # the least gain (amplitude) measured best on the development audio (docs/dispatch.md)
_TINY = 1e-10


def checked_floor(floor: float) -> float:
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"the noise suppressor's gain floor lies in (0, 1]: {floor}")
    return floor


class NoiseSuppressor:
    """One stream's filter: feed it float samples in any chunk sizes and get them back filtered, on the input's clock:
    the first HOP samples the synthesis gives (the window filling, silence) are dropped, so the output runs HOP samples
    behind the input until `flush()` gives the rest. Times the recogniser reports stay the audio's own."""

    def __init__(self, floor: float = DEFAULT_FLOOR) -> None:
        self.floor = checked_floor(floor)
        self._window = np.sqrt(np.hanning(FRAME + 1)[:FRAME]).astype(np.float32)
        self._frame = np.zeros(FRAME, np.float32)  # the last FRAME samples taken in
        self._overlap = np.zeros(FRAME - HOP, np.float32)  # synthesis not yet complete
        self._pending = np.zeros(0, np.float32)  # input short of a hop
        self._skip = HOP  # output still to drop: the window filling
        self._taken = self._given = 0  # samples in, samples out
        self._smoothed: np.ndarray | None = None
        self._noise: np.ndarray | None = None
        self._clean_power: np.ndarray | None = None  # the last frame's power after the gain

    def process(self, samples: np.ndarray) -> np.ndarray:
        self._taken += samples.size
        samples = np.concatenate((self._pending, samples.astype(np.float32, copy=False)))
        hops = samples.size // HOP
        self._pending = samples[hops * HOP:]
        out = np.empty(hops * HOP, np.float32)
        for k in range(hops):
            out[k * HOP:(k + 1) * HOP] = self._hop(samples[k * HOP:(k + 1) * HOP])
        skipped = min(self._skip, out.size)
        self._skip -= skipped
        self._given += out.size - skipped
        return out[skipped:]

    def flush(self) -> np.ndarray:
        """The rest of the input, filtered (what waits short of a hop and what the window still holds), so that all
        the output together is exactly as long as the input."""
        owed = self._taken - self._given
        return self.process(np.zeros(HOP + (-self._pending.size) % HOP, np.float32))[:owed]

    def _hop(self, hop: np.ndarray) -> np.ndarray:
        self._frame[:-HOP] = self._frame[HOP:]
        self._frame[-HOP:] = hop
        spectrum = np.fft.rfft(self._frame * self._window, FFT_SIZE)
        power = spectrum.real ** 2 + spectrum.imag ** 2
        if float(np.mean(self._frame * self._frame)) >= SILENT_POWER:
            if self._smoothed is None or self._noise is None:
                self._smoothed, self._noise = power.copy(), power.copy()
            self._smoothed = (1 - SMOOTHING) * self._smoothed + SMOOTHING * power
            self._noise = np.minimum(self._smoothed, self._noise * NOISE_RISE)
        if self._noise is None:  # nothing but silence so far: nothing to take away
            self._overlap, out = self._synthesised(spectrum)
            return out
        noise = self._noise + _TINY
        heard_snr = np.maximum(power / noise - 1.0, 0.0)
        if self._clean_power is None:
            prior_snr = heard_snr
        else:
            prior_snr = DECISION_DIRECTED * self._clean_power / noise + (1 - DECISION_DIRECTED) * heard_snr
        gain = np.maximum(prior_snr / (1.0 + prior_snr), self.floor)
        self._clean_power = gain * gain * power
        self._overlap, out = self._synthesised(spectrum * gain)
        return out

    def _synthesised(self, spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the new overlap, the hop that is complete): the frame back in time, windowed and overlap-added."""
        cleaned = np.fft.irfft(spectrum, FFT_SIZE)[:FRAME].astype(np.float32) * self._window
        cleaned[:-HOP] += self._overlap
        return cleaned[HOP:].copy(), cleaned[:HOP]
