"""The heartbeat: keeps a runner's row alive, and tells the runner when its lease is gone.

Runs on its own thread and its own connection, so a task that blocks or burns CPU
in Python cannot delay it (beyond the GIL's switch interval).

States and invariants:

* Each beat is ``UPDATE runners SET heartbeat_at = now() WHERE id = me AND state =
  'running'``: the database's clock, never the host's.
* No row back: the reaper declared this runner dead. The runner is told at once
  (``on_lease_lost``) and must stop writing as itself.
* No successful beat for ``runner_dead_after`` seconds, measured on this process's
  monotonic clock from the moment the last successful beat was *sent* (so the local
  deadline falls before the database's): the lease has expired (cut off from the
  database, or the process was paused), and the runner is told (``on_lease_expired``):
  it stops claiming. The heartbeat keeps trying. If a beat then finds the row still
  ``running``, nobody declared the runner dead and nobody took its jobs, so the lease
  is renewed (``on_lease_renewed``) and its attempts are still its own; if it finds the
  row dead, the lease is lost (``on_lease_lost``).
* The beat also returns the attempts the database assigns to the runner (so the runner
  can hand back one it does not know) and those whose cancellation was requested.
* The loop never dies: an error in a beat or in a callback is logged and the next beat
  comes on time.

Not handled here: registering again (the runner does that) and reaping others
(``reaper.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .. import sqlfiles
from .connections import OutageLog, Service, ServiceConnection, is_connection_error, is_transient

logger = logging.getLogger(__name__)


class Heartbeat(Service):
    name = "heartbeat"

    def __init__(self, *, connection: ServiceConnection, queries: sqlfiles.Queries, interval: float,
                 dead_after: float, outage: OutageLog,
                 on_lease_lost: Callable[[int, str], None],
                 on_cancel_requested: Callable[[list[int]], None],
                 on_running: Callable[[int, list[tuple[int, int]]], None] | None = None,
                 on_lease_expired: Callable[[int, str], None] | None = None,
                 on_lease_renewed: Callable[[int, float], None] | None = None) -> None:
        super().__init__(connection)
        self._queries = queries
        self.interval = interval
        self.dead_after = dead_after
        self._outage = outage
        self._on_lease_lost = on_lease_lost
        self._on_cancel_requested = on_cancel_requested
        self._on_running = on_running
        self._on_lease_expired = on_lease_expired
        self._on_lease_renewed = on_lease_renewed
        self._expired = False
        self._lock = threading.Lock()
        self._runner_id: int | None = None
        self._last_ok = time.monotonic()

    def follow(self, runner_id: int) -> None:
        """Beat for ``runner_id`` from now on (a newly registered runner starts a fresh lease)."""
        with self._lock:
            self._runner_id = runner_id
            self._last_ok = time.monotonic()
            self._expired = False

    def expired(self) -> bool:
        """Whether the lease has expired locally (no successful beat for dead_after)."""
        with self._lock:
            return self._runner_id is not None and time.monotonic() - self._last_ok > self.dead_after

    def forget(self) -> None:
        with self._lock:
            self._runner_id = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # never let the heartbeat thread die
                logger.exception("heartbeat failed")
            self._stop.wait(max(self.interval - (time.monotonic() - started), 0.0))

    def run_once(self) -> bool:
        """One beat; False while the lease is expired or lost."""
        with self._lock:
            runner_id, last_ok = self._runner_id, self._last_ok
        if runner_id is None:
            return True
        silent = time.monotonic() - last_ok
        if silent > self.dead_after and not self._expired:
            self._expired = True
            reason = f"no successful heartbeat for {silent:.1f} s"
            if self._on_lease_expired is None:
                self._lost(runner_id, reason)
                return False
            self._on_lease_expired(runner_id, reason)
        sent = time.monotonic()
        try:
            row = self._conn.get().execute(self._queries.runner_heartbeat,
                                           {"runner_id": runner_id}).fetchone()
        except Exception as exc:
            self._conn.discard()
            if is_connection_error(exc):
                self._outage.failed("heartbeat", exc)
            elif not is_transient(exc):
                logger.exception("heartbeat of runner %s failed", runner_id)
            return not self._expired
        self._outage.ok("heartbeat")
        if row is None:
            self._lost(runner_id, "declared dead by the reaper")
            return False
        renewed = False
        with self._lock:
            if self._runner_id == runner_id:
                self._last_ok = sent
                renewed, self._expired = self._expired, False
        if renewed and self._on_lease_renewed is not None:
            self._on_lease_renewed(runner_id, silent)
        cancel_requested, running_ids, running_attempts = row
        if cancel_requested:
            self._on_cancel_requested(list(cancel_requested))
        if self._on_running is not None:
            self._on_running(runner_id, list(zip(running_ids, running_attempts)))
        return True

    def _lost(self, runner_id: int, reason: str) -> None:
        with self._lock:
            if self._runner_id != runner_id:
                return
            self._runner_id = None  # the runner follows its next incarnation
        self._on_lease_lost(runner_id, reason)
