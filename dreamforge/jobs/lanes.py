"""Bounded lanes for the API's CPU-heavy work: reward checks, reward probes, drawn samples.

Each lane has its own few threads and a cap on work in flight. ``asyncio.to_thread`` shares
the event loop's default pool (a handful of threads on a small machine) with every other
route, so six slow reward tests used to stall an unrelated ``POST /api/rewards`` for half a
minute. A full lane refuses at once rather than queueing without bound: 429 to a project that
already holds its share, 503 when the lane is full; both with ``Retry-After``. A caller gone
away does not free its place until its thread has finished, so the cap counts real work.
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
    """No room in the lane: 429 when the caller already holds its share, else 503; both with
    ``Retry-After``."""

    def __init__(self, message: str, status: int, retry_after: int) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class Lane:
    def __init__(self, what: str, workers: int, waiting: int, retry_after: int) -> None:
        self.what, self.retry_after = what, retry_after
        # One project holds at most the threads and half the waiting places: a burst of its own
        # still queues, yet it never takes every place from the other projects.
        self.limit, self.per_owner = workers + waiting, workers + waiting // 2
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=f"df-{what.replace(' ', '-')}")
        self._lock = threading.Lock()
        self.in_flight: dict[str, int] = {}

    async def run(self, owner: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the lane's threads, for ``owner`` (a project)."""
        with self._lock:
            if self.in_flight.get(owner, 0) >= self.per_owner:
                raise Busy(f"this project already runs its share of {self.what} ({self.per_owner} at once); "
                           f"retry in {self.retry_after} s", 429, self.retry_after)  # fmt: skip
            if sum(self.in_flight.values()) >= self.limit:
                raise Busy(f"the server is busy with other {self.what}; retry in {self.retry_after} s", 503, self.retry_after)
            self.in_flight[owner] = self.in_flight.get(owner, 0) + 1
        try:
            fut = self._pool.submit(fn, *args)
        except BaseException:
            self._release(owner)
            raise
        fut.add_done_callback(lambda _: self._release(owner))
        return await asyncio.wrap_future(fut)

    def _release(self, owner: str) -> None:
        with self._lock:
            self.in_flight[owner] -= 1
            if not self.in_flight[owner]:
                del self.in_flight[owner]


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
