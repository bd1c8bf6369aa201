"""Continuous batching for the server: many HTTP requests, one engine, one thread that steps it.

The engine (gptkit.engine.Engine) is not thread-safe, and each step() advances every running row by one
token. So one worker thread owns it; the asyncio side (the HTTP handlers) only talks to the worker
through two small hand-offs, guarded by one lock:

    handler --submit(rows)--> waiting deque --(a free batch slot)--> engine.add_request --> running
    worker  --engine.step()--> TokenEvents --loop.call_soon_threadsafe--> the job's asyncio.Queue --> handler

    waiting   rows admitted to the server but not yet in the engine; at most max_queue of them, so a
              request that would overflow it is refused at once (503 + Retry-After) instead of waiting
              without bound
    running   rows in the engine, at most max_batch_size: a newcomer joins at the next step, a finished
              row leaves, and its slot takes the next waiting row (continuous batching)

A Job is one HTTP request: its choices (n of them, for each prompt) are rows that run independently and
report on one queue as (choice index, TokenEvent). A client that goes away cancels its job: rows still
waiting are dropped, running ones are cancelled in the engine (Engine.cancel) and free their slot.
An exception from the engine fails the rows it concerns (their handlers answer 500); the worker lives on.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field

log = logging.getLogger("gptkit.serve")


class QueueFull(Exception):
    """More rows than the queue has room for; `retry_after_s` is a guess at when there will be room."""

    def __init__(self, retry_after_s: int):
        super().__init__("queue full")
        self.retry_after_s = retry_after_s


@dataclass(eq=False)  # compared and hashed by identity: a job is a dict key
class Job:
    """One request's rows (prompt ids, SamplingParams), and where their events come back."""

    rows: list[tuple[list[int], object]]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # items: (choice, TokenEvent | Exception)
    cancelled: bool = False
    open_choices: int = 0  # asyncio side: choices that have not finished yet
    first_text_seen: bool = False  # asyncio side: for the time-to-first-token metric

    def __post_init__(self):
        self.open_choices = len(self.rows)

    async def next_event(self):
        """The next (choice, TokenEvent) of any of its rows; raises the engine's error for a failed row."""
        choice, event = await self.events.get()
        if choice is None:  # not a row's event: the server's own signal (the client left)
            raise event
        if isinstance(event, BaseException):
            self.open_choices -= 1
            raise event
        if event.finish_reason is not None:
            self.open_choices -= 1
        return choice, event

    @property
    def done(self) -> bool:
        return self.open_choices == 0


class Scheduler:
    def __init__(self, engine, max_batch_size: int, max_queue: int):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._lock = threading.Condition()
        self._waiting: deque[tuple[Job, int]] = deque()  # (job, choice) not yet in the engine
        self._to_cancel: list[Job] = []
        self._running: dict[int, tuple[Job, int]] = {}  # engine request id -> (job, choice); worker only
        self._cancelling: set[int] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # --- the asyncio side -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="gptkit-engine", daemon=True)
        self._thread.start()

    def submit(self, rows: list[tuple[list[int], object]]) -> Job:
        """Queue a request's rows, all or none: QueueFull when the queue lacks room for them all."""
        job = Job(rows, asyncio.get_running_loop())
        with self._lock:
            # the rows that would wait once every batch slot is taken, these included
            overflow = len(self._running) + len(self._waiting) + len(rows) - self.max_batch_size
            if overflow > self.max_queue or self._stopping:
                raise QueueFull(retry_after_s=max(1, len(self._waiting) // self.max_batch_size))
            self._waiting.extend((job, choice) for choice in range(len(rows)))
            self._lock.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Stop a job's rows (its client left): waiting ones are dropped, running ones cancelled."""
        with self._lock:
            if job.cancelled:
                return
            job.cancelled = True
            self._to_cancel.append(job)
            self._lock.notify()

    def stop(self) -> None:
        """End the worker (after the server has drained its requests); cancels anything left."""
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    # --- the worker thread ------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not (self._stopping or self._waiting or self._to_cancel or self._running):
                    self._lock.wait()
                if self._stopping:
                    for request_id in self._running:
                        self.engine.cancel(request_id)
                    self._running.clear()
                    return
                cancels, self._to_cancel = self._to_cancel, []
                self._waiting = deque(item for item in self._waiting if not item[0].cancelled)
                admitted = []
                while self._waiting and len(self._running) + len(admitted) < self.max_batch_size:
                    admitted.append(self._waiting.popleft())
            self._cancel_running(cancels)
            for job, choice in admitted:
                self._add(job, choice)
            if self._running:
                self._step()

    def _cancel_running(self, jobs: list[Job]) -> None:
        for request_id, (job, _) in list(self._running.items()):
            if job in jobs:
                self.engine.cancel(request_id)
                self._cancelling.add(request_id)

    def _add(self, job: Job, choice: int) -> None:
        prompt_ids, params = job.rows[choice]
        try:
            request_id = self.engine.add_request(prompt_ids, params)
        except Exception as e:  # a request the engine refuses fails alone
            log.exception("the engine refused a request")
            self._deliver({job: [(choice, e)]})
            return
        self._running[request_id] = (job, choice)

    def _step(self) -> None:
        try:
            events = self.engine.step()
        except Exception as e:
            log.exception("engine step failed; failing its running requests")
            failed: dict[Job, list] = {}
            for request_id, (job, choice) in self._running.items():
                self.engine.cancel(request_id)
                failed.setdefault(job, []).append((choice, e))
            self._running.clear()
            self._deliver(failed)
            return
        self.steps += 1
        by_job: dict[Job, list] = {}
        for event in events:
            owner = self._running.get(event.request_id)
            if owner is None:
                continue
            job, choice = owner
            if event.finish_reason is not None:
                del self._running[event.request_id]
                self._cancelling.discard(event.request_id)
            if not job.cancelled:
                by_job.setdefault(job, []).append((choice, event))
        # The engine frees a cancelled row at the step after cancel(): its slot is free now, whether or
        # not the engine reported an event for it.
        for request_id in self._cancelling:
            self._running.pop(request_id, None)
        self._cancelling.clear()
        self._deliver(by_job)

    @staticmethod
    def _deliver(by_job: dict[Job, list]) -> None:
        # One hand-off per job per step, not per token: the event loop wakes once for all of its rows.
        for job, items in by_job.items():
            try:
                job.loop.call_soon_threadsafe(_put_all, job.events, items)
            except RuntimeError:  # the event loop is closed: the server is gone
                pass


def _put_all(queue: asyncio.Queue, items: list) -> None:
    for item in items:
        queue.put_nowait(item)
