"""A Flask receiver for Herald webhooks: verify the raw body, dedupe by event id, apply.

    pip install './sdks/python[flask]'
    HERALD_WEBHOOK_SECRET=hsec_… flask --app examples.flask_receiver:app run --port 8000
"""

from __future__ import annotations

import json
import os
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

    @app.post("/hooks/herald")
    def herald_webhook() -> tuple[str, int]:
        raw = request.get_data()  # the raw bytes: verify before parsing
        try:
            verified = WebhookVerifier(secrets()).verify(request.headers, raw)
        except WebhookVerificationError as e:
            return str(e), 400
        if not dedupe.first_time(verified.event_id):
            return "", 204  # a redelivery of an event already applied
        try:
            apply(json.loads(raw))
        except Exception:
            dedupe.forget(verified.event_id)  # let Herald's retry apply it
            raise
        return "", 204

    return app


def _from_env() -> Flask:
    # During a rotation, set both: HERALD_WEBHOOK_SECRET="hsec_new hsec_old".
    secrets = os.environ.get("HERALD_WEBHOOK_SECRET", "").split()
    return create_app(lambda: secrets, MemoryDedupe(), lambda event: print("applied", event["id"], event["type"]))


if os.environ.get("HERALD_WEBHOOK_SECRET"):
    app = _from_env()
