"""The per-bucket request limit of ``sources.fetch``: halved on throttling, once per generation,
grown back by one per window of clean answers sent under the current limit."""

from __future__ import annotations

import threading
import time

from panscan.sources.fetch import AdaptiveLimit


def test_throttling_halves_the_limit_once_for_all_requests_sent_under_the_old_limit() -> None:
    limit = AdaptiveLimit("b", start=16, ceiling=32)
    generations = [limit.acquire() for _ in range(16)]
    for g in generations[:5]:  # a burst of SlowDowns for requests sent together
        limit.throttled(g)
    assert (limit.limit, limit.decreases, limit.throttles) == (8, 1, 5)
    later = limit.acquire() if limit.in_flight < limit.limit else None
    assert later is None  # 16 still in flight: no slot under the new limit of 8
    for g in generations:
        limit.release(g, throttled=False)
    fresh = limit.acquire()
    limit.throttled(fresh)  # sent under the new limit: news, halved again
    assert (limit.limit, limit.lowest) == (4, 4)


def test_a_window_of_clean_answers_under_the_current_limit_raises_it_by_one_up_to_the_ceiling() -> None:
    limit = AdaptiveLimit("b", start=2, ceiling=3)
    for _ in range(2):
        limit.release(limit.acquire(), throttled=False)
    assert limit.limit == 3
    for _ in range(10):
        limit.release(limit.acquire(), throttled=False)
    assert limit.limit == 3


def test_acquire_waits_for_a_free_slot_and_serves_waiters_in_arrival_order() -> None:
    limit = AdaptiveLimit("b", start=1, ceiling=1)
    first = limit.acquire()
    order: list[int] = []

    def wait(n: int) -> None:
        limit.acquire()
        order.append(n)
        limit.release(limit.generation, throttled=False)

    threads = []
    for n in range(3):
        t = threading.Thread(target=wait, args=(n,))
        t.start()
        threads.append(t)
        while limit._tickets < n + 2:  # it queued: the order of arrival is fixed
            time.sleep(0.001)
    assert order == []
    limit.release(first, throttled=False)
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2]
