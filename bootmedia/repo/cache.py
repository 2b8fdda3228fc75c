"""The local index cache (format 2): hash -> location, built from the packs' .idx files.

It lives on the machine, never in the repository (SQLite is not safe on SMB, NFS or sshfs, and
needs free space): `$BOOTMEDIA_CACHE_DIR`, else /var/cache/bootmedia for root, else
~/.cache/bootmedia, one file per repository uuid; in memory when none of these is writable.
It is only a cache. A missing or stale one is brought up to date from the .idx files when a
repository opens; a damaged one is set aside (renamed *.damaged-<time>) and rebuilt, and that
is said in one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bootmedia.errors import ImageError
from bootmedia.repo.idx import IdxEntry, parse_idx
from bootmedia.repo.storage import Storage

log = logging.getLogger("bootmedia.repo")

CACHE_VERSION = 1
PENDING: list[str] = []  # notes not shown to the user yet (Repository.take_notices)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
                                 idx_size INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(hash BLOB NOT NULL, pack INTEGER NOT NULL,
                                  frame_offset INTEGER NOT NULL, frame_len INTEGER NOT NULL,
                                  in_frame INTEGER NOT NULL, length INTEGER NOT NULL,
                                  frame_raw INTEGER NOT NULL, PRIMARY KEY(hash, pack)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blocks_by_pack ON blocks(pack);
"""


def _is_damage(exc: sqlite3.DatabaseError | UnicodeDecodeError) -> bool:
    """A damaged file (not a database, malformed, tables missing or of the wrong shape), as
    opposed to contention (locked, busy, read-only) or a constraint."""
    if isinstance(exc, sqlite3.IntegrityError):
        return False
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        return not any(
            w in text for w in ("locked", "busy", "readonly", "read-only", "disk is full")
        )
    return True


def _strict_text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:  # a flipped byte in a name: the file is damaged
        raise sqlite3.DatabaseError(f"text that is not UTF-8 ({exc.reason})") from None


def connect(target: str | Path, **kw: Any) -> sqlite3.Connection:
    """sqlite3.connect for the repository's indexes: text that does not decode is damage
    (sqlite3.DatabaseError, which the callers set aside and rebuild). SQLite's own error
    message can hold a damaged file's bytes too, and Python then raises UnicodeDecodeError
    instead: the callers take that as damage as well (found by the index fuzz: 4 of 4 runs of
    5000 examples)."""
    db = sqlite3.connect(target, **kw)
    db.text_factory = _strict_text
    return db


def cache_dir() -> Path:
    env = os.environ.get("BOOTMEDIA_CACHE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/bootmedia")
    return Path.home() / ".cache" / "bootmedia"


