"""The set-up of ``--strategy=multi_worker``: a bounded wait that honours SIGTERM
and SIGINT.

A worker whose peers never start would wait for ever, deaf to SIGTERM and
SIGINT, because ``MultiWorkerMirroredStrategy()`` waits inside a TensorFlow call
that holds the GIL until every task has registered (up to an hour), TensorFlow's
coordination service installs its own SIGTERM handler there, and the set-up
steps after it (the variables' first broadcast, the restore, the gather of the
workers' steps) block the main thread in C++ collectives. ``guard_workers``
watches each of these phases from a thread instead (``tf_internals`` lets that
thread run during the first).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

from absl import logging

from trainer import tf_internals
from trainer.cluster import tf_config_task
from trainer.config import Config

PEER_STATUS = 4  # the exit status of a lost or missing peer (see main.py)
_GUARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Per phase: what this worker is doing (for a signal's line), and what the
# other workers did not do in time (for the timeout's line).
_PHASES = {
    "join": ("waiting for the other workers", "join"),
    "model": ("creating the model with the other workers", "create the model"),
    "start": ("restoring and comparing steps with the other workers", "reach the first step"),
}
_EXITING = threading.Lock()  # one thread writes the last line


def _exit_now(message: str, status: int) -> None:
    """Writes ``error: message`` to standard error and ends the process at once.

    ``os._exit``: no Python clean-up, which would wait on the very TensorFlow
    calls that are blocked. Nothing is left half-written: the guarded phases
    write files only by renaming whole ones into place, and the run lock is an
    ``flock`` that the kernel drops. Standard error is line-buffered, so no
    partial log line precedes this one.
    """
    _EXITING.acquire()  # never released: the process ends
    try:
        os.write(2, f"error: {message}\n".encode())
    finally:
        os._exit(status)


def _other_workers(config: Config) -> tuple[list[str], int]:
    """The other tasks that the coordination service waits for (``"worker:1 at
    host:port"``), and how many tasks there are in all, from TF_CONFIG."""
    cluster, task_type, task_id = tf_config_task(config)
    tasks = [
        (job, index, address)
        for job in ("chief", "worker")
        for index, address in enumerate(cluster.get(job) or ())
    ]
    others = [f"{j}:{i} at {a}" for j, i, a in tasks if (j, i) != (task_type, task_id)]
    return others, len(tasks)


def _listed(names: list[str], most: int = 3) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class _WorkerGuard:
    """Guards one blocking set-up phase of ``--strategy=multi_worker``.

    For the phase's duration, a watchdog thread ends the process with one line
    on standard error when SIGTERM or SIGINT arrives (status 128 + signal), or
    when the phase outlasts ``--worker_timeout`` (status 4). Signals reach it
    through ``signal.set_wakeup_fd``: Python's C-level handler writes the signal
    number to a pipe even while the main thread is blocked in C++. Leaving the
    phase puts back the previous handlers and wakeup fd. Other strategies, and
    a thread other than the main one (which cannot set handlers): no guard.
    """

    def __init__(self, config: Config, phase: str):
        self.config = config
        self.phase = phase
        self._active = False

    def __enter__(self) -> _WorkerGuard:
        if (
            self.config.strategy != "multi_worker"
            or threading.current_thread() is not threading.main_thread()
            or os.name != "posix"
        ):
            return self
        self._others, size = _other_workers(self.config)
        self._signal_read, self._signal_write = os.pipe()
        self._stop_read, self._stop_write = os.pipe()
        for fd in (self._signal_read, self._signal_write):
            os.set_blocking(fd, False)
        self._previous = {s: signal.signal(s, self._on_signal) for s in _GUARDED_SIGNALS}
        self._previous_wakeup = signal.set_wakeup_fd(self._signal_write, warn_on_full_buffer=False)
        self._handlers = tf_internals.CHandlers(_GUARDED_SIGNALS)
        self._deadline = time.monotonic() + self.config.worker_timeout
        self._thread = threading.Thread(target=self._watch, name="worker-guard", daemon=True)
        self._active = True
        self._thread.start()
        if self.phase == "join":
            logging.info(
                "waiting for the other workers (%d of %d: %s) to join, for up to %gs "
                "(--worker_timeout)",
                len(self._others),
                size,
                _listed(self._others),
                self.config.worker_timeout,
            )
        return self

    def __exit__(self, *exc) -> None:
        if not self._active:
            return
        self._active = False
        os.write(self._stop_write, b"x")
        self._thread.join()
        signal.set_wakeup_fd(self._previous_wakeup)
        for signum, handler in self._previous.items():
            # None: a handler Python did not install; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for fd in (self._signal_read, self._signal_write, self._stop_read, self._stop_write):
            os.close(fd)

    def _on_signal(self, signum, frame) -> None:
        """The main thread's handler: the same as the watchdog's, when Python runs."""
        self._signalled(signum)

    def _signalled(self, signum: int) -> None:
        doing, _ = _PHASES[self.phase]
        _exit_now(
            f"received {signal.Signals(signum).name} while {doing}; "
            "nothing was trained, nothing was lost",
            128 + signum,
        )

    def _timed_out(self) -> None:
        _, late = _PHASES[self.phase]
        others = "worker" if len(self._others) == 1 else "workers"
        _exit_now(
            f"--strategy=multi_worker: the other {others} ({_listed(self._others)}) did not "
            f"{late} within {self.config.worker_timeout:g}s; "
            "start every worker with the same command (each with its own TF_CONFIG task), "
            "or raise --worker_timeout; nothing was trained, nothing was lost",
            PEER_STATUS,
        )

    def _watch(self) -> None:
        started = time.monotonic()
        while True:
            now = time.monotonic()
            left = self._deadline - now
            if left <= 0:
                self._timed_out()
            # TensorFlow installs its SIGTERM handler within the join's first
            # 50 ms; it is replaced by Python's again after each nap, hence the
            # short naps at first (a SIGTERM in between would only set its flag).
            nap = 0.005 if now - started < 1 else 0.05
            watched = [self._signal_read, self._stop_read]
            ready, _, _ = select.select(watched, [], [], min(left, nap))
            if self._stop_read in ready:
                return
            if self._signal_read in ready:
                try:
                    received = os.read(self._signal_read, 64)
                except BlockingIOError:
                    received = b""
                for signum in received:
                    if signum in _GUARDED_SIGNALS:
                        self._signalled(signum)
            self._handlers.reassert()


def guard_workers(config: Config, phase: str) -> _WorkerGuard:
    """A context manager guarding ``phase`` ("join", "model" or "start") of a
    ``--strategy=multi_worker`` set-up; see ``_WorkerGuard``. Other strategies:
    it does nothing."""
    if phase not in _PHASES:
        raise ValueError(f"unknown phase {phase!r}")
    return _WorkerGuard(config, phase)
