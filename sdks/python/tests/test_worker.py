"""The worker loop: progress, completion, a cancel seen on heartbeat, graceful stop, and a
worker killed mid-operation (kill -9 of its process) whose operation another worker takes
over after the lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from herald_client import Job, JobFailed, Worker

from .conftest import Server, TenantKit

HERE = Path(__file__).resolve().parent


def start(worker: Worker) -> threading.Thread:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return t


def test_worker_reports_progress_and_completes(tenant: TenantKit) -> None:
    halfway = threading.Event()
    go_on = threading.Event()

    def handler(job: Job) -> Any:
        job.set_progress(50)
        job.set_metadata("stage", "encoding")
        halfway.set()
        go_on.wait(30)
        job.set_progress(100)  # flushed before :complete
        return {"echo": job.input}

    worker = Worker(tenant.worker, handler, types=["transcode"], claim_wait=1, heartbeat_every=0.2)
    t = start(worker)
    op = tenant.client.trigger("/videos", {"n": 1})
    assert halfway.wait(30)
    # A heartbeat carries the progress to the pollers.
    seen = tenant.client.wait_long_poll(op["name"], timeout=0.1)
    while seen["metadata"].get("progress_percent") != 50:
        seen = tenant.client.wait_long_poll(op["name"], timeout=0.2)
    assert seen["metadata"]["stage"] == "encoding" and seen["done"] is False
    go_on.set()
    done = tenant.client.wait(op["name"], timeout=30)
    assert done["response"] == {"echo": {"n": 1}}
    assert done["metadata"]["progress_percent"] == 100
    worker.stop()
    t.join(30)
    assert not t.is_alive()


def test_cancel_is_seen_on_heartbeat(tenant: TenantKit) -> None:
    running = threading.Event()

    def handler(job: Job) -> Any:
        running.set()
        if job.cancelled.wait(30):
            raise JobFailed("CANCELLED", "cancelled by the client")
        return "not cancelled"

    worker = Worker(tenant.worker, handler, types=["transcode"], claim_wait=1, heartbeat_every=0.2)
    t = start(worker)
    op = tenant.client.trigger("/videos", {"n": 2})
    assert running.wait(30)
    requested = tenant.client.cancel(op["name"])
    assert requested["done"] is False  # running: the worker hears of it on its next beat
    done = tenant.client.wait(op["name"], timeout=30)
    assert done["error"]["code"] == "CANCELLED"
    worker.stop()
    t.join(30)


def test_stop_lets_the_job_in_hand_finish(tenant: TenantKit) -> None:
    running = threading.Event()
    release = threading.Event()

    def handler(job: Job) -> Any:
        running.set()
        release.wait(30)
        return "finished after stop"

    worker = Worker(tenant.worker, handler, types=["transcode"], claim_wait=5, heartbeat_every=0.2)
    t = start(worker)
    op = tenant.client.trigger("/videos", {"n": 3})
    assert running.wait(30)
    worker.stop()
    t.join(0.5)
    assert t.is_alive(), "run returned with a job in hand"
    release.set()
    t.join(30)
    assert not t.is_alive()
    assert tenant.client.get_operation(op["name"])["response"] == "finished after stop"


def test_a_killed_worker_loses_its_operation_to_another(herald: Server, tenant: TenantKit) -> None:
    op = tenant.client.trigger("/videos", {"n": 4})
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "worker_process.py"), herald.url, tenant.worker._key],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:2] == ["claimed", op["name"].removeprefix("operations/")] and line[2] == "1"
        # It heartbeats: its progress reaches the poller.
        seen = tenant.client.get_operation(op["name"])
        while seen["metadata"].get("progress_percent") != 10:
            seen = tenant.client.wait_long_poll(op["name"], timeout=0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

    # No more heartbeats: after the 2 s lease a second worker claims it (attempt 2).
    second_job: list[Job] = []

    def handler(job: Job) -> Any:
        second_job.append(job)
        return {"taken_over": True}

    worker = Worker(tenant.worker, handler, types=["transcode"], claim_wait=5, heartbeat_every=0.5)
    t = start(worker)
    done = tenant.client.wait(op["name"], timeout=60)
    worker.stop()
    t.join(30)
    assert done["response"] == {"taken_over": True}
    assert [j.attempt for j in second_job] == [2]
