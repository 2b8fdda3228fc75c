"""The image repository: a directory of packs, image manifests and a rebuildable chunk index.

    REPO/bootmedia-repo.json   what this directory is (format name, version, chunk and pack size)
    REPO/packs/pack-*.bmp      compressed chunks, self-describing (packs.py)
    REPO/images/NAME/          manifest.json + extent maps (manifest.py, maps.py)
    REPO/index.sqlite          hash -> (pack, offset): a cache, rebuilt from the packs when lost
    REPO/tmp/, REPO/trash/     captures in progress, deleted images awaiting collection
    REPO/write.lock, gc.lock   one writer at a time; collection waits for readers

See docs/FORMAT.md for the rules that make every step crash-safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import blake3
import zstandard

from bootmedia.errors import BootmediaError, ImageError, UsageError
from bootmedia.repo import leases
from bootmedia.repo.cache import IndexCache
from bootmedia.repo.cache import connect as index_connect
from bootmedia.repo.idx import IdxEntry, encode_idx, write_idx, write_idx_data
from bootmedia.repo.manifest import (
    MAX_MANIFEST,
    NAME_PATTERN,
    Manifest,
    check_config_types,
    dump_manifest,
    parse_manifest,
)
from bootmedia.repo.maps import ENTRY, MAP_MAGIC, Extent
from bootmedia.repo.packs import (
    FLAG_ZSTD,
    PACK_HEADER,
    RECORD_SIZE,
    Damage,
    Frame,
    PackWriter,
    PackWriter2,
    Record,
    chunk_hash,
    decode,
    decode_frame,
    decode_frame_into,
    pack_version,
    parse_frame,
    parse_record_header,
    read_pack_header,
    scan_frames,
    scan_pack,
    scan_pack_resync,
)
from bootmedia.repo.paths import inside
from bootmedia.repo.storage import LocalStorage, MissingFile, Storage, StorageError
from bootmedia.text import printable

log = logging.getLogger("bootmedia.repo")

REPO_FILE = "bootmedia-repo.json"
REPO_FORMAT = "bootmedia-repo"
REPO_VERSION = 2  # what a new repository gets
READ_VERSIONS = (1, 2)
DEFAULT_CHUNK = 1 << 20  # format 1's chunk
DEFAULT_BLOCK = 16 << 10  # format 2's dedup block (measured: docs/FORMAT.md)
DEFAULT_FRAME = 1 << 20  # format 2: new blocks are compressed together in frames this big
DEFAULT_PACK = 1 << 30
MAX_PACK = (4 << 30) - (1 << 20)  # FAT32 cannot hold a file of 4 GiB
COMMIT_EVERY = 256 << 20  # sync the pack and commit the index this often while writing
NAME_RE = re.compile(NAME_PATTERN)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
                                 indexed_len INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(hash BLOB PRIMARY KEY, pack INTEGER NOT NULL,
                                  offset INTEGER NOT NULL, stored_len INTEGER NOT NULL,
                                  raw_len INTEGER NOT NULL, flags INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack, offset);
"""


class Location(NamedTuple):
    """Where a chunk (format 1) or a block (format 2) is stored.

    Format 1: offset/stored_len are the record's payload; raw_len the chunk's length.
    Format 2: offset/stored_len are the whole frame record (header, table, zstd frame);
    raw_len is the block's length and in_frame its offset in the decompressed frame.
    A NamedTuple, not a dataclass: a restore makes one per 16 KiB block, and a tuple is made
    several times faster (this is serial work under the GIL)."""

    pack: str
    offset: int
    stored_len: int
    raw_len: int
    flags: int
    in_frame: int = -1  # -1: a format-1 record
    frame_raw: int = 0  # format 2: the frame's decompressed length

    @property
    def is_frame(self) -> bool:
        return self.in_frame >= 0

    @property
    def share(self) -> int:
        """Stored bytes attributable to this chunk or block (for image statistics)."""
        if not self.is_frame or not self.frame_raw:
            return self.stored_len
        return self.stored_len * self.raw_len // self.frame_raw

    def record(self, digest: bytes) -> Record:
        return Record(digest, self.offset, self.raw_len, self.stored_len, self.flags)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_config(path: Path) -> dict[str, object]:
    """bootmedia-repo.json, checked: format, a version this bootmedia reads, sizes in bounds."""
    try:
        config = json.loads(LocalStorage(path).read_bytes(REPO_FILE, limit=1 << 16))
    except MissingFile:
        raise UsageError(f"{path}: not a bootmedia repository (no {REPO_FILE})") from None
    except (ValueError, UnicodeDecodeError):
        raise ImageError(f"{path}/{REPO_FILE} is corrupt") from None
    return check_config(config, str(path))


def check_config(config: object, path: str) -> dict[str, object]:
    """A decoded bootmedia-repo.json, checked (see read_config); `path` names it in errors."""
    if not isinstance(config, dict) or config.get("format") != REPO_FORMAT:
        raise ImageError(f"{path}: not a bootmedia repository")
    check_config_types(config, f"{path}/{REPO_FILE}")
    version = config.get("version")
    if type(version) is not int or version not in READ_VERSIONS:
        raise ImageError(
            f"{path}: unknown repository format version {version!r} "
            f"(this bootmedia reads versions {', '.join(map(str, READ_VERSIONS))})"
        )
    sizes = ["pack_size"] + (["chunk_size"] if version == 1 else ["block_size", "frame_size"])
    for key in sizes:
        v = config.get(key)
        if type(v) is not int or not 4096 <= v <= MAX_PACK or v & 4095:
            raise ImageError(f"{path}/{REPO_FILE}: bad {key} {v!r}")
    if version == 2:
        if not isinstance(config.get("uuid"), str) or not re.fullmatch(
            r"[0-9a-f]{32}", config["uuid"]
        ):
            raise ImageError(f"{path}/{REPO_FILE}: bad uuid")
        if config["frame_size"] % config["block_size"] or config["frame_size"] > 16 << 20:
            raise ImageError(f"{path}/{REPO_FILE}: bad frame_size")
    return config


