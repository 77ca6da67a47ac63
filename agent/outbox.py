"""The durable outbox: events and snapshots on disk until the broker acknowledges them.

Every durable message is committed to SQLite (WAL, ``synchronous=FULL``: it survives a power cut)
before ``add`` returns, so nothing the agent decided on is lost if the process dies, the broker
is away or the network is down. The publisher deletes rows only on the broker's PUBACK, in
batches (one transaction per batch, which is what makes replay fast), and a restarted agent
replays what is left, oldest first.

Bounds: events are never evicted; above ``event_high_water`` rows the outbox raises an alarm
(``high_water``) instead. Snapshots share a byte quota; past it the oldest unsent snapshots are
dropped and counted. If the disk is full or read-only, messages are kept in memory instead (still
published live), counted as ``unpersisted``, and the error is logged once per interval; the disk
is tried again with every message, so the outbox recovers by itself when space returns. A corrupt
database is moved aside and a new one created.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.messages import Message

log = logging.getLogger(__name__)

ERROR_LOG_INTERVAL_S = 60.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass
class Entry:
    """A message waiting for its PUBACK; ``row`` is its outbox row, or None if only in memory."""

    message: Message
    kind: str
    row: int | None
    #: Called on the publisher thread once the broker acknowledged it (QoS 1 only).
    on_acked: Callable[[], None] | None = None


@dataclass
class OutboxStats:
    persisted: int = 0
    unpersisted: int = 0
    dropped_snapshots: int = 0
    delivered: int = 0


class Outbox:
    def __init__(self, path: Path, *, snapshot_quota_bytes: int, event_high_water: int) -> None:
        self.path = path
        self.snapshot_quota_bytes = snapshot_quota_bytes
        self.event_high_water = event_high_water
        self.stats = OutboxStats()
        self._lock = threading.Lock()
        self._last_error_log = float("-inf")
        self._db = self._open()
        #: The device's last event ``seq``; kept in the database with the events it numbers.
        self.seq = self._read_seq()

    # -- opening ----------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self._connect()
        except sqlite3.DatabaseError as error:
            if "malformed" not in str(error) and "not a database" not in str(error):
                self._log_error(f"cannot open the outbox {self.path}: {error}; keeping messages in memory")
                return None
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s is corrupt (%s); moved aside to %s and starting a new one", self.path, error, aside)
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    source.replace(Path(f"{aside}{suffix}"))
            try:
                return self._connect()
            except sqlite3.DatabaseError as again:
                self._log_error(f"cannot create a new outbox {self.path}: {again}; keeping messages in memory")
                return None
        except OSError as error:
            self._log_error(f"cannot open the outbox {self.path}: {error}; keeping messages in memory")
            return None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check failed)")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _log_error(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= ERROR_LOG_INTERVAL_S:
            self._last_error_log = now
            log.error("%s", text)

    def _read_seq(self) -> int:
        if self._db is None:
            return 0
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        except sqlite3.Error:
            return 0
        return int(row[0]) if row else 0

    # -- the producer side --------------------------------------------------------------------
    def add_event(self, topic: str, event: dict[str, Any]) -> Entry:
        """Stamp ``event`` with the device's next ``seq`` and persist both in one transaction,
        so a crash can neither lose a numbered event nor leave a gap in the numbers."""
        with self._lock:
            self._reopen()
            self.seq += 1
            event["seq"] = self.seq
            message = Message.json(topic, event, qos=1)
            row = self._insert(message, "event", seq=self.seq)
            if row is None:
                self.stats.unpersisted += 1
            else:
                self.stats.persisted += 1
        return Entry(message, "event", row)

    def add(self, message: Message, kind: str) -> Entry:
        """Persist ``message`` (durably, before returning) and return its entry for the send queue."""
        with self._lock:
            self._reopen()
            row = self._insert(message, kind)
            if row is None:
                self.stats.unpersisted += 1
            else:
                self.stats.persisted += 1
        return Entry(message, kind, row)

    def _reopen(self) -> None:
        """Try the disk again if it failed before. The stored ``seq`` may be ahead of the one
        counted in memory (the database could not be read at start): numbers go on from the
        larger, never back over ones already sent."""
        if self._db is None:
            self._db = self._open()
            self.seq = max(self.seq, self._read_seq())

    def _insert(self, message: Message, kind: str, seq: int | None = None) -> int | None:
        """The message's new row, or ``None`` if the disk failed (call :meth:`_reopen` first)."""
        if self._db is None:
            return None
        props = json.dumps({"user": message.user_properties, "content_type": message.content_type})
        try:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO outbox (kind, topic, payload, qos, retain, properties, created) VALUES (?,?,?,?,?,?,?)",
                (kind, message.topic, message.payload, message.qos, int(message.retain), props, time.time()),
            )
            if seq is not None:
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (seq,))
            self._db.execute("COMMIT")
            return cursor.lastrowid
        except sqlite3.Error as error:  # disk full (SQLITE_FULL), read-only, I/O error
            self._rollback()
            self._log_error(f"outbox {self.path}: cannot persist a {kind} ({error}); keeping it in memory "
                            "and publishing it live; counted in metrics as unpersisted")
            return None

    # -- the publisher side -------------------------------------------------------------------
    def pending(self) -> list[Entry]:
        """Everything persisted and not yet acknowledged, oldest first (replayed after a restart)."""
        if self._db is None:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, topic, payload, qos, retain, properties FROM outbox ORDER BY id"
            ).fetchall()
        entries = []
        for row, kind, topic, payload, qos, retain, props_json in rows:
            props = json.loads(props_json)
            message = Message(topic, bytes(payload), qos=qos, retain=bool(retain),
                              user_properties=props.get("user") or {}, content_type=props.get("content_type"))
            entries.append(Entry(message, kind, row))
        return entries

    def delivered(self, rows: list[int]) -> None:
        """Delete acknowledged rows, in one transaction."""
        self.stats.delivered += len(rows)
        if not rows or self._db is None:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("DELETE FROM outbox WHERE id = ?", [(row,) for row in rows])
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._rollback()
                self._log_error(f"outbox {self.path}: cannot delete delivered rows ({error}); they may be "
                                "sent again after a restart")

    def drop_oldest_snapshots(self, protected: set[int]) -> list[int]:
        """Enforce the snapshot byte quota; returns the rows dropped (never ``protected`` ones)."""
        if self._db is None:
            return []
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT id, length(payload) FROM outbox WHERE kind = 'snapshot' ORDER BY id DESC"
                ).fetchall()
                total, dropped = 0, []
                for row, size in rows:
                    total += size
                    if total > self.snapshot_quota_bytes and row not in protected:
                        dropped.append(row)
                dropped.reverse()  # oldest first
                if dropped:
                    self._db.execute("BEGIN")
                    self._db.executemany("DELETE FROM outbox WHERE id = ?", [(row,) for row in dropped])
                    self._db.execute("COMMIT")
            except sqlite3.Error as error:
                self._rollback()
                self._log_error(f"outbox {self.path}: cannot enforce the snapshot quota ({error})")
                return []
        self.stats.dropped_snapshots += len(dropped)
        return dropped

    def depth(self) -> dict[str, int]:
        """Rows and bytes on disk, per kind."""
        if self._db is None:
            return {}
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT kind, count(*), coalesce(sum(length(payload)), 0) FROM outbox GROUP BY kind"
                ).fetchall()
            except sqlite3.Error:
                return {}
        out: dict[str, int] = {}
        for kind, count, size in rows:
            out[f"{kind}s"] = count
            out[f"{kind}_bytes"] = size
        return out

    @property
    def high_water(self) -> bool:
        return self.depth().get("events", 0) >= self.event_high_water

    def _rollback(self) -> None:
        try:
            if self._db is not None and self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
