"""``ferrosmtp serve --workers N``: N server processes on one port, and their supervisor.

One asyncio loop runs on one core. With small messages the server's Python code is the
bottleneck, so a relay that must take more mail than one core can handle runs several
worker processes, like Postfix runs several smtpd. Each worker binds the same address with
``SO_REUSEPORT`` and the kernel spreads new connections across them; nothing is shared
between workers but the storage (Maildir names carry the process id; mbox appends are
locked), so limits such as ``--max-connections`` apply per worker.

The supervisor (the process started by the user) forks the workers before any event loop
exists, then only waits for signals:

- SIGINT or SIGTERM: forward SIGTERM to every worker (each finishes its connections and
  stops like a single server does), wait for them, exit 0; after ``STOP_GRACE`` seconds a
  worker that still runs is killed.
- SIGHUP: reopen the supervisor's log file and pass SIGHUP on to every worker (each
  reloads its TLS certificate and users and reopens its log file).
- a worker that exits by itself: restarted, unless it could not start at all (exit
  status ``startup_failure``: the port is taken, say), which stops everything with that
  status; restarts are paced (``RESTART_DELAY``) so a worker that dies at once is not
  respawned in a tight loop.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable

from ferrosmtp import _log

__all__ = ["supervise"]

log = logging.getLogger("ferrosmtp")

RESTART_DELAY = 1.0  # seconds between a worker's death and its replacement
STOP_GRACE = 30.0  # seconds the workers get to finish after SIGTERM
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP}


def supervise(count: int, run_worker: Callable[[int], int], *, startup_failure: int) -> int:
    """Run ``run_worker(index)`` in ``count`` forked processes until SIGINT/SIGTERM.

    Returns the exit status for the supervisor: 0 after a requested stop, or
    ``startup_failure`` when a worker reported that it could not start."""
    # Signals are blocked here and taken with sigtimedwait(): no handler runs in the
    # middle of a fork, and none is inherited by the workers.
    previous: set[signal.Signals] = {
        signal.Signals(number) for number in signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    }
    workers: dict[int, int] = {}  # pid -> index
    try:
        for index in range(count):
            workers[_spawn(index, run_worker, previous)] = index
        log.info("supervisor %d started %d workers", os.getpid(), count)
        status = _watch(workers, run_worker, previous, startup_failure)
        _stop(workers)
        return status
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _spawn(index: int, run_worker: Callable[[int], int], mask: set[signal.Signals]) -> int:
    pid = os.fork()
    if pid:
        return pid
    # The worker: restore what the user started us with, then serve until told to stop.
    status = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        status = run_worker(index)
    except BaseException:  # a worker must never return into the supervisor
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        os._exit(status)
    raise AssertionError("unreachable")  # pragma: no cover


def _watch(
    workers: dict[int, int],
    run_worker: Callable[[int], int],
    mask: set[signal.Signals],
    startup_failure: int,
) -> int:
    """Wait for a stop signal, replacing workers that die. Returns the exit status."""
    due: list[tuple[float, int]] = []  # (when, index) of workers to restart
    while True:
        timeout = max(0.0, min(when for when, _ in due) - time.monotonic()) if due else 1.0
        info = signal.sigtimedwait(_SIGNALS, timeout)
        if info is not None and info.si_signo in (signal.SIGINT, signal.SIGTERM):
            log.info("supervisor stopping %d workers", len(workers))
            return 0
        if info is not None and info.si_signo == signal.SIGHUP:
            _log.reopen()
            log.info("supervisor passing SIGHUP to %d workers", len(workers))
            for pid in workers:
                _signal(pid, signal.SIGHUP)
        failed = False
        for pid, status in _reap():  # every one of them: a reaped pid must leave ``workers``
            index = workers.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if code == startup_failure:
                log.error("worker %d could not start; stopping", index)
                failed = True
            else:
                log.error("worker %d (pid %d) exited with %d; restarting it", index, pid, code)
                due.append((time.monotonic() + RESTART_DELAY, index))
        if failed:
            return startup_failure
        now = time.monotonic()
        for entry in [entry for entry in due if entry[0] <= now]:
            due.remove(entry)
            workers[_spawn(entry[1], run_worker, mask)] = entry[1]


def _reap() -> list[tuple[int, int]]:
    """Every child that has exited, without blocking."""
    ended: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return ended
        if pid == 0:
            return ended
        ended.append((pid, status))


def _stop(workers: dict[int, int]) -> None:
    """SIGTERM every worker and wait for them; SIGKILL those still running after the
    grace period."""
    for pid in workers:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while workers and time.monotonic() < deadline:
        signal.sigtimedwait({signal.SIGCHLD}, 0.1)
        for pid, _ in _reap():
            workers.pop(pid, None)
    for pid in workers:
        log.error("worker pid %d did not stop in %.0f s; killing it", pid, STOP_GRACE)
        _signal(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    workers.clear()


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
