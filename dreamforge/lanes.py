"""Bounded lanes for the API's CPU-heavy work: reward checks, reward probes, drawn samples.

Each lane has its own few threads and a cap on work in flight. ``asyncio.to_thread`` shares
the event loop's default pool (a handful of threads on a small machine) with every other
route, so six slow reward tests used to stall an unrelated ``POST /api/rewards`` for half a
minute. A full lane refuses at once (``Busy``: 503 with ``Retry-After``) rather than queueing
without bound; a caller gone away does not free its slot until its thread has finished, so
the cap counts the threads really busy.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from dreamforge.settings import Settings

T = TypeVar("T")


class Busy(Exception):
    """The lane is full; the API answers 503 with ``Retry-After``."""

    def __init__(self, lane: str, retry_after: int) -> None:
        super().__init__(f"the server is busy with other {lane}; retry in {retry_after} s")
        self.retry_after = retry_after


class Lane:
    def __init__(self, what: str, workers: int, waiting: int, retry_after: int) -> None:
        self.what, self.retry_after = what, retry_after
        self.limit = workers + waiting
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"df-{what.replace(' ', '-')}")
        self._lock = threading.Lock()
        self.in_flight = 0

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            if self.in_flight >= self.limit:
                raise Busy(self.what, self.retry_after)
            self.in_flight += 1
        try:
            fut = self._pool.submit(fn, *args)
        except BaseException:
            self._release()
            raise
        fut.add_done_callback(lambda _: self._release())
        return await asyncio.wrap_future(fut)

    def _release(self) -> None:
        with self._lock:
            self.in_flight -= 1


_LANES: dict[str, Lane] = {}
_CREATE = threading.Lock()


def lane(name: str) -> Lane:
    """``checks`` (compile and sample-score a reward: bounded by the reward's time limits) or
    ``probes`` (load a dataset, then score a reward on it: ``/api/rewards/test``, samples)."""
    with _CREATE:
        if name not in _LANES:
            s = Settings()
            workers, waiting = {"checks": (s.check_workers, s.check_waiting), "probes": (s.probe_workers, s.probe_waiting)}[name]
            _LANES[name] = Lane({"checks": "reward checks", "probes": "reward tests and samples"}[name], workers, waiting,
                                retry_after=2 if name == "checks" else 10)  # fmt: skip
        return _LANES[name]
