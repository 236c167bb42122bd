"""The listener: one dedicated connection per worker process, in LISTEN on "<schema>.jobs".

A notification names a queue; one the runner serves wakes the claim loop at once.
Enqueues notify only while some runner is waiting (see ``wake()`` in the schema), so
a busy system pays nothing for this.

When the connection drops, the listener reconnects with backoff and then wakes the
claim loop once, because work may have arrived while nobody was listening. Lost
notifications are covered by the runner's poll interval.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from psycopg import sql as pgsql

from .. import sqlfiles
from .connections import Backoff, OutageLog, Service, ServiceConnection

logger = logging.getLogger(__name__)


class Listener(Service):
    name = "listener"

    def __init__(self, *, connection: ServiceConnection, schema: str, queues: tuple[str, ...] | None,
                 outage: OutageLog, on_work: Callable[[], None]) -> None:
        super().__init__(connection)
        self.channel = sqlfiles.channel(schema, "jobs")
        self._queues = frozenset(queues) if queues else None
        self._outage = outage
        self._on_work = on_work
        self.listening = threading.Event()

    def _loop(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                conn = self._conn.get()
                conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
                self.listening.set()
                self._outage.ok("listener")
                backoff.reset()
                self._on_work()  # work may have arrived while we were not listening
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        logger.debug("notification: work in queue %r", note.payload)
                        if self._queues is None or note.payload in self._queues:
                            self._on_work()
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    return
                self._outage.failed("listener", exc)
                self._conn.discard()
                self._stop.wait(backoff.next())
