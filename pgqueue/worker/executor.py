"""Where task code runs: sync tasks on an elastic thread pool, ``async def`` tasks on one
event loop thread. Both count against the runner's ``concurrency`` slots, which the
runner tracks; this module only runs things.

The thread pool grows when every thread is busy instead of queueing: a sync task that
outlived its timeout keeps its thread (Python cannot stop a thread), but its slot is
given back, so the next job must not wait behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from typing import Any, Callable, Coroutine

logger = logging.getLogger(__name__)

_STOP = object()


class ElasticThreadPool:
    """Runs callables on daemon threads, starting a new thread whenever none is idle."""

    def __init__(self, name: str = "pgqueue-task") -> None:
        self._name = name
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []

    @property
    def size(self) -> int:
        return len(self._threads)

    def submit(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # reserve an idle thread for this item
                spawn = False
            else:
                spawn = True
        self._work.put(fn)
        if spawn:
            thread = threading.Thread(target=self._loop, name=f"{self._name}-{len(self._threads) + 1}",
                                      daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _loop(self) -> None:
        while True:
            fn = self._work.get()
            if fn is _STOP:
                return
            try:
                fn()
            except BaseException:  # the callable reports its own errors; never lose the thread
                logger.exception("unexpected error in a task thread")
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Ask idle threads to exit (busy ones are daemons and end with the process)."""
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._work.put(_STOP)


class AsyncLoop:
    """One event loop on its own daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def submit(self, coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> concurrent.futures.Future[None]:
        loop = self._ensure()
        return asyncio.run_coroutine_threadsafe(coro_fn(), loop)

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    ready.set()
                    loop.run_forever()

                threading.Thread(target=run, name="pgqueue-asyncio", daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    def shutdown(self) -> None:
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
