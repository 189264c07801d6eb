"""Webhooks are at-least-once: the same event can arrive twice. A dedupe store remembers
event ids so that a consumer applies each event once. :class:`MemoryDedupe` keeps the most
recent ids in memory (bounded); :class:`SqliteDedupe` keeps them in a SQLite file, so dedupe
survives restarts; implement :class:`DedupeStore` over your own database likewise
(``INSERT … ON CONFLICT DO NOTHING``).

Dedupe is not ordering: for a resource's final state use the event's ``sequence``."""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from typing import Protocol


class DedupeStore(Protocol):
    def first_time(self, event_id: str) -> bool:
        """Records ``event_id`` and says whether it is new. Atomic: of two concurrent
        calls with one id, exactly one gets True."""
        ...

    def forget(self, event_id: str) -> None:
        """Undoes :meth:`first_time`, so that a redelivery is processed again: call it
        when handling failed."""
        ...


class MemoryDedupe:
    """The last ``capacity`` event ids; older ones are forgotten, so size it above the
    number of events that can arrive within the retry window."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = max(1, capacity)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._seen:
                return False
            if len(self._seen) >= self.capacity:
                self._seen.popitem(last=False)
            self._seen[event_id] = None
            return True

    def forget(self, event_id: str) -> None:
        with self._lock:
            self._seen.pop(event_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class SqliteDedupe:
    """Event ids in a SQLite table (standard library ``sqlite3``): survives restarts and
    is shared by the processes that open the same file."""

    def __init__(self, path: str, table: str = "herald_seen_events") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError("table must be an identifier")
        self._table = table
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (event_id TEXT PRIMARY KEY, seen_at TEXT DEFAULT CURRENT_TIMESTAMP)"
            )

    def first_time(self, event_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(f"INSERT OR IGNORE INTO {self._table} (event_id) VALUES (?)", (event_id,))
            return cur.rowcount == 1

    def forget(self, event_id: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {self._table} WHERE event_id = ?", (event_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
