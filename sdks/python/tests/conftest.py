"""Every test here talks to a real `herald serve` started for the session (a temporary
SQLite database, the config below) and, for webhooks, to real HTTP receivers on loopback."""

from __future__ import annotations

import http.server
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from herald_client import Herald

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent

# The README's config (tests/quickstart_config.toml) plus what the tests need.
CONFIG = """
[[operation_types]]
name = "transcode"
trigger = "POST /videos"
lease = "2s"
max_attempts = 3
retention = "1d"
retry_after = "1s"

[webhooks]
allow_private_destinations = true
schedule = ["0s", "1s", "1s"]
"""


def herald_binary() -> str:
    found = os.environ.get("HERALD_BIN") or str(REPO / "target" / "debug" / "herald")
    if not Path(found).is_file():
        pytest.exit(f"no herald binary at {found}: build it (cargo build -p herald --bin herald) or set HERALD_BIN", 2)
    return found


@dataclass
class Server:
    url: str
    admin_key: str
    process: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)

    def admin(self) -> Herald:
        return Herald(self.url, self.admin_key)


def start_herald(workdir: Path, config: str = CONFIG) -> Server:
    cfg = workdir / "herald.toml"
    cfg.write_text(config)
    admin_key = "admin-" + uuid.uuid4().hex
    env = {**os.environ, "HERALD_ADMIN_KEY": admin_key, "HERALD_LOG": "warn"}
    proc = subprocess.Popen(
        [herald_binary(), "serve", "--listen", "127.0.0.1:0", "--database", f"sqlite://{workdir / 'herald.db'}", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    log: list[str] = []
    for line in proc.stdout:
        log.append(line)
        if line.startswith("herald listening on "):
            url = line.split()[-1]
            break
    else:
        raise RuntimeError("herald exited before listening:\n" + "".join(log))
    # Keep draining its output so it never blocks on a full pipe.
    threading.Thread(target=lambda: [log.append(l) for l in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return Server(url, admin_key, proc, log)


@pytest.fixture(scope="session")
def herald() -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="herald-py-"))
    server = start_herald(workdir)
    yield server
    server.process.kill()
    server.process.wait()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def admin(herald: Server) -> Herald:
    return herald.admin()


@dataclass
class TenantKit:
    id: str
    client: Herald
    worker: Herald  # a worker key scoped to this tenant: tests never claim each other's work


@pytest.fixture
def tenant(herald: Server, admin: Herald) -> TenantKit:
    t = admin.create_tenant("t-" + uuid.uuid4().hex[:8])
    key = admin.create_tenant_key(t["id"])
    worker_key = admin.create_key("worker", tenants=[t["id"]])
    return TenantKit(t["id"], Herald(herald.url, key["key"]), Herald(herald.url, worker_key["key"]))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real webhook receiver on loopback: records every request, answers `status`."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Received] = queue.Queue()
        self.status = 200
        #: Requests for these event ids are answered 500 (recorded all the same).
        self.fail_events: set[str] = set()
        receiver = self

        class Handle(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.requests.put(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                failing = self.headers.get("X-Event-Id") in receiver.fail_events
                self.send_response(500 if failing else receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 30.0) -> Received:
        return self.requests.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


PYTHON = sys.executable
