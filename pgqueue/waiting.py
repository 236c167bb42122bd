"""Waiting for jobs to finish: one LISTEN connection per App, shared by every waiter.

``job.result()`` registers a row in ``result_waiters`` (so the statement that finishes
the job sends NOTIFY "<schema>.done" with its id) and sleeps on an in-process event.
A single listener thread, started on first use, holds the App's only LISTEN
connection and wakes the waiters of each id it hears about. So a web app with fifty
requests waiting on results uses one connection to wait, not fifty pool connections.

Waiters also look at their job again after growing pauses (50 ms up to 10 s): that
covers the instant between registering and the first look. When the listener
reconnects it wakes every waiter, and a waiter registers again (the table is
unlogged: a crash restart empties it). TCP keepalives make a vanished server or a
dropped idle connection show up within seconds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from psycopg import sql as pgsql

from . import db, sqlfiles

if TYPE_CHECKING:
    from .app import App

logger = logging.getLogger(__name__)


class ResultWaiters:
    def __init__(self, app: "App") -> None:
        self._app = app
        self._lock = threading.Lock()
        self._events: dict[int, set[Any]] = {}
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        #: Incremented at every (re)connection of the listener: a waiter whose registration
        #: predates the current connection registers again.
        self.generation = 0

    def subscribe(self, job_id: int, event: Any = None, *, wait: bool = True) -> Any:
        """Wake ``event`` (anything with ``set()``, called on the listener thread; a new
        ``threading.Event`` by default) when ``job_id`` may have finished. ``wait=False``
        returns at once (an asyncio waiter must not block its loop): the listener wakes every
        waiter once its LISTEN is in place, so nothing is missed."""
        event = threading.Event() if event is None else event
        with self._lock:
            self._events.setdefault(job_id, set()).add(event)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._listen, name="pgqueue-result-waiters",
                                                daemon=True)
                self._thread.start()
        # Registering before LISTEN is in place could miss the notification: the waiter's
        # own re-checks would still catch it, only later. Wait briefly for the listener.
        if wait:
            self._listening.wait(self._app.settings.connect_timeout)
        return event

    def unsubscribe(self, job_id: int, event: Any) -> None:
        with self._lock:
            events = self._events.get(job_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._events[job_id]

    def _wake(self, job_id: int | None) -> None:
        with self._lock:
            if job_id is None:
                targets = [e for events in self._events.values() for e in events]
            else:
                targets = list(self._events.get(job_id, ()))
        for event in targets:
            try:
                event.set()
            except Exception:  # an asyncio waiter whose loop is closed: it waits no more
                logger.debug("could not wake a waiter of job %s", job_id, exc_info=True)

    def _listen(self) -> None:
        settings = self._app.settings
        channel = sqlfiles.channel(settings.schema, "done")
        while True:
            with self._lock:
                if not self._events:
                    self._thread = None
                    self._listening.clear()
                    return  # nobody waits: the next subscriber starts a new listener
            try:
                with db.connect(self._app.database.dsn, connect_timeout=settings.connect_timeout,
                                keepalives=1, keepalives_idle=5, keepalives_interval=2,
                                keepalives_count=3) as conn:
                    conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                    with self._lock:
                        self.generation += 1
                    self._listening.set()
                    self._wake(None)  # anything finished while nobody listened: look again
                    while True:
                        for note in conn.notifies(timeout=1.0):
                            with contextlib.suppress(ValueError):
                                self._wake(int(note.payload))
                        with self._lock:
                            if not self._events:
                                break
            except Exception as exc:
                self._listening.clear()
                logger.warning("result waiters' LISTEN connection failed (%s); reconnecting",
                               db._one_line(exc))
                self._wake(None)
                threading.Event().wait(1.0)
