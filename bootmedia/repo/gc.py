"""Collect chunks no image uses any more. Every step is safe to kill:

  - live chunks are copied into a new pack, which is synced before the index moves to it;
  - the index forgets a pack (one transaction) before the pack file is unlinked;
so at any instant each chunk an image needs is in a pack the index (or a rescan) can find.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from bootmedia.errors import BootmediaError, ImageError
from bootmedia.repo import leases
from bootmedia.repo.idx import IdxEntry, write_idx
from bootmedia.repo.packs import (
    FLAG_ZSTD,
    Damage,
    PackWriter,
    PackWriter2,
    chunk_hash,
    read_pack_header,
    scan_pack_resync,
)
from bootmedia.repo.storage import LocalStorage
from bootmedia.repo.store import Location, Repository, _fsync_dir

log = logging.getLogger("bootmedia.gc")
REPACK_BELOW = 0.5  # rewrite a pack when less than half of it is still used


@dataclass(frozen=True)
class GcResult:
    packs_deleted: int
    packs_rewritten: int
    bytes_freed: int


def collect(repo: Repository) -> GcResult:
    """Needs the repository open for writing, and no reader: takes gc.lock exclusively
    (format 1), or the gc lease with no fresh read lease (format 2)."""
    if not repo.write:
        raise BootmediaError("garbage collection needs the repository open for writing")
    if repo.version == 2:
        return _collect_v2(repo)
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
        keep_whole = _damaged_packs(repo)
        for pid, name in list(db.execute("SELECT id, name FROM packs")):
            if name in keep_whole:
                log.info("gc: keeping %s whole: it has damaged records (see repair)", name)
                continue
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
            if _unindexed_records(repo.path / "packs" / name):
                # The index missed good records behind damage (an open's scan stops at the
                # first bad record): they may be the only copy of a chunk. Repair finds them.
                log.warning("gc: keeping %s whole: records past damage (run repair)", name)
                continue
            if keep:
                if not _rewrite(repo, name, keep):
                    continue
                rewritten += 1
                _forget(repo, pid)
                (repo.path / "packs" / name).unlink(missing_ok=True)
            else:
                # Nothing here is live: the file goes first, so a full disk gets its space
                # back even where SQLite cannot start a transaction; index rows left naming a
                # pack that is gone are forgotten by the next writer's open (sync_index).
                (repo.path / "packs" / name).unlink(missing_ok=True)
                _forget(repo, pid)
            deleted += 1
        live.close()
    _fsync_dir(repo.path / "packs")
    freed = before - repo.stored_bytes()
    log.info("gc: %d packs deleted, %d rewritten, %d bytes freed", deleted, rewritten, freed)
    return GcResult(deleted - rewritten, rewritten, freed)


def _unindexed_records(path: Path) -> bool:
    """True when a format-1 pack holds a good record after a damaged stretch."""
    if not path.exists():
        return False
    seen_damage = False
    for item in scan_pack_resync(path):
        if isinstance(item, Damage):
            seen_damage = True
        elif seen_damage:
            return True
    return False


def _forget(repo: Repository, pid: int) -> None:
    try:
        with repo._tx():
            repo._db.execute("DELETE FROM chunks WHERE pack=?", (pid,))
            repo._db.execute("DELETE FROM packs WHERE id=?", (pid,))
    except sqlite3.OperationalError as exc:  # a full disk: the next open forgets them
        log.warning("gc: index not updated (%s); the next writer's open does it", exc)


def _rewrite(repo: Repository, name: str, keep: list[tuple[bytes, int, int, int, int]]) -> bool:
    """Copy a pack's live chunks into a new pack (synced before the index moves to it).
    False, with nothing changed, when the disk has no room for the copy."""
    src = repo.path / "packs" / name
    read_pack_header(src)
    new = PackWriter(repo.path / "packs", repo.pack_size)
    moved = []
    try:
        with open(src, "rb") as f:
            for digest, offset, stored_len, raw_len, flags in keep:
                f.seek(offset)
                payload = f.read(stored_len)
                rec = new.append(digest, raw_len, payload, flags or FLAG_ZSTD)
                moved.append(rec)
        new.sync()
    except OSError as exc:
        new.close()
        new.path.unlink(missing_ok=True)
        if exc.errno != errno.ENOSPC:
            raise
        log.warning("gc: no room to rewrite %s; kept as it is", name)
        return False
    new.close()
    _fsync_dir(repo.path / "packs")
    try:
        with repo._tx():
            repo._db.execute(
                "INSERT INTO packs(name, indexed_len) VALUES(?, ?)", (new.name, new.size)
            )
            npid = repo._db.execute("SELECT id FROM packs WHERE name=?", (new.name,)).fetchone()[0]
            repo._db.executemany(
                "UPDATE chunks SET pack=?, offset=? WHERE hash=?",
                [(npid, r.offset, r.hash) for r in moved],
            )
    except sqlite3.OperationalError as exc:  # rolled back: the old pack is still the one
        new.path.unlink(missing_ok=True)
        log.warning("gc: no room to index the rewrite of %s (%s); kept as it is", name, exc)
        return False
    return True


# ---- format 2 ------------------------------------------------------------------------------


def _collect_v2(repo: Repository) -> GcResult:
    """Lease first, then look for readers: a reader that starts after this sees gc.lease and
    refuses; one that started before is seen here. Nothing here needs SQLite on the
    repository's disk, or free space there, except to rewrite a pack (skipped when full)."""
    locks = repo.path / "locks"
    lease = leases.acquire(locks, leases.GC, "garbage collection")
    try:
        busy = repo.readers()
        if busy:
            raise leases.Busy(
                f"{busy[0].who()} is reading this repository: space will be freed "
                "by the next delete or 'bootmedia repair --gc'"
            )
        return _sweep_v2(repo)
    finally:
        lease.release()


