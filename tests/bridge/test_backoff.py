import random

from bridge.backoff import Backoff


def test_schedule_doubles_up_to_the_cap_without_jitter():
    b = Backoff(initial=0.5, factor=2.0, maximum=5.0, jitter=0.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_reset_starts_again_from_the_initial_delay():
    b = Backoff(initial=1.0, jitter=0.0)
    b.next_delay()
    b.next_delay()
    b.reset()
    assert b.next_delay() == 1.0


def test_jitter_stays_within_its_fraction():
    b = Backoff(initial=10.0, factor=1.0, maximum=10.0, jitter=0.1, _rng=random.Random(1))
    delays = [b.next_delay() for _ in range(200)]
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert len(set(delays)) > 100  # really spread, not a constant
