"""Retry delays for things that come back (a re-plugged sound card, a restarted broker).

Exponential with a cap and a little jitter, so many channels that failed together do not retry in lock-step.
The schedule is plain arithmetic, tested on its own (trunk-recorder's `2 ^ attempt` was XOR, not a power).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1  # +- this fraction of the delay
    attempt: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        base = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        spread = base * self.jitter
        return max(0.0, base + self._rng.uniform(-spread, spread))

    def reset(self) -> None:
        """The thing works again: the next failure starts from the initial delay."""
        self.attempt = 0
