"""A Flask receiver for Herald webhooks: verify the raw body, dedupe by event id, apply.

An event counts as seen only once it has been applied: a copy that arrives while the first is
still being applied is answered 409 with ``Retry-After`` (Herald retries it later), and if
applying fails the event is forgotten and answered 500, so Herald's retry applies it. The
in-progress set is per process; with several replicas, keep that marker in your database too.

    pip install './sdks/python[flask]'
    HERALD_WEBHOOK_SECRET=hsec_… flask --app examples.flask_receiver:app run --port 8000
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask, request

from herald_client import DedupeStore, MemoryDedupe, WebhookVerificationError, WebhookVerifier


def create_app(
    secrets: Callable[[], Sequence[str]],
    dedupe: DedupeStore,
    apply: Callable[[dict[str, Any]], None],
) -> Flask:
    app = Flask(__name__)
    in_progress: set[str] = set()
    lock = threading.Lock()

    @app.post("/hooks/herald")
    def herald_webhook() -> tuple[str, int, dict[str, str]]:
        raw = request.get_data()  # the raw bytes: verify before parsing
        try:
            verified = WebhookVerifier(secrets()).verify(request.headers, raw)
        except WebhookVerificationError as e:
            return str(e), 400, {}
        event_id = verified.event_id
        with lock:
            if event_id in in_progress:
                # Being applied right now: not done yet, so not a 2xx. Herald retries.
                return "event in progress", 409, {"Retry-After": "1"}
            in_progress.add(event_id)
        try:
            if not dedupe.first_time(event_id):
                return "", 204, {}  # a redelivery of an event already applied
            try:
                apply(json.loads(raw))
            except Exception:
                dedupe.forget(event_id)  # not applied: let Herald's retry apply it
                raise
            return "", 204, {}
        finally:
            with lock:
                in_progress.discard(event_id)

    return app


def _from_env() -> Flask:
    # During a rotation, set both: HERALD_WEBHOOK_SECRET="hsec_new hsec_old".
    secrets = os.environ.get("HERALD_WEBHOOK_SECRET", "").split()
    return create_app(lambda: secrets, MemoryDedupe(), lambda event: print("applied", event["id"], event["type"]))


if os.environ.get("HERALD_WEBHOOK_SECRET"):
    app = _from_env()
