"""The controller's revisioned state store (SQLite in WAL mode, the embedded default).

Rules:
- One global revision number. Every committed write transaction bumps it by exactly one; every
  object and event written in that transaction carries the new revision.
- One SQLite transaction per change: either everything in a ``Tx`` lands or nothing does, in the
  database and in memory alike (memory is updated only after the database commit succeeded).
- The whole object state is held in memory (the controller is the only writer), so reads and
  scheduler snapshots never touch the disk. Events stay on disk and are paged from there.
- Callers never mutate what they read: objects are frozen; a change is a new value put in a Tx.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from gridmesh.common.codec import decode, encode
from gridmesh.common.model import AllocationId, Event, GprId, HostId, SiteName, WorkspaceName
from gridmesh.controller.model import Allocation, BootstrapToken, Gpr, Host, OverlayRecord, Site, Workspace
from gridmesh.controller.records import ReservationRecord

StoredObject = Site | Host | Workspace | Gpr | Allocation | BootstrapToken | OverlayRecord | ReservationRecord
T = TypeVar("T", Site, Host, Workspace, Gpr, Allocation, BootstrapToken, OverlayRecord, ReservationRecord)

_KINDS: dict[type, str] = {
    Site: "site",
    Host: "host",
    Workspace: "workspace",
    Gpr: "gpr",
    Allocation: "allocation",
    BootstrapToken: "token",
    OverlayRecord: "overlay",
    ReservationRecord: "reservation",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL, id TEXT NOT NULL, revision INTEGER NOT NULL, data TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, revision INTEGER NOT NULL, kind TEXT NOT NULL,
  subject TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_subject ON events (subject, seq);
CREATE INDEX IF NOT EXISTS events_by_revision ON events (revision);
"""


def _key(obj: StoredObject) -> str:
    return obj.name if isinstance(obj, Site | Workspace) else obj.id


class Tx:
    """The changes of one transaction. Reads through a Tx see its own pending writes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.puts: dict[tuple[type, str], StoredObject | None] = {}
        self.events: list[Event] = []

    @property
    def revision(self) -> int:
        """The revision this transaction commits at (the store has one writer, so it is known now)."""
        return self._store.revision + 1

    def put(self, obj: StoredObject) -> None:
        self.puts[(type(obj), _key(obj))] = obj

    def delete(self, cls: type[StoredObject], key: str) -> None:
        self.puts[(cls, key)] = None

    def event(self, event: Event) -> None:
        self.events.append(event)

    def get(self, cls: type[T], key: str) -> T | None:
        if (cls, key) in self.puts:
            return self.puts[(cls, key)]  # type: ignore[return-value]
        return self._store.get(cls, key)


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so one Tx is exactly one transaction.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of the controller; only an OS crash may lose the last
        # transactions, which agents re-report on reconnect.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='revision'").fetchone()
        self.revision: int = int(row[0]) if row else 0
        self._objects: dict[type, dict[str, Any]] = {cls: {} for cls in _KINDS}
        by_kind = {kind: cls for cls, kind in _KINDS.items()}
        for kind, key, data in self._db.execute("SELECT kind, id, data FROM objects"):
            cls = by_kind[kind]
            self._objects[cls][key] = decode(cls, json.loads(data))
        self._changed = asyncio.Event()

    def close(self) -> None:
        self._db.close()

    # -- reads ------------------------------------------------------------------------------------

    def get(self, cls: type[T], key: str) -> T | None:
        obj: T | None = self._objects[cls].get(key)
        return obj

    def all(self, cls: type[T]) -> list[T]:
        return list(self._objects[cls].values())

    def site(self, name: str) -> Site | None:
        return self.get(Site, SiteName(name))

    def host(self, host_id: str) -> Host | None:
        return self.get(Host, HostId(host_id))

    def workspace(self, name: str) -> Workspace | None:
        return self.get(Workspace, WorkspaceName(name))

    def gpr(self, gpr_id: str) -> Gpr | None:
        return self.get(Gpr, GprId(gpr_id))

    def allocation(self, alloc_id: str) -> Allocation | None:
        return self.get(Allocation, AllocationId(alloc_id))

    def allocations_of_gpr(self, gpr_id: str) -> list[Allocation]:
        return sorted(
            (a for a in self._objects[Allocation].values() if a.gpr_id == gpr_id), key=lambda a: a.replica
        )

    def allocations_on_host(self, host_id: str) -> list[Allocation]:
        return sorted(
            (a for a in self._objects[Allocation].values() if a.host_id == host_id), key=lambda a: a.id
        )

    def events(
        self, *, subject: str = "", kind: str = "", after_seq: int = 0, since_revision: int = 0, limit: int = 100,
        newest_first: bool = False, before_seq: int = 0,
    ) -> list[Event]:
        """Events in commit order (or newest first), optionally filtered; ``since_revision`` is exclusive.

        ``after_seq`` and ``before_seq`` (0: no bound) page through them in either direction.
        """
        sql = "SELECT seq, revision, data FROM events WHERE seq > ? AND revision > ?"
        args: list[Any] = [after_seq, since_revision]
        if before_seq:
            sql += " AND seq < ?"
            args.append(before_seq)
        if subject:
            sql += " AND subject = ?"
            args.append(subject)
        if kind.endswith(".*"):  # a family of kinds, e.g. "gpr.*"
            sql += " AND kind LIKE ?"
            args.append(kind[:-1] + "%")
        elif kind:
            sql += " AND kind = ?"
            args.append(kind)
        sql += " ORDER BY seq DESC LIMIT ?" if newest_first else " ORDER BY seq LIMIT ?"
        args.append(limit)
        return [
            replace(decode(Event, json.loads(data)), seq=seq, revision=rev)
            for seq, rev, data in self._db.execute(sql, args)
        ]

    # -- writes -----------------------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """Collects changes in a Tx and commits them as one transaction at one new revision.

        An exception inside the block discards the whole Tx. A Tx with no changes commits nothing
        and does not bump the revision.
        """
        tx = Tx(self)
        yield tx
        self._commit(tx)

    def _commit(self, tx: Tx) -> None:
        if not tx.puts and not tx.events:
            return
        rev = self.revision + 1
        stamped: dict[tuple[type, str], StoredObject | None] = {
            k: (replace(v, revision=rev) if v is not None else None) for k, v in tx.puts.items()
        }
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for (cls, key), obj in stamped.items():
                if obj is None:
                    db.execute("DELETE FROM objects WHERE kind=? AND id=?", (_KINDS[cls], key))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO objects (kind, id, revision, data) VALUES (?, ?, ?, ?)",
                        (_KINDS[cls], key, rev, json.dumps(encode(obj), separators=(",", ":"))),
                    )
            for e in tx.events:
                db.execute(
                    "INSERT INTO events (revision, kind, subject, data) VALUES (?, ?, ?, ?)",
                    (rev, e.kind, e.subject, json.dumps(encode(e), separators=(",", ":"))),
                )
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('revision', ?)", (str(rev),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for (cls, key), obj in stamped.items():
            if obj is None:
                self._objects[cls].pop(key, None)
            else:
                self._objects[cls][key] = obj
        self.revision = rev
        # Wake everyone waiting for a change, then arm a fresh event for the next one.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, after_revision: int, timeout: float | None = None) -> bool:
        """Waits until the revision passes ``after_revision``; False on timeout."""
        while self.revision <= after_revision:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                return False
        return True
