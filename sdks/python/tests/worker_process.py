"""A worker in its own process for test_worker: claims, reports, heartbeats, never finishes."""

import sys
import threading

from herald_client import Herald, Job, Worker


def handler(job: Job) -> None:
    job.set_progress(10)
    print("claimed", job.id, job.attempt, flush=True)
    threading.Event().wait()  # until killed


Worker(Herald(sys.argv[1], sys.argv[2]), handler, types=["transcode"], claim_wait=5, heartbeat_every=0.2).run()
