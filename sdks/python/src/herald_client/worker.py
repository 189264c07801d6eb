"""A worker loop: claims operations with a long poll, runs a handler for each in a
thread, heartbeats in the background (reporting progress, learning of cancel requests,
keeping the lease), then completes or fails the operation. :meth:`Worker.stop` stops
claiming and lets the jobs in hand finish; :meth:`Worker.run` then returns."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._types import ClaimedOperation
from .client import Herald, operation_id
from .errors import AuthenticationError, ConflictError, HeraldError, NotFoundError, PermissionDeniedError

log = logging.getLogger("herald_client.worker")


class JobFailed(Exception):
    """Raise from a handler to end the operation with this error. ``retryable=True``
    hands it back to the queue instead (up to the type's ``max_attempts``)."""

    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable


class Job:
    """One claimed operation, as a handler sees it."""

    def __init__(self, operation: ClaimedOperation) -> None:
        self.operation = operation
        self.id = operation_id(operation)
        self.lease_token = operation["lease_token"]
        self.attempt = operation["attempt"]
        self.input: Any = operation.get("input")
        self.metadata: dict[str, Any] = dict(operation.get("metadata") or {})
        #: Set when a heartbeat learns that a client cancelled the operation, or that the
        #: lease was lost. The handler should stop (``raise JobFailed("CANCELLED", …)``).
        self.cancelled = threading.Event()
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled.is_set()

    def set_progress(self, percent: float) -> None:
        """Sent on the next heartbeat; pollers see it as ``metadata.progress_percent``."""
        self.set_metadata("progress_percent", max(0, min(100, percent)))

    def set_metadata(self, key: str, value: Any) -> None:
        """Any metadata field, sent on the next heartbeat. A value that cannot be sent as
        JSON raises TypeError here (rather than failing every later heartbeat)."""
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata {key!r} is not JSON-serialisable: {e}") from e
        with self._lock:
            self._pending[key] = value

    def _take_pending(self) -> dict[str, Any]:
        with self._lock:
            pending, self._pending = self._pending, {}
            return pending

    def _put_back(self, metadata: dict[str, Any]) -> None:
        with self._lock:
            for k, v in metadata.items():
                self._pending.setdefault(k, v)


Handler = Callable[[Job], Any]


class Worker:
    """Runs ``handler(job)`` for every operation it claims.

    The handler's return value is the operation's ``response``; raising
    :class:`JobFailed` fails it; any other exception fails it as retryable with code
    ``HANDLER_ERROR`` (so another attempt runs, up to ``max_attempts``). A return value that
    cannot be serialised as JSON fails it for good with ``RESPONSE_NOT_JSON``.

    A BaseException that is not an Exception (SystemExit, a test framework's failure, gevent's
    Timeout) stops the job's heartbeat, fails the attempt as retryable with
    ``HANDLER_ABORTED`` (so the next attempt need not wait for the lease to lapse), frees the
    slot, and is then raised again in the job's thread."""

    def __init__(
        self,
        client: Herald,
        handler: Handler,
        *,
        types: Sequence[str] = (),
        lease: float | None = None,
        claim_wait: float = 20.0,
        heartbeat_every: float = 10.0,
        concurrency: int = 1,
    ) -> None:
        self.client = client
        self.handler = handler
        self.types = list(types)
        self.lease = lease
        self.claim_wait = claim_wait
        self.heartbeat_every = heartbeat_every
        self.concurrency = max(1, concurrency)
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._jobs: list[threading.Thread] = []

    def stop(self) -> None:
        """Stops claiming; :meth:`run` returns once the jobs in hand have reported. A claim
        in flight is abandoned: an operation it had just claimed comes back after its lease."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Claims and runs jobs until :meth:`stop`. Raises only when Herald refuses the key."""
        pause = 0.2
        try:
            while not self._stop.is_set():
                free = self._acquire_slots()
                if free == 0:
                    break
                try:
                    claimed = self._claim(free)
                except (AuthenticationError, PermissionDeniedError):
                    self._release(free)
                    raise
                except Exception as e:  # noqa: BLE001 - transport trouble or a bug: retry with backoff
                    self._release(free)
                    log.warning("claim failed; retrying: %s", e)
                    self._stop.wait(pause)
                    pause = min(pause * 2, 10.0)
                    continue
                if claimed is None:  # stopped while the claim was in flight
                    break
                pause = 0.2
                self._release(free - len(claimed))
                for op in claimed:
                    t = threading.Thread(target=self._run_job, args=(op,), name=f"herald-job-{operation_id(op)}")
                    self._jobs.append(t)
                    t.start()
                self._jobs = [t for t in self._jobs if t.is_alive()]
        finally:
            for t in self._jobs:
                t.join()

    def _acquire_slots(self) -> int:
        while not self._slots.acquire(timeout=0.1):
            if self._stop.is_set():
                return 0
        n = 1
        while n < self.concurrency and self._slots.acquire(blocking=False):
            n += 1
        return n

    def _release(self, n: int) -> None:
        for _ in range(n):
            self._slots.release()

    def _claim(self, n: int) -> list[ClaimedOperation] | None:
        """The long poll runs in its own thread so that stop() need not wait for it."""
        answer: queue.Queue[list[ClaimedOperation] | BaseException] = queue.Queue()
        abandoned = threading.Event()

        def claim() -> None:
            try:
                ops = self.client.claim(self.types, lease=self.lease, max=n, wait=self.claim_wait)
            except BaseException as e:  # handed to the loop
                answer.put(e)
                return
            if abandoned.is_set() and ops:
                log.info("dropping %d operation(s) claimed during stop; they return after the lease", len(ops))
            answer.put(ops)

        threading.Thread(target=claim, daemon=True, name="herald-claim").start()
        while True:
            try:
                got = answer.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    abandoned.set()
                    self._release(n)
                    return None
                continue
            if isinstance(got, BaseException):
                raise got
            return got

    def _run_job(self, op: ClaimedOperation) -> None:
        job = Job(op)
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(job, beat_stop), daemon=True)
        beat.start()
        escaped: BaseException | None = None
        try:
            try:
                outcome: tuple[str, Any] = ("complete", self.handler(job))
            except JobFailed as e:
                outcome = ("fail", e)
            except Exception as e:  # noqa: BLE001 - a handler's bug fails the attempt, not the worker
                log.exception("handler failed on %s", job.id)
                outcome = ("fail", JobFailed("HANDLER_ERROR", f"{type(e).__name__}: {e}", retryable=True))
            except BaseException as e:  # re-raised below, once the job is cleaned up
                escaped = e
                outcome = ("fail", JobFailed("HANDLER_ABORTED", f"{type(e).__name__}: {e}", retryable=True))
            if outcome[0] == "complete":
                try:
                    json.dumps(outcome[1], allow_nan=False)
                except (TypeError, ValueError) as e:
                    log.error("the response of %s is not JSON-serialisable: %s", job.id, e)
                    message = f"the handler's result cannot be serialised as JSON: {type(e).__name__}: {e}"
                    outcome = ("fail", JobFailed("RESPONSE_NOT_JSON", message))
        finally:
            beat_stop.set()
            beat.join()
        try:
            self._report(job, outcome)
        finally:
            self._slots.release()
        if escaped is not None:
            raise escaped

    def _report(self, job: Job, outcome: tuple[str, Any]) -> None:
        try:
            unsent = job._take_pending()
            if unsent and not job.is_cancelled:
                # Metadata set since the last beat would otherwise be lost.
                try:
                    self.client.heartbeat(job.id, job.lease_token, metadata=unsent, lease=self.lease)
                except HeraldError as e:
                    log.debug("final metadata of %s not stored: %s", job.id, e)
            if outcome[0] == "complete":
                self.client.complete(job.id, job.lease_token, outcome[1])
            else:
                f: JobFailed = outcome[1]
                self.client.fail(job.id, job.lease_token, {"code": f.code, "message": f.message}, retryable=f.retryable)
        except HeraldError as e:
            # A 409 or 404 means the lease was lost (expired, or cancelled and finished):
            # Herald kept its state and will not take ours.
            log.warning("could not report the outcome of %s: %s", job.id, e)
        except Exception:  # noqa: BLE001 - the job's thread must still free its slot
            log.exception("could not report the outcome of %s", job.id)

    def _heartbeat_loop(self, job: Job, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_every):
            metadata = job._take_pending()
            try:
                reply = self.client.heartbeat(job.id, job.lease_token, metadata=metadata or None, lease=self.lease)
            except (ConflictError, NotFoundError):
                job.cancelled.set()  # the lease is gone: nothing done now will count
                return
            except Exception as e:  # noqa: BLE001 - the lease must keep being renewed
                job._put_back(metadata)
                log.warning("heartbeat of %s failed; will retry: %s", job.id, e)
                continue
            if reply.get("cancel_requested"):
                job.cancelled.set()
