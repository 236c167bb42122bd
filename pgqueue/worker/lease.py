"""The runner's lease: its right to claim and to write outcomes as runner ``id``.

One object, driven by the heartbeat (on the control thread) and read by the claim loop;
every transition happens here, under one lock, so a test can drive it with a fake clock.

States:

* ``unregistered``: no runner row yet (starting, or between two incarnations).
* ``valid``: the last successful heartbeat was sent less than ``dead_after`` seconds ago
  (measured on this process's monotonic clock from the moment the beat was *sent*, so the
  local deadline falls before the database's). The runner claims.
* ``expired``: no successful heartbeat for ``dead_after``: cut off from the database, or the
  process was paused. The runner stops claiming at once, but keeps what it runs: whether its
  attempts are still its own, the next successful beat tells.
* ``lost``: the database says the row is dead (a beat found no live row, or a claim saw the
  runner declared dead). The runner must not write as this id again: it abandons the
  outcomes of what still runs, hands back anything left under the old id, and registers
  again (a new incarnation, a new id).

Transitions: unregistered -> valid (``registered``); valid -> expired (``check`` past the
deadline); expired -> valid (``beat_ok``: the row was still alive, nobody took the jobs);
valid|expired -> lost (``beat_found_dead``, ``lost``); lost -> valid (``registered`` again).
A beat or loss report about an earlier incarnation is ignored.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

UNREGISTERED = "unregistered"
VALID = "valid"
EXPIRED = "expired"
LOST = "lost"


@dataclass(frozen=True)
class Change:
    """What a call changed, for the runner to log and act on."""

    state: str
    runner_id: int | None
    reason: str = ""
    silent: float = 0.0  # seconds without a successful beat (for expired and renewed)


class Lease:
    def __init__(self, dead_after: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.dead_after = dead_after
        self._clock = clock
        self._lock = threading.Lock()
        self._state = UNREGISTERED
        self._runner_id: int | None = None
        self._last_ok = clock()
        self._lost: tuple[int, str] | None = None
        self._listeners: list[Callable[[Change], None]] = []

    # ------------------------------------------------------------- questions

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def runner_id(self) -> int | None:
        """The id the runner may act as (None unless registered and not lost)."""
        with self._lock:
            return self._runner_id if self._state in (VALID, EXPIRED) else None

    @property
    def lost_incarnation(self) -> tuple[int, str] | None:
        """(old id, reason) after a loss, until the runner registers again."""
        with self._lock:
            return self._lost if self._state == LOST else None

    def may_claim(self) -> bool:
        self.check()
        with self._lock:
            return self._state == VALID

    def silent_for(self) -> float:
        with self._lock:
            return self._clock() - self._last_ok

    def on_change(self, listener: Callable[[Change], None]) -> None:
        """Call ``listener`` (outside the lock) after every transition."""
        self._listeners.append(listener)

    # ----------------------------------------------------------- transitions

    def registered(self, runner_id: int) -> None:
        """A new runner row: a fresh lease from now."""
        with self._lock:
            self._state, self._runner_id, self._lost = VALID, runner_id, None
            self._last_ok = self._clock()
        self._emit(Change(VALID, runner_id, "registered"))

    def beat_sent(self) -> float:
        """The moment a beat is sent (what a success renews the lease from)."""
        return self._clock()

    def beat_ok(self, runner_id: int, sent: float) -> None:
        """A beat found the row alive: the lease runs from when it was sent."""
        change = None
        with self._lock:
            if runner_id != self._runner_id or self._state not in (VALID, EXPIRED):
                return
            silent = self._clock() - self._last_ok
            self._last_ok = max(self._last_ok, sent)
            if self._state == EXPIRED:
                self._state = VALID
                change = Change(VALID, runner_id, "renewed", silent)
        if change:
            self._emit(change)

    def beat_found_dead(self, runner_id: int) -> None:
        self.lost(runner_id, "declared dead by the reaper")

    def lost(self, runner_id: int, reason: str) -> None:
        """The database says ``runner_id`` is dead: it may no longer act as itself."""
        with self._lock:
            if runner_id != self._runner_id or self._state not in (VALID, EXPIRED):
                return
            self._state, self._lost = LOST, (runner_id, reason)
        self._emit(Change(LOST, runner_id, reason))

    def check(self) -> None:
        """Expire the lease once ``dead_after`` passed without a successful beat."""
        with self._lock:
            change = self._check_locked()
        if change:
            self._emit(change)

    def _check_locked(self) -> Change | None:
        if self._state != VALID:
            return None
        silent = self._clock() - self._last_ok
        if silent <= self.dead_after:
            return None
        self._state = EXPIRED
        return Change(EXPIRED, self._runner_id, f"no successful heartbeat for {silent:.1f} s", silent)

    def _emit(self, change: Change) -> None:
        for listener in self._listeners:
            listener(change)