def _pack_uuid(name: str) -> uuid.UUID:
    try:
        return uuid.UUID(hex=name[len("pack-") : -len(".bmp")])
    except ValueError:
        raise ImageError(f"{name}: not a pack name") from None


def _flock(path: Path, mode: int, what: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BootmediaError(f"repository is busy: {what}") from None
    return fd


def _cut_short(path: Path, tail: Damage) -> bool:
    """True when a pack's last stretch is a record an interrupted write cut short: fewer bytes
    than a record header, or a valid header whose payload runs past the end of the file."""
    if tail.length < RECORD_SIZE:
        return True
    with open(path, "rb") as f:
        f.seek(tail.offset)
        head = parse_record_header(f.read(RECORD_SIZE), tail.offset + RECORD_SIZE)
    return head is not None and head.end > tail.offset + tail.length


class Repository:
    """Open with Repository.open(path) (reading) or Repository.open(path, write=True).

    Format 1 (round 1's) keeps index.sqlite in the repository and flock(2) files; format 2
    keeps .idx files beside the packs, a local index cache, and lease files in locks/."""

    def __init__(
        self,
        path: Path,
        config: Mapping[str, object],
        write: bool,
        locks: list[int],
        lease: leases.Lease | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.path = path
        self.version = int(config["version"])  # type: ignore[call-overload]
        self.pack_size = int(config["pack_size"])  # type: ignore[call-overload]
        if self.version == 1:
            self.chunk_size = int(config["chunk_size"])  # type: ignore[call-overload]
            self.block_size = self.frame_size = self.chunk_size
        else:
            self.block_size = int(config["block_size"])  # type: ignore[call-overload]
            self.frame_size = int(config["frame_size"])  # type: ignore[call-overload]
            self.chunk_size = self.block_size
        self.uuid = str(config.get("uuid", ""))
        self.write = write
        self.storage: Storage = storage or LocalStorage(path)
        self.notices: list[str] = []  # one-line notes for the user (a rebuilt cache ...)
        self._locks = locks
        self._lease = lease
        self._read_lease: leases.Lease | None = None
        self.gc_lock_fd = locks[0] if locks else -1
        self._db_lock = threading.Lock()
        try:
            if self.version == 1:
                try:
                    self._db = self._open_index()
                    self.sync_index()
                except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                    self._index_damaged(exc)
            else:
                if write:
                    self._clean_leftovers()
                self.cache = IndexCache(self.uuid, self.storage)
                self.notices += self.cache.notices
                if write:
                    self._adopt_orphans()
                if not self.lazy_index:
                    self.sync_cache()
        except BaseException:
            self.close()
            raise

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | Path,
        chunk_size: int = DEFAULT_CHUNK,
        pack_size: int = DEFAULT_PACK,
        version: int = REPO_VERSION,
        block_size: int = DEFAULT_BLOCK,
        frame_size: int = DEFAULT_FRAME,
    ) -> Repository:
        """Create a repository (or open the one already there) for writing."""
        path = Path(path)
        if (path / "bootmedia-remote.json").is_file():
            return cls.open(path, write=True)  # refused: http(s) repositories are read-only
        if not 64 << 10 <= chunk_size <= 64 << 20 or chunk_size & (chunk_size - 1):
            raise UsageError("chunk size must be a power of two between 64 KiB and 64 MiB")
        if not 4 << 10 <= block_size <= 1 << 20 or block_size & (block_size - 1):
            raise UsageError("block size must be a power of two between 4 KiB and 1 MiB")
        if not block_size <= frame_size <= 16 << 20 or frame_size % block_size:
            raise UsageError("frame size must be a multiple of the block size, at most 16 MiB")
        if not 16 << 20 <= pack_size <= MAX_PACK:
            raise UsageError("pack size must be between 16 MiB and 4 GiB (FAT32's file limit)")
        if version not in READ_VERSIONS:
            raise UsageError(f"unknown repository format version {version}")
        if not (path / REPO_FILE).exists():
            if path.exists() and not path.is_dir():
                raise UsageError(f"{path}: exists and is not a directory")
            path.mkdir(parents=True, exist_ok=True)
            config: dict[str, object] = {"format": REPO_FORMAT, "version": version}
            if version == 1:
                config |= {"chunk_size": chunk_size, "pack_size": pack_size}
            else:
                config |= {
                    "uuid": uuid.uuid4().hex,
                    "block_size": block_size,
                    "frame_size": frame_size,
                    "pack_size": pack_size,
                }
            tmp = path / f".{REPO_FILE}.tmp"
            tmp.write_text(json.dumps(config, indent=1) + "\n")
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path / REPO_FILE)
            _fsync_dir(path)
        return cls.open(path, write=True)

    @classmethod
    def open(cls, path: str | Path, write: bool = False, job: str = "") -> Repository:
        path = Path(path)
        if (path / "bootmedia-remote.json").is_file():  # stands for an http(s) repository
            from bootmedia.net.http_repo import open_http

            return open_http(path, write)
        config = read_config(path)
        for sub in ("packs", "images", "tmp", "trash", "locks"):
            with contextlib.suppress(OSError):
                (path / sub).mkdir(exist_ok=True)
            if (path / sub).is_symlink():  # captures and deletes would write where it points
                raise ImageError(
                    f"{path}/{sub} is a symbolic link: refused (nothing is read or written "
                    "outside the repository directory)"
                )
        locks: list[int] = []
        lease = None
        writable = os.access(path, os.W_OK)
        if write and not writable:
            raise UsageError(f"{path}: repository is read-only")
        if config["version"] == 1:
            if writable:
                # Readers share gc.lock so collection never deletes a pack under a restore.
                locks.append(_flock(path / "gc.lock", fcntl.LOCK_SH, "garbage collection running"))
                if write:
                    locks.append(
                        _flock(
                            path / "write.lock",
                            fcntl.LOCK_EX,
                            "another capture or delete is running",
                        )
                    )
        elif write:
            lease = leases.acquire(path / "locks", leases.WRITE, job or "write")
            gc = leases.live(path / "locks", "gc")
            if gc:
                lease.release()
                raise leases.Busy(f"repository is busy: {gc[0].who()}")
        return cls(path, config, write, locks, lease)

    def hold(self, image: str, job: str = "read") -> None:
        """Say that this job reads `image` (a read lease in locks/), so a delete of it refuses
        and collection waits. Lease first, then check for collection: see docs/FORMAT.md."""
        if self._read_lease is not None or not os.access(self.path / "locks", os.W_OK):
            return
        lease = leases.Lease(self.path / "locks", leases.read_lease_name(), job, image)
        if not lease.try_create():
            return
        gc = leases.live(self.path / "locks", "gc")
        if gc and self.version == 2:
            lease.release()
            raise leases.Busy(f"repository is busy: {gc[0].who()}")
        self._read_lease = lease

    lazy_index = False  # True: the cache is brought up to date on first use (HTTP)

    def sync_cache(self) -> None:
        """Format 2: load new .idx files into the cache, forget vanished ones."""
        for bad in self.cache.sync():
            self.notices.append(f"{bad}: run 'bootmedia repair'")

    def take_notices(self) -> list[str]:
        """One-line notes for the user (a damaged index cache set aside ...), each once per
        process, even when an earlier open of the repository (a plan's) found the damage."""
        from bootmedia.repo import cache

        lines = list(dict.fromkeys([*self.notices, *cache.PENDING]))
        cache.PENDING.clear()
        self.notices = []
        return lines

    def readers(self, image: str | None = None) -> list[leases.LeaseInfo]:
        """Fresh read leases (of `image`, or of any image), other than this job's own."""
        own = self._read_lease.path.name if self._read_lease else ""
        return [
            i
            for i in leases.live(self.path / "locks", "read-")
            if i.file != own and (image is None or i.image in (image, ""))
        ]

    def close(self) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]
        if getattr(self, "cache", None) is not None:
            self.cache.close()
        self.storage.close()
        for fd in self._locks:
            os.close(fd)
        self._locks = []
        if self._read_lease is not None:
            self._read_lease.release()
            self._read_lease = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the chunk index -----------------------------------------------------------------

    def _open_index(self) -> sqlite3.Connection:
        """Writers own the index. Readers open it read-only; a repository with no index yet
        (or on read-only media without one) gets a fresh one built from the packs."""
        db_path = self.path / "index.sqlite"
        self._memory_index = False
        if self.write or (os.access(self.path, os.W_OK) and not db_path.exists()):
            db = index_connect(db_path, check_same_thread=False, isolation_level=None)
            self._memory_index = not self.write  # a reader building the index: treat as fresh
        elif db_path.exists():
            db = index_connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
            return db
        else:  # read-only medium without an index: build one in memory
            db = index_connect(":memory:", check_same_thread=False, isolation_level=None)
            self._memory_index = True
        db.executescript(_SCHEMA)
        return db

    def _index_damaged(self, exc: BaseException) -> None:
        """Format 1's index.sqlite is a cache. Damaged: a writer sets it aside and rebuilds it
        from the packs; a reader (which never changes the repository) rebuilds one in memory.
        Either way it is said in one line."""
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self._db.close()
        db_path = self.path / "index.sqlite"
        if self.write:
            aside = db_path.with_name(f"index.sqlite.damaged-{int(time.time())}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(db_path, aside)
            for extra in ("-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{db_path}{extra}")
            line = (
                f"{db_path} was damaged ({exc}): set aside as {aside.name}, rebuilt from the packs"
            )
            self._db = index_connect(db_path, check_same_thread=False, isolation_level=None)
            self._memory_index = False
        else:
            line = (
                f"{db_path} is damaged ({exc}): using an index rebuilt in memory from the "
                "packs; 'bootmedia repair' rebuilds the file"
            )
            self._db = index_connect(":memory:", check_same_thread=False, isolation_level=None)
            self._memory_index = True
        log.warning("%s", line)
        self.notices.append(line)
        from bootmedia.repo import cache

        cache.PENDING.append(line)
        self._db.executescript(_SCHEMA)
        self.sync_index()

    def _v1(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        """One row from format 1's index; a damaged index is rebuilt (once) and asked again."""
        for attempt in (0, 1):
            try:
                with self._db_lock:
                    row = self._db.execute(sql, args).fetchone()
                return tuple(row) if row is not None else None
            except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
                if attempt:
                    raise ImageError(f"{self.path}/index.sqlite: unusable ({exc})") from None
                self._index_damaged(exc)
        return None

    def _pack_files(self) -> dict[str, Path]:
        return {p.name: p for p in sorted((self.path / "packs").glob("pack-*.bmp"))}

    def reindex_v1(self) -> tuple[list[tuple[str, Damage]], list[tuple[str, Damage]]]:
        """Format 1's repair: the index rebuilt from a full scan of every pack that
        resynchronises after damage (scan_pack_resync), so every readable record is indexed
        again. Returns the damaged stretches and the torn ends by pack name: a pack that ends
        in a record cut short (a kill, a full disk) was interrupted, not damaged."""
        assert self.version == 1 and self.write
        damaged: list[tuple[str, Damage]] = []
        torn: list[tuple[str, Damage]] = []
        with self._tx():
            self._db.execute("DELETE FROM chunks")
            self._db.execute("DELETE FROM packs")
        for name, path in self._pack_files().items():
            rows: list[Record] = []
            stretches: list[Damage] = []
            last: Record | Damage | None = None
            for item in scan_pack_resync(path):
                last = item
                if isinstance(item, Damage):
                    stretches.append(item)
                else:
                    rows.append(item)
            if isinstance(last, Damage) and _cut_short(path, last):
                torn.append((name, stretches.pop()))
            damaged += [(name, d) for d in stretches]
            with self._tx():
                self._db.execute(
                    "INSERT INTO packs(name, indexed_len) VALUES(?, ?)",
                    (name, path.stat().st_size),
                )
                pid = self._db.execute("SELECT id FROM packs WHERE name=?", (name,)).fetchone()[0]
                self._db.executemany(
                    "INSERT OR IGNORE INTO chunks VALUES(?,?,?,?,?,?)",
                    [(r.hash, pid, r.offset, r.stored_len, r.raw_len, r.flags) for r in rows],
                )
        return damaged, torn

    def chunk_count(self) -> int:
        """Chunks in format 1's index."""
        with self._db_lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        return int(count)

    def sync_index(self) -> None:
        """Bring the index up to date with the packs: index what a killed capture wrote after
        its last commit, forget packs that are gone. Only a writer (or a fresh in-memory index)
        changes anything; a reader just uses what is committed."""
        if not self.write and not self._memory_index:
            return
        if self.write:
            self._clean_leftovers()
        known = {
            name: (pid, n)
            for pid, name, n in self._db.execute("SELECT id, name, indexed_len FROM packs")
        }
        files = self._pack_files()
        for name, (pid, _) in known.items():
            if name not in files:
                log.warning("pack %s is gone; forgetting its chunks", name)
                with self._tx():
                    self._db.execute("DELETE FROM chunks WHERE pack=?", (pid,))
                    self._db.execute("DELETE FROM packs WHERE id=?", (pid,))
        for name, path in files.items():
            size = path.stat().st_size
            pid, indexed = known.get(name, (None, 0))
            if pid is not None and size == indexed:
                continue
            if pid is not None and size < indexed:
                log.error("pack %s is shorter than its index says: truncated", name)
                with self._tx():
                    self._db.execute(
                        "DELETE FROM chunks WHERE pack=? AND offset+stored_len>?", (pid, size)
                    )
                    self._db.execute("UPDATE packs SET indexed_len=? WHERE id=?", (size, pid))
                continue
            self._index_pack(path, indexed, size)

    def _index_pack(self, path: Path, start: int, size: int) -> None:
        try:
            read_pack_header(path)
        except ImageError as exc:
            log.warning("skipping %s", exc)
            return
        rows = []
        end = start
        for rec in scan_pack(path, start, verify=True):
            rows.append(rec)
            end = rec.end
        if end < size:
            log.warning(
                "%s: %d bytes at the end are torn (interrupted write); ignored",
                path.name,
                size - max(end, start),
            )
        with self._tx():
            self._db.execute(
                "INSERT INTO packs(name, indexed_len) VALUES(?, ?) "
                "ON CONFLICT(name) DO UPDATE SET indexed_len=excluded.indexed_len",
                (path.name, size),
            )
            pid = self._db.execute("SELECT id FROM packs WHERE name=?", (path.name,)).fetchone()[0]
            self._db.executemany(
                "INSERT OR IGNORE INTO chunks VALUES(?,?,?,?,?,?)",
                [(r.hash, pid, r.offset, r.stored_len, r.raw_len, r.flags) for r in rows],
            )
        if rows:
            log.info("indexed %d chunks from %s", len(rows), path.name)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _clean_leftovers(self) -> None:
        """With the write lock held nobody else is capturing: anything in tmp/ is a dead
        capture's (its chunks stay and are reused); trash/ holds deleted images."""
        for sub in ("tmp", "trash"):
            for child in (self.path / sub).iterdir():
                log.info("removing leftover %s", child)
                shutil.rmtree(child, ignore_errors=True)

    def locate(self, digest: bytes) -> Location | None:
        if self.version == 2:
            found = self.cache.locate(digest)
            if found is None:
                return None
            pack, e = found
            return Location(pack, e.frame_offset, e.frame_len, e.length, 0, e.in_frame, e.frame_raw)
        row = self._v1(
            "SELECT p.name, c.offset, c.stored_len, c.raw_len, c.flags "
            "FROM chunks c JOIN packs p ON p.id=c.pack WHERE c.hash=?",
            (digest,),
        )
        if row is None:
            return None
        name, offset, stored_len, raw_len, flags = row
        if (
            not isinstance(name, str)
            or not all(type(v) is int for v in (offset, stored_len, raw_len, flags))
            or not 0 < offset < 1 << 40  # type: ignore[operator]
            or not 0 <= stored_len <= 128 << 20  # type: ignore[operator]
            or not 0 < raw_len <= 64 << 20  # type: ignore[operator]
        ):
            raise ImageError(
                f"{self.path}/index.sqlite: damaged entry for chunk {digest.hex()[:16]}; "
                "run 'bootmedia repair'"
            )
        return Location(name, offset, stored_len, raw_len, flags)  # type: ignore[arg-type]

    def locate_many(self, digests: list[bytes]) -> dict[bytes, Location]:
        """locate() for many hashes; format 2 asks its cache once (at most 500 at a time,
        under SQLite's limit on parameters)."""
        if self.version != 2:
            return {d: loc for d in digests if (loc := self.locate(d)) is not None}
        out: dict[bytes, Location] = {}
        for i in range(0, len(digests), 500):
            for d, (pack, off, flen, n, in_frame, raw) in self.cache.locate_many(
                digests[i : i + 500]
            ).items():
                out[d] = Location(pack, off, flen, n, 0, in_frame, raw)
        return out

    def located(
        self, m: Manifest, area_name: str, batch: int = 2000
    ) -> Iterator[tuple[Extent, Location | None]]:
        """An area's extents, each with where its chunk is stored (None for zeros), looked up
        a batch at a time. ImageError names the first extent whose chunk is missing."""
        pending: list[Extent] = []

        def flush() -> Iterator[tuple[Extent, Location | None]]:
            # Sorted: the index's B-tree is then walked in order (3x faster than at random).
            where = self.locate_many(sorted({e.hash for e in pending if not e.is_zero}))
            for e in pending:
                if e.is_zero:
                    yield e, None
                    continue
                loc = where.get(e.hash)
                if loc is None:
                    raise ImageError(
                        f"image {m.name}: {area_name} offset {e.offset}: chunk "
                        f"{e.hash.hex()[:16]} is missing from the repository"
                    )
                yield e, loc
            pending.clear()

        for e in self.extents(m, area_name):
            pending.append(e)
            if len(pending) >= batch:
                yield from flush()
        yield from flush()

    def stored_ends(self, m: Manifest, area_name: str, batch: int = 2000) -> dict[str, int]:
        """Before a restore writes anything: every chunk of the area is indexed (ImageError
        names the first extent whose chunk is missing, as located() does), and per pack the
        end of the last record the area needs, to check each pack is long enough. Format 2
        asks SQLite for counts and maxima only: no object per block."""
        ends: dict[str, int] = {}
        if self.version != 2:
            for _, loc in self.located(m, area_name):
                if loc is not None:
                    ends[loc.pack] = max(ends.get(loc.pack, 0), loc.offset + loc.stored_len)
            return ends
        pending: list[Extent] = []

        def flush() -> None:
            wanted = sorted({e.hash for e in pending if not e.is_zero})
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                have, got = self.cache.stored_ends(part)
                if len(have) < len(part):
                    # this batch's missing hashes (not one of a batch checked later)
                    missing = set(part) - have
                    e = next(e for e in pending if e.hash in missing)
                    raise ImageError(
                        f"image {m.name}: {area_name} offset {e.offset}: chunk "
                        f"{e.hash.hex()[:16]} is missing from the repository"
                    )
                for pack, end in got.items():
                    ends[pack] = max(ends.get(pack, 0), end)
            pending.clear()

        for e in self.extents(m, area_name):
            pending.append(e)
            if len(pending) >= batch:
                flush()
        flush()
        return ends

    def has(self, digest: bytes) -> bool:
        if self.version == 2:
            return self.cache.has(digest)
        return self._v1("SELECT 1 FROM chunks WHERE hash=?", (digest,)) is not None

    def pack_path(self, name: str) -> Path:
        return inside(self.path, "packs", name)  # the name comes from the index: a cache

    def read_block(self, loc: Location, digest: bytes, dctx: zstandard.ZstdDecompressor) -> bytes:
        """One chunk or block, decompressed and checked against its name (ImageError if not)."""
        if not loc.is_frame:
            return decode(loc.record(digest), self.read_payload(loc, digest), dctx)
        _, data = self.read_frame(loc, dctx)
        block = data[loc.in_frame : loc.in_frame + loc.raw_len]
        if len(block) != loc.raw_len or chunk_hash(block) != digest:
            raise ImageError("block checksum mismatch")
        return block

    def read_frame(self, loc: Location, dctx: zstandard.ZstdDecompressor) -> tuple[Frame, bytes]:
        """The frame record holding a format-2 block, decompressed (zstd's checksum checked;
        the caller hashes the blocks it uses)."""
        rel = f"packs/{loc.pack}"
        buf = self.storage.pread(rel, loc.offset, loc.stored_len)
        frame = parse_frame(buf, loc.offset)
        if frame is None or frame.length != loc.stored_len or frame.length != len(buf):
            raise ImageError(f"{loc.pack}: damaged frame record at byte {loc.offset}")
        return frame, decode_frame(frame, memoryview(buf)[frame.header_len :], dctx)

    def read_frame_into(
        self, loc: Location, dctx: zstandard.ZstdDecompressor, out: memoryview
    ) -> memoryview:
        """read_frame() decompressed into out (a reused, aligned buffer): a view of it."""
        rel = f"packs/{loc.pack}"
        buf = self.storage.pread(rel, loc.offset, loc.stored_len)
        frame = parse_frame(buf, loc.offset)
        if frame is None or frame.length != loc.stored_len or frame.length != len(buf):
            raise ImageError(f"{loc.pack}: damaged frame record at byte {loc.offset}")
        return decode_frame_into(frame, memoryview(buf)[frame.header_len :], dctx, out)

    def read_payload(self, loc: Location, digest: bytes) -> bytes:
        """The stored bytes of one record, through the storage; its header is checked first."""
        rel = f"packs/{loc.pack}"
        buf = self.storage.pread(rel, loc.offset - RECORD_SIZE, RECORD_SIZE + loc.stored_len)
        head = parse_record_header(buf[:RECORD_SIZE], loc.offset)
        if head is None or head.hash != digest:
            raise ImageError(
                f"{loc.pack}: damaged record header at byte {loc.offset - RECORD_SIZE}"
            )
        return buf[RECORD_SIZE:]

    def stored_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._pack_files().values())

    def chunk_sizes(self, digests: list[bytes]) -> int:
        """Sum of stored sizes of these chunks (for stats)."""
        total = 0
        if self.version == 2:
            for d in digests:
                loc = self.locate(d)
                total += loc.share if loc else 0
            return total
        with self._db_lock:
            for d in digests:
                row = self._db.execute(
                    "SELECT stored_len FROM chunks WHERE hash=?", (d,)
                ).fetchone()
                total += row[0] if row else 0
        return total

    # ---- images --------------------------------------------------------------------------

    def scan_images(self) -> tuple[list[Manifest], list[str]]:
        """Every listed image, oldest first, and a line for each one that cannot be read."""
        good, bad = [], []
        for d in sorted((self.path / "images").iterdir()):
            if not d.is_dir():
                continue
            try:
                good.append(self.load_image(d.name))
            except ImageError as exc:
                bad.append(str(exc))
        good.sort(key=lambda m: (m.created, m.name))
        return good, bad

    def images(self) -> list[Manifest]:
        return self.scan_images()[0]

    def image(self, ref: str) -> Manifest:
        """An image by name, or by its 1-based number in `bootmedia images`."""
        path = self.path / "images" / ref
        if NAME_RE.match(ref) and path.is_dir():
            return self.load_image(ref)
        images = self.images()
        if ref.lstrip("#").isdigit():
            n = int(ref.lstrip("#"))
            if 1 <= n <= len(images):
                return images[n - 1]
        names = ", ".join(m.name for m in images) or "none"
        raise UsageError(f"no image {printable(ref, 80)!r} in {self.path} (images: {names})")

    def image_dir(self, name: str) -> Path:
        """An image's directory: its identity. Refused when it leads outside the repository."""
        return inside(self.path, "images", name)

    def load_image(self, name: str) -> Manifest:
        try:
            data = self.storage.read_bytes(f"images/{name}/manifest.json", limit=MAX_MANIFEST)
        except MissingFile:
            raise ImageError(f"image {name}: manifest is missing") from None
        except StorageError as exc:  # one line that starts with the image, like every other
            raise ImageError(f"image {name}: {exc}") from None
        return parse_manifest(data, name)

    def check_map(self, m: Manifest, area_name: str) -> None:
        """The area's map file against its hash in the manifest (streamed)."""
        area = m.area(area_name)
        if area is None or not area.map:
            raise ImageError(f"image {m.name}: area {area_name} has no extent map")
        rel = f"images/{m.name}/{area.map}"
        h = blake3.blake3()
        for buf in self._map_blocks(m, rel):
            h.update(buf)
        if h.hexdigest() != area.map_hash:
            raise ImageError(f"{m.name}/{area.map}: extent map is damaged (checksum mismatch)")

    def _map_blocks(self, m: Manifest, rel: str) -> Iterator[bytes]:
        try:
            size = self.storage.size(rel)
        except MissingFile:
            raise ImageError(f"{m.name}: missing extent map {rel.rsplit('/', 1)[-1]}") from None
        yield self.storage.pread(rel, 0, min(len(MAP_MAGIC), size))
        step = ENTRY.size * 4096
        for pos in range(len(MAP_MAGIC), size, step):
            yield self.storage.pread(rel, pos, min(step, size - pos))

    def extents(self, m: Manifest, area_name: str) -> Iterator[Extent]:
        """Stream an area's extents, after checking the whole map against its hash, so a
        damaged map is refused before anything is written from it."""
        self.check_map(m, area_name)
        area = m.area(area_name)
        assert area is not None
        rel = f"images/{m.name}/{area.map}"
        blocks = self._map_blocks(m, rel)
        if next(blocks, b"") != MAP_MAGIC:
            raise ImageError(f"{m.name}/{area.map}: not an extent map of a known version")
        for buf in blocks:
            if len(buf) % ENTRY.size:
                raise ImageError(f"{m.name}/{area.map}: truncated extent map")
            for offset, length, digest in ENTRY.iter_unpack(buf):
                yield Extent(offset, length, digest)

    def new_image_dir(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise UsageError(
                f"bad image name {name!r}: use letters, digits, '.', '_', '+' or '-' (max 128)"
            )
        if self.image_dir(name).exists():
            raise UsageError(f"an image named {name!r} already exists in {self.path}")
        tmp = self.path / "tmp" / f"capture-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit_image(self, tmp: Path, manifest: Manifest) -> None:
        """Publish an image: manifest written last, then one atomic rename makes it listed."""
        data = dump_manifest(manifest)
        with open(tmp / "manifest.json", "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        final = self.image_dir(manifest.name)
        if final.exists():
            raise UsageError(f"an image named {manifest.name!r} appeared while capturing")
        os.rename(tmp, final)
        _fsync_dir(self.path / "images")

    def delete_image(self, name: str) -> None:
        """Unlist an image atomically (rename into trash/); collect() reclaims its chunks.

        Acts on the directory `name` resolves to (a name, or a number in `images`), never on
        whatever a manifest inside says: load_manifest() refuses a manifest naming another image.
        Refused while a restore, verify or cast holds a read lease naming the image (the
        write lease is held first, then the readers are checked: docs/FORMAT.md).
        """
        m = self.image(name)
        busy = self.readers(m.name)
        if busy:
            raise leases.Busy(
                f"not deleting {m.name}: it is being read by {busy[0].who()}; "
                "try again when that job has finished"
            )
        directory = self.image_dir(m.name)  # load_manifest checked: m.name is its directory
        trash = self.path / "trash" / f"{directory.name}-{os.getpid()}"
        os.rename(directory, trash)
        _fsync_dir(self.path / "images")
        shutil.rmtree(trash, ignore_errors=True)

    # ---- writing chunks ------------------------------------------------------------------

    def chunk_writer(self) -> ChunkWriter:
        if not self.write:
            raise BootmediaError("repository opened read-only")
        if self.version != 1:
            raise BootmediaError("format-2 repositories store frames: use frame_writer()")
        return ChunkWriter(self)

    def frame_writer(self) -> FrameWriter:
        if not self.write:
            raise BootmediaError("repository opened read-only")
        if self.version == 1:
            return FrameWriter(self, v1=ChunkWriter(self))
        return FrameWriter(self)

    # ---- format 2: packs without an index -------------------------------------------

    def _adopt_orphans(self) -> None:
        """With the write lease held no capture is writing: a pack without .idx is a killed
        capture's. Scan it (records describe themselves) and write its .idx, so the next
        capture reuses what it stored. On a full disk the .idx may not fit: then it stays an
        orphan, which collection removes."""
        packs = self.path / "packs"
        for tmp in packs.glob(".pack-*.idx.tmp"):
            tmp.unlink(missing_ok=True)
        for path in sorted(packs.glob("pack-*.bmp")):
            idx = path.with_suffix(".idx")
            if idx.exists():
                continue
            try:
                entries, damage, torn = self.scan_pack_v2(path.name, torn_tail_ok=True)
                if torn is not None and not damage:
                    os.truncate(path, torn)  # the record being written when it was killed
                if entries:
                    write_idx(idx, _pack_uuid(path.name), entries)
                    log.info(
                        "indexed %d blocks from %s (left by an interrupted capture)",
                        len(entries),
                        path.name,
                    )
            except OSError as exc:
                log.warning("could not index %s: %s", path.name, exc.strerror or exc)
            except ImageError as exc:
                log.warning("skipping %s: %s", path.name, exc)

    def scan_pack_v2(
        self, name: str, torn_tail_ok: bool = False
    ) -> tuple[list[IdxEntry], list[Damage], int | None]:
        """Every good block of a format-2 pack by a full scan (frames decompressed and
        hashed), and every damaged stretch, with resynchronisation after damage. With
        torn_tail_ok (a pack a killed capture left without .idx), a bad stretch running to the
        end of the file is the record it was writing, not damage: its offset is returned
        third (None when the pack ends cleanly)."""
        rel = f"packs/{name}"
        size = self.storage.size(rel)
        head = self.storage.pread(rel, 0, PACK_HEADER.size)
        if pack_version(head) != 2:
            raise ImageError(f"{name}: not a format-2 pack")
        entries: list[IdxEntry] = []
        damage: list[Damage] = []
        for item in scan_frames(lambda o, n: self.storage.pread(rel, o, n), size):
            if isinstance(item, Damage):
                damage.append(item)
                continue
            for digest, start, n in item.starts():
                entries.append(IdxEntry(digest, item.offset, item.length, start, n, item.raw_len))
        torn = None
        if torn_tail_ok and damage and damage[-1].offset + damage[-1].length == size:
            log.info("%s: %d bytes torn at the end (interrupted write)", name, damage[-1].length)
            torn = damage.pop().offset
        return entries, damage, torn

    def orphans(self) -> list[str]:
        """Format-2 packs with no .idx."""
        return [
            p.name
            for p in sorted((self.path / "packs").glob("pack-*.bmp"))
            if not p.with_suffix(".idx").exists()
        ]


class ChunkWriter:
    """Stores chunks into new packs for one writer thread. Index rows are committed only
    after the pack is synced, so the index never points at bytes that could be lost."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._pack: PackWriter | None = None
        self._pending: list[Record] = []
        self._pending_hashes: set[bytes] = set()
        self._since_commit = 0
        self.new_bytes = 0
        self.new_chunks = 0

    def has(self, digest: bytes) -> bool:
        return digest in self._pending_hashes or self.repo.has(digest)

    def put(self, digest: bytes, raw_len: int, payload: bytes) -> bool:
        """Store a chunk unless it is already there; True when it was new."""
        if self.has(digest):
            return False
        if self._pack is None or not self._pack.fits(len(payload)):
            self._rotate()
        assert self._pack is not None
        rec = self._pack.append(digest, raw_len, payload, FLAG_ZSTD)
        self._pending.append(rec)
        self._pending_hashes.add(digest)
        self.new_bytes += len(payload)
        self.new_chunks += 1
        self._since_commit += len(payload)
        if self._since_commit >= COMMIT_EVERY:
            self.commit()
        return True

    def _rotate(self) -> None:
        if self._pack is not None:
            self.commit()
            self._pack.close()
        self._pack = PackWriter(self.repo.path / "packs", self.repo.pack_size)
        _fsync_dir(self.repo.path / "packs")

    def commit(self) -> None:
        if self._pack is None:
            return
        self._pack.sync()
        pack = self._pack
        rows = self._pending
        repo = self.repo
        with repo._tx():
            repo._db.execute(
                "INSERT INTO packs(name, indexed_len) VALUES(?, ?) "
                "ON CONFLICT(name) DO UPDATE SET indexed_len=excluded.indexed_len",
                (pack.name, pack.size),
            )
            pid = repo._db.execute("SELECT id FROM packs WHERE name=?", (pack.name,)).fetchone()[0]
            repo._db.executemany(
                "INSERT OR IGNORE INTO chunks VALUES(?,?,?,?,?,?)",
                [(r.hash, pid, r.offset, r.stored_len, r.raw_len, r.flags) for r in rows],
            )
        self._pending = []
        self._pending_hashes = set()
        self._since_commit = 0

    def close(self) -> None:
        if self._pack is not None:
            self.commit()
            self._pack.close()
            self._pack = None

    def abort(self) -> None:
        """Stop writing after an error; what was written stays and is indexed at next open."""
        if self._pack is not None:
            self._pack.close()
            self._pack = None


class FrameWriter:
    """Stores frames of new blocks for one capture (format 2), or chunks (format 1: one block
    per frame, handed to ChunkWriter). Workers call claim_new() from any thread; the ordered
    writer calls put_frame(). A pack's .idx is written when the pack is sealed (full, or
    close()), and only then do its blocks enter the index cache."""

    def __init__(self, repo: Repository, v1: ChunkWriter | None = None) -> None:
        self.repo = repo
        self._v1 = v1
        self._pack: PackWriter2 | None = None
        self._entries: dict[bytes, IdxEntry] = {}
        self._claimed: set[bytes] = set()
        self._sealed: set[str] = set()  # the packs this writer sealed
        # A capture into a repository with nothing stored (a first capture) asks the index
        # nothing until it seals a pack of its own: every block is new or claimed already.
        self._ask = v1 is None and repo.cache.has_blocks()
        self._lock = threading.Lock()
        self.new_bytes = 0
        self.new_chunks = 0

    @property
    def version(self) -> int:
        """The repository format this writer stores in."""
        return 1 if self._v1 is not None else 2

    def claim_new(self, digests: list[bytes]) -> list[bool]:
        """For each block, True when the caller must store it: not in the repository and not
        claimed by another frame of this capture (so each block is compressed once)."""
        if self._v1 is not None:
            return [not self._v1.has(d) for d in digests]
        known = set()
        uniq = list(dict.fromkeys(digests))
        for i in range(0, len(uniq), 500):
            known |= self.repo.cache.has_many(uniq[i : i + 500])
        out = []
        with self._lock:
            for d in digests:
                if d in known or d in self._claimed:
                    out.append(False)
                else:
                    self._claimed.add(d)
                    out.append(True)
        return out

    def claim(self, digests: list[bytes]) -> list[int]:
        """claim_new() that also says what each stored block costs, from the same one query
        per call (so a recapture, where every block is found, asks nothing per block): for
        each block -1 when the caller must store it; 0 when this capture stores or stored it
        (another frame of it claimed the block first); else its share of the stored bytes
        (at least 1).
        So a block that gets -1 is this capture's only copy of it, and a block that gets a
        share was in the repository before. Format 1: 0 for every known block."""
        if self._v1 is not None:
            return [0 if self._v1.has(d) else -1 for d in digests]
        known: dict[bytes, int] = {}
        # Sorted: SQLite's B-tree walks then stay in the same pages (measured on the bench
        # repository: 0.18 CPU-s for every block of a recapture, against 0.36 unsorted).
        uniq = sorted(set(digests))
        sealed = self._sealed
        for i in range(0, len(uniq) if self._ask or sealed else 0, 500):
            known.update(self.repo.cache.shares_many(uniq[i : i + 500], sealed))
        out = []
        with self._lock:
            for d in digests:
                share = known.get(d)
                if share is not None:
                    out.append(share)
                elif d in self._claimed:
                    out.append(0)
                else:
                    self._claimed.add(d)
                    out.append(-1)
        return out

    def put_frame(
        self, blocks: list[tuple[bytes, int]], payload: bytes, head: bytes | None = None
    ) -> tuple[int, int]:
        """Store a frame; returns its (stored length, raw length): a block's share of the
        stored bytes is stored * its length // raw. `head`: the record's frame_header() for
        FLAG_ZSTD, built by the worker (format 2 only)."""
        if self._v1 is not None:
            ((digest, n),) = blocks
            self._v1.put(digest, n, payload)
            self.new_bytes, self.new_chunks = self._v1.new_bytes, self._v1.new_chunks
            return len(payload), n
        if self._pack is None or not self._pack.fits(len(payload) + 64 + 36 * len(blocks)):
            self._rotate()
        assert self._pack is not None
        frame = self._pack.append(blocks, payload, FLAG_ZSTD, head)
        offset, length, raw = frame.offset, frame.length, frame.raw_len  # once, not per block
        entries = self._entries
        for digest, start, n in frame.starts():
            if digest not in entries:
                entries[digest] = IdxEntry(digest, offset, length, start, n, raw)
        self.new_bytes += length
        self.new_chunks += len(blocks)
        return length, raw

    def share(self, digest: bytes) -> int:
        """Stored bytes attributable to a block this capture stored or found."""
        e = self._entries.get(digest)
        if e is not None:
            return e.frame_len * e.length // e.frame_raw
        loc = self.repo.locate(digest)
        return loc.share if loc else 0

    def _rotate(self) -> None:
        self.seal()
        self._pack = PackWriter2(self.repo.path / "packs", self.repo.pack_size)
        _fsync_dir(self.repo.path / "packs")

    def seal(self) -> None:
        """fsync the pack, write its .idx (fsynced, dir fsynced), then index it."""
        pack = self._pack
        if pack is None:
            return
        # The fsync runs beside the .idx's encoding (sorting and packing a row per block):
        # neither waits for the other, and the .idx is still written only once the pack is
        # on the disk.
        with ThreadPoolExecutor(1, thread_name_prefix="bm-fsync") as syncing:
            synced = syncing.submit(pack.sync)
            entries = sorted(self._entries.values())  # by hash: the .idx order, the cache's
            data = encode_idx(pack.id, entries)
            synced.result()
        pack.close()
        idx = pack.path.with_suffix(".idx")
        write_idx_data(idx, data)
        # Before its blocks are in the cache: claim() finds them there as this capture's (0).
        self._sealed.add(pack.name)
        self.repo.cache.add_sealed(pack.name, idx.stat().st_size, entries)
        with self._lock:
            self._claimed.difference_update(self._entries)
        self._entries = {}
        self._pack = None

    def unsealed(self) -> tuple[str, int] | None:
        """The pack being written and its size (what an interrupted capture leaves)."""
        if self._v1 is not None or self._pack is None:
            return None
        return self._pack.name, self._pack.size

    def close(self) -> None:
        if self._v1 is not None:
            self._v1.close()
            return
        self.seal()

    def abort(self) -> None:
        """Stop after an error. The unsealed pack stays without .idx: the next writer scans
        it and reuses its blocks, or collection removes it."""
        if self._v1 is not None:
            self._v1.abort()
            return
        if self._pack is not None:
            self._pack.close()
            self._pack = None
