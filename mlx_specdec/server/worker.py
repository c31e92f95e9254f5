"""One worker thread that runs jobs first-in first-out, off the event loop.

A job's function runs on the worker thread and reports to the request's coroutine through an
``asyncio.Queue`` (``emit`` is thread-safe). ``cancel()`` sets a flag the job checks between
generation steps, so a client that goes away stops its generation within one step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger("mlx_specdec.server")


class Job:
    def __init__(self, run: Callable[["Job"], None], loop: asyncio.AbstractEventLoop):
        self.run = run
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.checked = time.monotonic()  # when the request's coroutine last checked its client

    def emit(self, event: Any) -> None:
        """Hand ``event`` to the request's coroutine (called on the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()


class Worker:
    """Runs submitted jobs one at a time on one thread; counts what it served."""

    def __init__(self):
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="mlx-specdec-worker", daemon=True)
        self._lock = threading.RLock()  # re-entrant: cancel_all runs in a signal handler
        self._pending: list[Job] = []  # queued and running jobs, oldest first
        self.served = 0
        self.cancelled = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._pending.append(job)
        self._queue.put(job)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._pending)

    @property
    def queued(self) -> int:
        with self._lock:
            return max(len(self._pending) - 1, 0)

    def cancel_all(self) -> None:
        with self._lock:
            for job in self._pending:
                job.cancel()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel every job, let the running one end its step, and end the thread."""
        self.cancel_all()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                if not job.cancelled.is_set():
                    job.run(job)
            except BaseException:  # a job reports its own errors; this keeps the worker alive
                log.exception("job failed")
            finally:
                with self._lock:
                    self._pending.remove(job)
                    self.served += 1
                    self.cancelled += job.cancelled.is_set()
