"""Run a callback exactly at a time.perf_counter() instant, or just after: what the fakes need to
answer after an exactly known delay. Loop timers alone may fire up to 1 ms early, so the timer
is set 1.5 ms before the instant and the rest is spun on call_soon (the loop keeps running)."""

from __future__ import annotations

import asyncio
import time


def call_at_instant(when: float, callback, *args) -> None:
    """Call callback(*args) from the running loop at perf_counter() >= when (never before)."""
    left = when - time.perf_counter()
    loop = asyncio.get_running_loop()
    if left <= 0:
        callback(*args)
    elif left > 0.002:
        loop.call_later(left - 0.0015, call_at_instant, when, callback, *args)
    else:
        loop.call_soon(call_at_instant, when, callback, *args)