class IndexCache:
    def __init__(self, repo_id: str, storage: Storage, directory: Path | None = None) -> None:
        self.storage = storage
        self.notices: list[str] = []
        self._lock = threading.Lock()
        self.path: Path | None = None
        d = directory or cache_dir()
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                self.path = d / f"{repo_id}.sqlite"
        except OSError:
            self.path = None
        self._names: dict[int, str] = {}  # packs.id -> packs.name, read when one is missing
        self._db = self._connect()

    # ---- opening, damage ---------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        target = str(self.path) if self.path else ":memory:"
        try:
            db = self._open(target)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            if self.path is None:
                raise
            if not _is_damage(exc):
                raise ImageError(f"index cache {self.path}: {exc}") from None
            db = self._set_aside(exc)
        return db

    @staticmethod
    def _open(target: str) -> sqlite3.Connection:
        db = connect(target, check_same_thread=False, isolation_level=None, timeout=60)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, CACHE_VERSION):
            db.close()
            raise sqlite3.DatabaseError(f"cache version {version}")
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={CACHE_VERSION}")
        # up to 32 MiB of its pages in memory (SQLite's default is 2 MiB): a restore or a
        # recapture looks up every block, in hash order, which is random across the file
        db.execute("PRAGMA cache_size=-32768")
        db.execute("SELECT count(*) FROM packs").fetchone()
        return db

    def _set_aside(self, exc: BaseException) -> sqlite3.Connection:
        assert self.path is not None
        aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
        with contextlib.suppress(OSError):
            os.replace(self.path, aside)
        for extra in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(f"{self.path}{extra}")
        line = (
            f"index cache {self.path} was damaged ({exc}): set aside as {aside.name}, "
            "rebuilt from the packs' .idx files"
        )
        log.warning("%s", line)
        self.notices.append(line)
        PENDING.append(line)
        return self._open(str(self.path))

    def _recover(self, exc: sqlite3.DatabaseError | UnicodeDecodeError) -> None:
        """Damage found while in use: set the file aside, rebuild, carry on. A busy or
        read-only cache, or a constraint, is not damage: said in one line, nothing set aside."""
        if not _is_damage(exc):
            raise ImageError(f"index cache {self.path or 'in memory'}: {exc}") from None
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        if self.path is None:
            raise ImageError(f"in-memory index failed: {exc}") from None
        self._db = self._set_aside(exc)
        self._names = {}  # a new database: its ids are not the old ones
        self._sync_locked()

    def rebuild(self) -> None:
        """Forget everything and read every .idx again (repair)."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if self.path is not None:
                for extra in ("", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{self.path}{extra}")
            self._db = self._connect()
            self._names = {}  # a new database: its ids are not the old ones
            self._sync_locked()

    # ---- keeping it current ------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def sync(self) -> list[str]:
        """Load every new or changed .idx, forget the packs whose .idx is gone. Returns the
        names of damaged .idx files (their packs are left out until repaired)."""
        with self._lock:
            try:
                return self._sync_locked()
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                self._recover(exc)
                return self._sync_locked()

    def _sync_locked(self) -> list[str]:
        files: dict[str, int] = {}
        for name in self.storage.listdir("packs"):
            if name.startswith("pack-") and name.endswith(".idx"):
                files[name[: -len(".idx")] + ".bmp"] = self.storage.size(f"packs/{name}")
        damaged = []
        # One IMMEDIATE transaction from reading what is known to loading what is new: two
        # jobs opening the same repository at once (the TUI's home screen and an unattended
        # job, or receivers on one machine) take turns here instead of both inserting the
        # same pack; that collision was once taken for damage and the cache set aside under
        # the other job.
        with self._tx():
            known = {
                name: (pid, size)
                for pid, name, size in self._db.execute("SELECT id, name, idx_size FROM packs")
            }
            for name, (pid, size) in known.items():
                if files.get(name) != size:
                    self._forget(pid)
            for name, size in files.items():
                if known.get(name, (0, -1))[1] == size:
                    continue
                rel = f"packs/{name[: -len('.bmp')]}.idx"
                try:
                    _, entries = parse_idx(self.storage.read_bytes(rel, limit=1 << 30), rel)
                except ImageError as exc:
                    log.warning("%s", exc)
                    damaged.append(str(exc))
                    continue
                self._insert(name, size, entries)
        return damaged

    def _forget(self, pid: int) -> None:
        self._names = {}  # an id can be used again: read the names afresh
        self._db.execute("DELETE FROM blocks WHERE pack=?", (pid,))
        self._db.execute("DELETE FROM packs WHERE id=?", (pid,))

    def _insert(self, name: str, idx_size: int, entries: Iterable[IdxEntry]) -> None:
        """Inside a transaction: a pack's rows, replacing any it had."""
        old = self._db.execute("SELECT id FROM packs WHERE name=?", (name,)).fetchone()
        if old:
            self._forget(old[0])
        cur = self._db.execute("INSERT INTO packs(name, idx_size) VALUES(?, ?)", (name, idx_size))
        pid = int(cur.lastrowid or 0)
        # The entries go in as they are (IdxEntry is a tuple in column order), the pack's id
        # as a literal: no Python work per row. Sorted by hash, they append to the B-tree.
        self._db.executemany(
            "INSERT OR IGNORE INTO blocks(hash, frame_offset, frame_len, in_frame, length, "
            f"frame_raw, pack) VALUES(?,?,?,?,?,?,{pid})",
            entries,
        )

    def add_sealed(self, name: str, idx_size: int, entries: Iterable[IdxEntry]) -> None:
        """A pack this process just sealed: no need to read its .idx back."""
        with self._lock:
            try:
                with self._tx():
                    self._insert(name, idx_size, entries)
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                self._recover(exc)

    # ---- lookups -----------------------------------------------------------------------

    def locate(self, digest: bytes) -> tuple[str, IdxEntry] | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT p.name, b.frame_offset, b.frame_len, b.in_frame, b.length, b.frame_raw "
                    "FROM blocks b JOIN packs p ON p.id=b.pack WHERE b.hash=? LIMIT 1",
                    (digest,),
                ).fetchone()
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                self._recover(exc)
                return self.locate(digest)
        if row is None:
            return None
        return row[0], IdxEntry(digest, *row[1:])

    def _rows(self, exprs: tuple[str, ...], digests: list[bytes]) -> list[tuple[Any, ...]]:
        """`(hash, pack id, *exprs)` for these hashes, the expressions integers; with the lock
        held. All the rows come back in one text value: Python's sqlite3 gives up the GIL for
        every row it steps to, and with the workers waiting for it each row then costs a thread
        switch (measured with two hashing threads, for a recapture's 99k blocks: 1.1-1.2 CPU-s
        and 2.6-3.0 s as rows, 0.56 and 0.65 s as one text). Fields that do not parse are
        damage (sqlite3.DatabaseError), never an answer."""
        marks = ",".join("?" * len(digests))
        fields = " || ' ' || ".join(f"({e})" for e in ("hex(b.hash)", "b.pack", *exprs))
        (text,) = self._db.execute(
            f"SELECT group_concat({fields}, ' ') FROM blocks b WHERE b.hash IN ({marks})",
            digests,
        ).fetchone()
        v = text.split(" ") if text else []
        k = 2 + len(exprs)
        try:
            hexes = v[0::k]
            if len(v) % k or not set(map(len, hexes)) <= {64}:
                raise ValueError("fields out of step")
            # a column at a time, with map() and zip(): no Python loop per row
            columns = [list(map(int, v[j::k])) for j in range(1, k)]
            return list(zip(map(bytes.fromhex, hexes), *columns, strict=True))
        except ValueError as exc:
            raise sqlite3.DatabaseError(f"a block row that does not parse ({exc})") from None

    def _names_for(self, rows: list[tuple[Any, ...]]) -> dict[int, str]:
        """packs.id -> name, read again when a row names a pack not known yet."""
        if not {r[1] for r in rows} <= self._names.keys():
            self._names = dict(self._db.execute("SELECT id, name FROM packs"))
        return self._names

    def _block_rows(
        self, exprs: tuple[str, ...], digests: list[bytes], again: bool = True
    ) -> list[tuple[Any, ...]]:
        """`(hash, pack name, *exprs)` for these hashes, in one query; a damaged cache is set
        aside, rebuilt and asked again (once: damage that a rebuild brings back is in the
        .idx files, and repair's to name)."""
        with self._lock:
            try:
                # No join: the packs are few, their names come from a dict (measured on the
                # bench repository: 0.24-0.39 s against 0.67-0.72 s for 99k hashes)
                rows = self._rows(exprs, digests)
                names = self._names_for(rows)
                return [(r[0], names[r[1]], *r[2:]) for r in rows if r[1] in names]
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                if not again:
                    raise ImageError(f"index cache {self.path or 'in memory'}: {exc}") from None
                self._recover(exc)
        return self._block_rows(exprs, digests, again=False)

    def has_blocks(self) -> bool:
        """Whether any pack's blocks are indexed (a new repository has none)."""
        with self._lock:
            try:
                return self._db.execute("SELECT 1 FROM blocks LIMIT 1").fetchone() is not None
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                self._recover(exc)
        return self.has_blocks()

    def locate_many(self, digests: list[bytes]) -> dict[bytes, tuple[Any, ...]]:
        """Where these hashes are stored, in one query (a restore looks up every block): per
        hash (pack name, frame_offset, frame_len, length, in_frame, frame_raw), from its
        first row when a block is in two packs. Tuples, no IdxEntry: the caller makes its
        one object per block from them."""
        if not digests:
            return {}
        rows = self._block_rows(
            ("b.frame_offset", "b.frame_len", "b.length", "b.in_frame", "b.frame_raw"), digests
        )
        return {r[0]: r[1:] for r in reversed(rows)}  # reversed: the first row wins

    def shares_many(self, digests: list[bytes], mine: set[str]) -> dict[bytes, int]:
        """For a capture's claims: per stored hash, its share of its pack's stored bytes
        (frame_len * length // frame_raw, at least 1, computed by SQLite), or 0 when its pack
        is one of `mine` (the packs this capture sealed). One query, and no IdxEntry made per
        block: a recapture asks this for every block. Pass them sorted (see stored_ends)."""
        if not digests:
            return {}
        share = (
            "max(1, CASE WHEN b.frame_raw THEN b.frame_len * b.length / b.frame_raw "
            "ELSE b.frame_len END)"
        )
        rows = self._block_rows((share,), digests)
        # reversed: a block in two packs gets its first row's answer, as locate_many's does
        return {h: 0 if name in mine else n for h, name, n in reversed(rows)}

    def stored_ends(self, digests: list[bytes]) -> tuple[set[bytes], dict[str, int]]:
        """For a pre-write check: which of these hashes are indexed, and per pack the end of
        the last frame record they need. Pass them sorted: SQLite's B-tree walks then stay
        in the same pages (three times faster than in random order)."""
        if not digests:
            return set(), {}
        rows = self._block_rows(("b.frame_offset + b.frame_len",), digests)
        ends: dict[str, int] = {}
        for _, name, end in rows:
            if end > ends.get(name, 0):
                ends[name] = end
        return {r[0] for r in rows}, ends

    def has(self, digest: bytes) -> bool:
        with self._lock:
            try:
                return (
                    self._db.execute(
                        "SELECT 1 FROM blocks WHERE hash=? LIMIT 1", (digest,)
                    ).fetchone()
                    is not None
                )
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                self._recover(exc)
        return self.has(digest)

    def has_many(self, digests: list[bytes]) -> set[bytes]:
        """Which of these hashes are stored (one query for a frame's worth of blocks)."""
        if not digests:
            return set()
        marks = ",".join("?" * len(digests))
        with self._lock:
            try:
                return {
                    r[0]
                    for r in self._db.execute(
                        f"SELECT DISTINCT hash FROM blocks WHERE hash IN ({marks})", digests
                    )
                }
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                self._recover(exc)
        return self.has_many(digests)

    def pack_entries(self, name: str) -> list[IdxEntry]:
        with self._lock:
            return [
                IdxEntry(*row)
                for row in self._db.execute(
                    "SELECT b.hash, b.frame_offset, b.frame_len, b.in_frame, b.length, b.frame_raw "
                    "FROM blocks b "
                    "JOIN packs p ON p.id=b.pack WHERE p.name=? ORDER BY b.frame_offset",
                    (name,),
                )
            ]

    def packs(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM packs ORDER BY name")]

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
