"""``pgqueue work --processes P``: P worker processes under one supervisor.

The supervisor runs no jobs and holds no database connection. It starts each
child as ``pgqueue ... work --processes 1`` with the same options, restarts a child
that dies (with a growing delay when children keep dying at once), and passes
SIGTERM/SIGINT on: the first asks the children to finish their jobs, a second to
hand them back now. Children run in their own sessions, so a terminal's Ctrl-C reaches
them once, through the supervisor. It exits 0 when every child stopped cleanly after
a stop request.

Why processes: Python threads share one interpreter lock, so CPU-bound tasks need
processes to use several cores; and a child can be killed, which a thread cannot.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

logger = logging.getLogger(__name__)

# Set in a child's environment: it exits to be restarted instead of restarting itself.
SUPERVISED_ENV = "PGQUEUE_SUPERVISED"
# A child's exit code asking for a fresh process (the runner's EXIT_RESTART).
EXIT_RESTART = 3
_RESTART_FIRST = 1.0
_RESTART_MAX = 30.0
_HEALTHY_AFTER = 60.0


class Supervisor:
    def __init__(self, child_argv: list[str] | Callable[[int], list[str]], processes: int,
                 env: dict[str, str] | None = None) -> None:
        # A list, or the command of child slot i (each child its own metrics port, say).
        self.child_argv = child_argv if callable(child_argv) else (lambda slot: list(child_argv))
        self.env = env
        self.processes = processes
        self._children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self._started_at = [0.0] * processes
        self._delay = [_RESTART_FIRST] * processes
        self._restart_at = [0.0] * processes
        self._stopping = False
        self._exit_codes: list[int] = []

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        logger.info("supervisor starting %d worker processes", self.processes)
        for slot in range(self.processes):
            self._start(slot)
        while True:
            alive = 0
            for slot, child in enumerate(self._children):
                if child is None:
                    if not self._stopping and time.monotonic() >= self._restart_at[slot]:
                        self._start(slot)
                        alive += 1
                    continue
                code = child.poll()
                if code is None:
                    alive += 1
                    continue
                self._children[slot] = None
                if self._stopping:
                    logger.info("worker process %s exited with %s", child.pid, code)
                    self._exit_codes.append(code)
                    continue
                lived = time.monotonic() - self._started_at[slot]
                if code == EXIT_RESTART:
                    logger.warning("worker process %s asked to be restarted (stuck task threads): "
                                   "starting a fresh one", child.pid)
                    self._restart_at[slot] = time.monotonic()
                    alive += 1
                    continue
                if lived > _HEALTHY_AFTER:
                    self._delay[slot] = _RESTART_FIRST
                logger.error("worker process %s died (exit %s) after %.1f s; restarting it in %.1f s",
                             child.pid, code, lived, self._delay[slot])
                self._restart_at[slot] = time.monotonic() + self._delay[slot]
                self._delay[slot] = min(self._delay[slot] * 2, _RESTART_MAX)
                alive += 1  # will be restarted
            if self._stopping and alive == 0:
                # A child the stop signal reached before it had set up its handlers (it was
                # still starting, holding no job) ended from the signal itself: that is clean.
                clean = (0, -signal.SIGTERM, -signal.SIGINT)
                return 0 if all(code in clean for code in self._exit_codes) else 1
            time.sleep(0.1)

    def _start(self, slot: int) -> None:
        # Its own session: a Ctrl-C in the terminal reaches the supervisor only, which
        # passes it on once (else each child would get it twice: a hand-back at once).
        env = dict(self.env if self.env is not None else os.environ, **{SUPERVISED_ENV: "1"})
        child = subprocess.Popen(self.child_argv(slot), start_new_session=True, env=env)
        self._children[slot] = child
        self._started_at[slot] = time.monotonic()
        logger.info("started worker process %s", child.pid)
        if self._stopping:  # a signal came while it was starting: pass it on
            child.send_signal(signal.SIGTERM)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._stopping = True
        for child in self._children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)


def child_command(global_args: list[str], work_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pgqueue.cli", *global_args, "work", *work_args, "--processes", "1"]
