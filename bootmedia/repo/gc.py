"""Collect chunks no image uses any more. Every step is safe to kill:

  - live chunks are copied into a new pack, which is synced before the index moves to it;
  - the index forgets a pack (one transaction) before the pack file is unlinked;
so at any instant each chunk an image needs is in a pack the index (or a rescan) can find.
"""

from __future__ import annotations

import fcntl
import logging
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.repo.packs import FLAG_ZSTD, PackWriter, read_pack_header
from bootmedia.repo.store import Repository, _fsync_dir

log = logging.getLogger("bootmedia.gc")
REPACK_BELOW = 0.5  # rewrite a pack when less than half of it is still used


@dataclass(frozen=True)
class GcResult:
    packs_deleted: int
    packs_rewritten: int
    bytes_freed: int


def collect(repo: Repository) -> GcResult:
    """Needs the repository open for writing, and no reader: takes gc.lock exclusively."""
    if not repo.write:
        raise BootmediaError("garbage collection needs the repository open for writing")
    lock = repo.gc_lock_fd
    # Our own shared lock converts to exclusive; that fails while a restore or verify reads.
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BootmediaError(
            "a restore or verify is reading this repository: space will be freed "
            "by the next delete or 'bootmedia repair --gc'"
        ) from None
    try:
        return _collect(repo)
    finally:
        fcntl.flock(lock, fcntl.LOCK_SH)


def _collect(repo: Repository) -> GcResult:
    before = repo.stored_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        live = sqlite3.connect(Path(tmp) / "live.sqlite", isolation_level=None)
        live.execute("PRAGMA journal_mode=OFF")
        live.execute("PRAGMA synchronous=OFF")
        live.execute("CREATE TABLE live(hash BLOB PRIMARY KEY) WITHOUT ROWID")
        images, unreadable = repo.scan_images()
        if unreadable:
            # A manifest we cannot read may still reference chunks: collecting now could
            # destroy the only copy of data a repair would recover. Refuse.
            raise BootmediaError(
                "not collecting garbage: an image manifest is unreadable (" + unreadable[0] + ")"
            )
        for m in images:
            for a in m.areas:
                if a.map:
                    live.executemany(
                        "INSERT OR IGNORE INTO live VALUES(?)",
                        ((e.hash,) for e in repo.extents(m, a.name) if not e.is_zero),
                    )
        db = repo._db
        deleted = rewritten = 0
        for pid, name in list(db.execute("SELECT id, name FROM packs")):
            rows = list(
                db.execute(
                    "SELECT hash, offset, stored_len, raw_len, flags FROM chunks WHERE pack=? "
                    "ORDER BY offset",
                    (pid,),
                )
            )
            keep = [
                r
                for r in rows
                if live.execute("SELECT 1 FROM live WHERE hash=?", (r[0],)).fetchone()
            ]
            size = sum(r[2] for r in rows)
            kept = sum(r[2] for r in keep)
            if keep and kept >= REPACK_BELOW * size:
                continue
            if keep:
                _rewrite(repo, name, keep)
                rewritten += 1
            with repo._tx():
                db.execute("DELETE FROM chunks WHERE pack=?", (pid,))
                db.execute("DELETE FROM packs WHERE id=?", (pid,))
            (repo.path / "packs" / name).unlink(missing_ok=True)
            deleted += 1
        live.close()
    _fsync_dir(repo.path / "packs")
    freed = before - repo.stored_bytes()
    log.info("gc: %d packs deleted, %d rewritten, %d bytes freed", deleted, rewritten, freed)
    return GcResult(deleted - rewritten, rewritten, freed)


def _rewrite(repo: Repository, name: str, keep: list[tuple[bytes, int, int, int, int]]) -> None:
    src = repo.path / "packs" / name
    read_pack_header(src)
    new = PackWriter(repo.path / "packs", repo.pack_size)
    moved = []
    with open(src, "rb") as f:
        for digest, offset, stored_len, raw_len, flags in keep:
            f.seek(offset)
            payload = f.read(stored_len)
            rec = new.append(digest, raw_len, payload, flags or FLAG_ZSTD)
            moved.append(rec)
    new.sync()
    new.close()
    _fsync_dir(repo.path / "packs")
    with repo._tx():
        repo._db.execute("INSERT INTO packs(name, indexed_len) VALUES(?, ?)", (new.name, new.size))
        npid = repo._db.execute("SELECT id FROM packs WHERE name=?", (new.name,)).fetchone()[0]
        repo._db.executemany(
            "UPDATE chunks SET pack=?, offset=? WHERE hash=?",
            [(npid, r.offset, r.hash) for r in moved],
        )