def _damaged_packs(repo: Repository) -> set[str]:
    return {
        p.name.removesuffix(".damaged") + ".bmp" for p in (repo.path / "packs").glob("*.damaged")
    }


def _sweep_v2(repo: Repository) -> GcResult:
    before = repo.stored_bytes()
    packs_dir = repo.path / "packs"
    keep_whole = _damaged_packs(repo)
    with tempfile.TemporaryDirectory() as tmp:
        live = sqlite3.connect(Path(tmp) / "live.sqlite", isolation_level=None)
        live.execute("PRAGMA journal_mode=OFF")
        live.execute("PRAGMA synchronous=OFF")
        live.execute("CREATE TABLE live(hash BLOB PRIMARY KEY) WITHOUT ROWID")
        images, unreadable = repo.scan_images()
        if unreadable:
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

        def is_live(digest: bytes) -> bool:
            return live.execute("SELECT 1 FROM live WHERE hash=?", (digest,)).fetchone() is not None

        deleted = rewritten = 0
        # Packs a killed capture left without .idx (no writer lives: we hold the write lease).
        for name in repo.orphans():
            if name in keep_whole:
                continue
            try:
                entries, damage, _ = repo.scan_pack_v2(name, torn_tail_ok=True)
            except ImageError as exc:
                log.warning("gc: not touching %s: %s", name, exc)
                continue
            if damage or any(is_live(e.hash) for e in entries):
                continue  # the next writer adopts it (writes its .idx)
            _unlink(repo, packs_dir / name)
            deleted += 1
        for name in repo.cache.packs():
            if name in keep_whole:
                log.info("gc: keeping %s whole: it has damaged records (see repair)", name)
                continue
            entries = repo.cache.pack_entries(name)
            frames: dict[int, list[IdxEntry]] = {}
            for e in entries:
                frames.setdefault(e.frame_offset, []).append(e)
            size = sum(es[0].frame_len for es in frames.values())
            live_entries = [e for e in entries if is_live(e.hash)]
            kept = sum(e.frame_len * e.length // e.frame_raw for e in live_entries)
            if live_entries and kept >= REPACK_BELOW * size:
                continue
            if live_entries:
                try:
                    _rewrite_v2(repo, name, live_entries)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    log.warning("gc: no room to rewrite %s; left as it is", name)
                    continue
                rewritten += 1
            # .idx first: from then on nothing points into the pack, then the pack goes.
            _unlink(repo, packs_dir / name)
            deleted += 1
        live.close()
    repo.cache.sync()
    _fsync_dir(packs_dir)
    freed = before - repo.stored_bytes()
    log.info("gc: %d packs deleted, %d rewritten, %d bytes freed", deleted, rewritten, freed)
    return GcResult(deleted - rewritten, rewritten, freed)


def _unlink(repo: Repository, pack: Path) -> None:
    if isinstance(repo.storage, LocalStorage):
        repo.storage.forget(f"packs/{pack.name}")
    pack.with_suffix(".idx").unlink(missing_ok=True)
    _fsync_dir(pack.parent)
    pack.unlink(missing_ok=True)


def _rewrite_v2(repo: Repository, name: str, keep: list[IdxEntry]) -> None:
    """The live blocks of a mostly dead pack, recompressed into frames of a new pack, which
    is sealed (synced, .idx written) before the old one is dropped."""
    dctx = zstandard.ZstdDecompressor()
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    new = PackWriter2(repo.path / "packs", repo.pack_size)
    entries: list[IdxEntry] = []
    try:
        by_frame: dict[int, list[IdxEntry]] = {}
        for e in keep:
            by_frame.setdefault(e.frame_offset, []).append(e)
        blocks: list[tuple[bytes, int]] = []
        data = bytearray()

        def flush() -> None:
            if not blocks:
                return
            frame = new.append(list(blocks), cctx.compress(bytes(data)), FLAG_ZSTD)
            for digest, start, n in frame.starts():
                entries.append(
                    IdxEntry(digest, frame.offset, frame.length, start, n, frame.raw_len)
                )
            blocks.clear()
            data.clear()

        for offset, es in sorted(by_frame.items()):
            loc = Location(name, offset, es[0].frame_len, es[0].length, 0, 0, es[0].frame_raw)
            _, raw = repo.read_frame(loc, dctx)
            for e in es:
                block = raw[e.in_frame : e.in_frame + e.length]
                if chunk_hash(block) != e.hash:
                    raise ImageError(
                        f"{name}: block {e.hash.hex()[:16]} is damaged; not collecting"
                    )
                blocks.append((e.hash, e.length))
                data += block
                if len(data) >= repo.frame_size:
                    flush()
        flush()
        new.sync()
        new.close()
        write_idx(new.path.with_suffix(".idx"), new.id, entries)
    except BaseException:
        new.close()
        new.path.unlink(missing_ok=True)
        raise
    repo.cache.add_sealed(new.name, new.path.with_suffix(".idx").stat().st_size, entries)
