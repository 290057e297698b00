"""The persistent job store: every job's request, state, progress and outputs in one SQLite file.

    <output>/.framepack-jobs.sqlite      (plus SQLite's -wal and -shm files while it is open)

A server restart, even a SIGKILL, keeps the queue: queued jobs are still queued, and a job whose
process died while running is found by its stale claim (`reclaim_stale`) and becomes resumable
from its checkpoints, or queued again. Several processes may share one store (worker processes,
a CLI batch beside a server); a job is taken with one atomic `UPDATE ... WHERE status='queued'`,
so two of them never run the same job.

A claim names its owner (`host:pid:start time:worker`) and holds a lease that the owner renews
while the job runs. A claim is stale when its owner process is gone from this machine, or when
its lease ran out (an owner on another machine that stopped renewing).

The store uses WAL (readers never block the writer), one connection per thread, and a schema
version in `meta`; a store written by a newer version is refused rather than misread.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from framepack.errors import OutputError
from framepack.jobs.record import JobRecord
from framepack.request.events import Status

log = logging.getLogger("framepack.jobs")

STORE_NAME = ".framepack-jobs.sqlite"
SCHEMA_VERSION = 1
LEASE_S = 120.0
"""How long a claim holds without being renewed (a running job renews it every few seconds)."""
KEEP_FINISHED = 2000
"""Finished jobs kept in the store; older ones are pruned."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    turn INTEGER NOT NULL,
    status TEXT NOT NULL,
    batch TEXT,
    request TEXT,
    options TEXT NOT NULL,
    start TEXT,
    record TEXT NOT NULL,
    owner TEXT,
    lease REAL,
    stop INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, turn);
CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch);
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (updated);
CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, created REAL NOT NULL, name TEXT NOT NULL,
                                    info TEXT NOT NULL);
"""


class StoreError(OutputError):
    """The job store cannot be opened or written (a damaged file, a newer schema, a full disk)."""


@dataclass
class StoredJob:
    """One row of the store: the job's record and what it takes to run it."""

    id: str
    status: Status
    record: JobRecord
    options: dict[str, Any]
    request: str | None = None
    """GenerationRequest.to_json(); dropped when the job completes (its images can be large)."""
    start: dict[str, Any] | None = None
    """How the job starts (framepack.jobs.handle.start_to_dict): None for a new generation."""
    batch: str | None = None
    owner: str | None = None
    stop: bool = False
    updated: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def owner_id(worker: str = "") -> str:
    """This process's claim name: host, pid, start time, and the worker's name."""
    from framepack.io.workdir import this_process

    pid, started = this_process()
    return f"{socket.gethostname()}:{pid}:{started}:{worker}"


def owner_is_gone(owner: str | None) -> bool:
    """Whether the process of a claim on this machine has ended (claims from other hosts: unknown, False)."""
    from framepack.io.workdir import owner_alive

    try:
        host, pid, started, _ = (owner or "").split(":", 3)
        pid, started = int(pid), int(started)
    except ValueError:
        return True  # no owner, or one we cannot read: nobody can be running it
    return host == socket.gethostname() and not owner_alive(pid, started)


class JobStore:
    """A SQLite job store; safe to share between threads and processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._setup()
        except sqlite3.Error as error:
            raise StoreError(f"cannot open the job store {self.path}: {error}") from error

    @classmethod
    def in_folder(cls, folder: str | os.PathLike) -> "JobStore":
        return cls(Path(folder) / STORE_NAME)

    # ---- connection ---------------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA busy_timeout = 30000")
            connection.execute("PRAGMA synchronous = NORMAL")
            self._local.connection = connection
            with self._guard:
                self._connections.append(connection)
        return connection

    def _setup(self) -> None:
        connection = self._connection()
        connection.execute("PRAGMA journal_mode = WAL")
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row["value"]) > SCHEMA_VERSION:
                raise StoreError(f"the job store {self.path} has schema version {row['value']}; this version of "
                                 f"FramePack reads version {SCHEMA_VERSION} (use a newer FramePack or another "
                                 f"output folder)")

    def _write(self):
        """A write transaction (BEGIN IMMEDIATE: the database lock is taken at once, not on first write)."""
        return _Transaction(self._connection())

    def close(self) -> None:
        with self._guard:
            for connection in self._connections:
                try:
                    connection.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
        self._local = threading.local()

    # ---- adding ---------------------------------------------------------------------------------
    def add(self, record: JobRecord, request_json: str | None, options: dict[str, Any], *,
            start: dict[str, Any] | None = None, batch: str | None = None) -> None:
        """Store a new job (or put an existing one back in the queue with a new record), last in line."""
        now = time.time()
        with self._write() as db:
            turn = db.execute("SELECT COALESCE(MAX(turn), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "INSERT INTO jobs (id, turn, status, batch, request, options, start, record, owner, lease, stop, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?) "
                "ON CONFLICT(id) DO UPDATE SET turn = excluded.turn, status = excluded.status, "
                "batch = COALESCE(excluded.batch, jobs.batch), request = COALESCE(excluded.request, jobs.request), "
                "options = excluded.options, start = excluded.start, record = excluded.record, owner = NULL, "
                "lease = NULL, stop = 0, updated = excluded.updated",
                (record.id, turn, record.status.value, batch, request_json, _dump(options), _dump(start),
                 _dump(record.to_dict()), now))

    # ---- claiming -------------------------------------------------------------------------------
    def claim_next(self, owner: str) -> StoredJob | None:
        """Take the oldest queued job for `owner` and mark it running; None when nothing waits."""
        with self._write() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY turn LIMIT 1").fetchone()
            if row is None:
                return None
            return self._claim_locked(db, row["id"], owner)

    def claim(self, job_id: str, owner: str) -> StoredJob | None:
        """Take queued job `job_id`; None when it is not queued any more (cancelled, or another took it)."""
        with self._write() as db:
            return self._claim_locked(db, job_id, owner)

    def _claim_locked(self, db, job_id: str, owner: str) -> StoredJob | None:
        now = time.time()
        row = db.execute("SELECT record FROM jobs WHERE id = ? AND status = 'queued'", (job_id,)).fetchone()
        if row is None:
            return None
        record = JobRecord.from_dict(json.loads(row["record"]))
        record.status, record.started, record.worker = Status.RUNNING, now, owner.split(":", 3)[-1] or None
        record.updates += 1
        changed = db.execute("UPDATE jobs SET status = 'running', owner = ?, lease = ?, stop = 0, record = ?, "
                             "updated = ? WHERE id = ? AND status = 'queued'",
                             (owner, now + LEASE_S, _dump(record.to_dict()), now, job_id)).rowcount
        if changed != 1:
            return None
        return self._row(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def unclaim(self, job_id: str, owner: str) -> bool:
        """Put a job `owner` claimed but did not start back in the queue, in its place."""
        with self._write() as db:
            return db.execute("UPDATE jobs SET status = 'queued', owner = NULL, lease = NULL WHERE id = ? AND "
                              "owner = ? AND status = 'running'", (job_id, owner)).rowcount == 1

    def renew(self, job_id: str, owner: str) -> bool:
        """Extend `owner`'s claim on a running job; False when the claim is no longer theirs."""
        with self._write() as db:
            return db.execute("UPDATE jobs SET lease = ? WHERE id = ? AND owner = ? AND status = 'running'",
                              (time.time() + LEASE_S, job_id, owner)).rowcount == 1

    # ---- progress and the end --------------------------------------------------------------------
    def save_record(self, record: JobRecord, owner: str | None = None) -> bool:
        """Save a running job's progress (only while `owner` still holds it, when given)."""
        now = time.time()
        query = "UPDATE jobs SET record = ?, updated = ?, lease = ? WHERE id = ?"
        values: list[Any] = [_dump(record.to_dict()), now, now + LEASE_S, record.id]
        if owner is not None:
            query += " AND owner = ? AND status = 'running'"
            values.append(owner)
        with self._write() as db:
            return db.execute(query, values).rowcount == 1

    def finish(self, record: JobRecord, owner: str | None = None) -> bool:
        """Record how a job ended (its record's status); a completed job's request is dropped."""
        now = time.time()
        drop = record.status == Status.COMPLETED and not record.checkpoint
        query = ("UPDATE jobs SET status = ?, record = ?, owner = NULL, lease = NULL, stop = 0, updated = ?"
                 + (", request = NULL" if drop else "") + " WHERE id = ?")
        values: list[Any] = [record.status.value, _dump(record.to_dict()), now, record.id]
        if owner is not None:
            query += " AND owner = ?"
            values.append(owner)
        with self._write() as db:
            done = db.execute(query, values).rowcount == 1
            self._prune_locked(db)
        return done

    def cancel_queued(self, job_id: str) -> JobRecord | None:
        """Cancel `job_id` if it is still queued (atomic: a worker cannot take it meanwhile)."""
        with self._write() as db:
            row = db.execute("SELECT record FROM jobs WHERE id = ? AND status = 'queued'", (job_id,)).fetchone()
            if row is None:
                return None
            record = JobRecord.from_dict(json.loads(row["record"]))
            record.status, record.finished = Status.CANCELLED, time.time()
            record.updates += 1
            db.execute("UPDATE jobs SET status = 'cancelled', record = ?, updated = ? WHERE id = ?",
                       (_dump(record.to_dict()), time.time(), job_id))
            return record

    def request_stop(self, job_id: str) -> bool:
        """Ask whoever runs `job_id` to stop it after its current step."""
        with self._write() as db:
            return db.execute("UPDATE jobs SET stop = 1, updated = ? WHERE id = ? AND status = 'running'",
                              (time.time(), job_id)).rowcount == 1

    def stop_requested(self, job_id: str) -> bool:
        row = self._connection().execute("SELECT stop FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["stop"])

    # ---- after a crash -----------------------------------------------------------------------
    def stale(self) -> list[StoredJob]:
        """Running jobs whose owner is gone or whose lease ran out."""
        now = time.time()
        rows = self._connection().execute("SELECT * FROM jobs WHERE status = 'running'").fetchall()
        return [self._row(row) for row in rows if owner_is_gone(row["owner"]) or (row["lease"] or 0) < now]

    def settle_stale(self, job: StoredJob, record: JobRecord, *, start: dict | None = None) -> bool:
        """Give a stale job its new state (queued again, or interrupted), if its claim is unchanged."""
        now = time.time()
        status = record.status.value
        with self._write() as db:
            turn = db.execute("SELECT COALESCE(MAX(turn), 0) + 1 FROM jobs").fetchone()[0]
            return db.execute(
                "UPDATE jobs SET status = ?, record = ?, start = ?, owner = NULL, lease = NULL, stop = 0, "
                "updated = ?, turn = CASE WHEN ? = 'queued' THEN ? ELSE turn END "
                "WHERE id = ? AND status = 'running' AND owner IS ?",
                (status, _dump(record.to_dict()), _dump(start) if start is not None else _dump(job.start), now,
                 status, turn, job.id, job.owner)).rowcount == 1

    # ---- reading -----------------------------------------------------------------------------
    def get(self, job_id: str) -> StoredJob | None:
        row = self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._row(row)

    def jobs(self, *, statuses: Iterable[str] | None = None, batch: str | None = None,
             since: float | None = None, limit: int | None = None, with_request: bool = False) -> list[StoredJob]:
        """Jobs in queue order (oldest first); `limit` keeps the newest ones."""
        columns = "*" if with_request else ("id, turn, status, batch, NULL AS request, options, start, record, owner, "
                                            "lease, stop, updated")
        query, values = f"SELECT {columns} FROM jobs WHERE 1", []
        if statuses is not None:
            statuses = list(statuses)
            query += f" AND status IN ({','.join('?' * len(statuses))})"
            values += statuses
        if batch is not None:
            query += " AND batch = ?"
            values.append(batch)
        if since is not None:
            query += " AND updated > ?"
            values.append(since)
        query += " ORDER BY turn DESC"
        if limit is not None:
            query += " LIMIT ?"
            values.append(int(limit))
        rows = self._connection().execute(query, values).fetchall()
        return [self._row(row) for row in reversed(rows)]

    def count(self, status: str) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    # ---- batches -----------------------------------------------------------------------------
    def add_batch(self, batch_id: str, name: str, info: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute("INSERT INTO batches (id, created, name, info) VALUES (?, ?, ?, ?)",
                       (batch_id, time.time(), name, _dump(info)))

    def batch(self, batch_id: str) -> dict[str, Any] | None:
        row = self._connection().execute("SELECT * FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None:
            return None
        return {"id": row["id"], "created": row["created"], "name": row["name"], "info": json.loads(row["info"])}

    def batches(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._connection().execute("SELECT id FROM batches ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [self.batch(row["id"]) for row in reversed(rows)]

    # ---- details -----------------------------------------------------------------------------
    def _prune_locked(self, db) -> None:
        finished = "status NOT IN ('queued', 'running')"
        count = db.execute(f"SELECT COUNT(*) FROM jobs WHERE {finished}").fetchone()[0]
        if count > KEEP_FINISHED:
            db.execute(f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE {finished} ORDER BY turn "
                       f"LIMIT ?)", (count - KEEP_FINISHED,))

    @staticmethod
    def _row(row: sqlite3.Row) -> StoredJob:
        record = JobRecord.from_dict(json.loads(row["record"]))
        record.status = Status(row["status"])
        return StoredJob(id=row["id"], status=record.status, record=record, options=json.loads(row["options"]),
                         request=row["request"], start=json.loads(row["start"]) if row["start"] else None,
                         batch=row["batch"], owner=row["owner"], stop=bool(row["stop"]), updated=row["updated"])


class _Transaction:
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            try:
                self.connection.execute("COMMIT")
                return
            except sqlite3.Error as error:
                self.connection.execute("ROLLBACK")
                raise StoreError(f"cannot write the job store: {error}") from error
        try:
            self.connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if isinstance(value, sqlite3.Error):
            raise StoreError(f"cannot write the job store: {value}") from value


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str,
                                                 allow_nan=False)
