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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from bootmedia.errors import BootmediaError, ImageError, UsageError
from bootmedia.repo.manifest import (
    MAX_MANIFEST,
    Manifest,
    check_config_types,
    dump_manifest,
    parse_manifest,
)
from bootmedia.repo.maps import ENTRY, MAP_MAGIC, Extent
from bootmedia.repo.packs import (
    FLAG_ZSTD,
    RECORD_SIZE,
    PackWriter,
    Record,
    parse_record_header,
    read_pack_header,
    scan_pack,
)
from bootmedia.repo.paths import inside
from bootmedia.repo.storage import LocalStorage, MissingFile, Storage, StorageError
from bootmedia.text import printable

log = logging.getLogger("bootmedia.repo")

REPO_FILE = "bootmedia-repo.json"
REPO_FORMAT = "bootmedia-repo"
REPO_VERSION = 1
DEFAULT_CHUNK = 1 << 20
DEFAULT_PACK = 1 << 30
MAX_PACK = (4 << 30) - (1 << 20)  # FAT32 cannot hold a file of 4 GiB
COMMIT_EVERY = 256 << 20  # sync the pack and commit the index this often while writing
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL,
                                 indexed_len INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(hash BLOB PRIMARY KEY, pack INTEGER NOT NULL,
                                  offset INTEGER NOT NULL, stored_len INTEGER NOT NULL,
                                  raw_len INTEGER NOT NULL, flags INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack, offset);
"""


@dataclass(frozen=True)
class Location:
    pack: str
    offset: int
    stored_len: int
    raw_len: int
    flags: int

    def record(self, digest: bytes) -> Record:
        return Record(digest, self.offset, self.raw_len, self.stored_len, self.flags)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flock(path: Path, mode: int, what: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BootmediaError(f"repository is busy: {what}") from None
    return fd


class Repository:
    """Open with Repository.open(path) (reading) or Repository.open(path, write=True)."""

    def __init__(self, path: Path, config: dict[str, int], write: bool, locks: list[int]) -> None:
        self.path = path
        self.chunk_size = int(config["chunk_size"])
        self.pack_size = int(config["pack_size"])
        self.write = write
        self.storage: Storage = LocalStorage(path)
        self._locks = locks
        self.gc_lock_fd = locks[0] if locks else -1
        self._db_lock = threading.Lock()
        self._db = self._open_index()
        self.sync_index()

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def init(
        cls, path: str | Path, chunk_size: int = DEFAULT_CHUNK, pack_size: int = DEFAULT_PACK
    ) -> Repository:
        """Create a repository (or open the one already there) for writing."""
        path = Path(path)
        if (path / "bootmedia-remote.json").is_file():
            return cls.open(path, write=True)  # refused: http(s) repositories are read-only
        if not 64 << 10 <= chunk_size <= 64 << 20 or chunk_size & (chunk_size - 1):
            raise UsageError("chunk size must be a power of two between 64 KiB and 64 MiB")
        if not 16 << 20 <= pack_size <= MAX_PACK:
            raise UsageError("pack size must be between 16 MiB and 4 GiB (FAT32's file limit)")
        if not (path / REPO_FILE).exists():
            if path.exists() and not path.is_dir():
                raise UsageError(f"{path}: exists and is not a directory")
            path.mkdir(parents=True, exist_ok=True)
            config = {
                "format": REPO_FORMAT,
                "version": REPO_VERSION,
                "chunk_size": chunk_size,
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
    def open(cls, path: str | Path, write: bool = False) -> Repository:
        path = Path(path)
        if (path / "bootmedia-remote.json").is_file():  # stands for an http(s) repository
            from bootmedia.net.http_repo import open_http

            return open_http(path, write)
        try:
            config = json.loads(LocalStorage(path).read_bytes(REPO_FILE, limit=1 << 16))
        except MissingFile:
            raise UsageError(f"{path}: not a bootmedia repository (no {REPO_FILE})") from None
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"{path}/{REPO_FILE} is corrupt") from None
        if not isinstance(config, dict) or config.get("format") != REPO_FORMAT:
            raise ImageError(f"{path}: not a bootmedia repository")
        check_config_types(config, f"{path}/{REPO_FILE}")
        if config.get("version") != REPO_VERSION:
            raise ImageError(
                f"{path}: unknown repository format version {config.get('version')!r} "
                f"(this bootmedia reads version {REPO_VERSION})"
            )
        for sub in ("packs", "images", "tmp", "trash"):
            with contextlib.suppress(OSError):
                (path / sub).mkdir(exist_ok=True)
            if (path / sub).is_symlink():  # captures and deletes would write where it points
                raise ImageError(
                    f"{path}/{sub} is a symbolic link: refused (nothing is read or written "
                    "outside the repository directory)"
                )
        locks: list[int] = []
        if os.access(path, os.W_OK):
            # Readers share gc.lock so collection never deletes a pack under a restore.
            locks.append(_flock(path / "gc.lock", fcntl.LOCK_SH, "garbage collection running"))
            if write:
                locks.append(
                    _flock(
                        path / "write.lock", fcntl.LOCK_EX, "another capture or delete is running"
                    )
                )
        elif write:
            raise UsageError(f"{path}: repository is read-only")
        return cls(path, config, write, locks)

    def close(self) -> None:
        self._db.close()
        self.storage.close()
        for fd in self._locks:
            os.close(fd)
        self._locks = []

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
            db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            self._memory_index = not self.write  # a reader building the index: treat as fresh
        elif db_path.exists():
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
            return db
        else:  # read-only medium without an index: build one in memory
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._memory_index = True
        db.executescript(_SCHEMA)
        return db

    def _pack_files(self) -> dict[str, Path]:
        return {p.name: p for p in sorted((self.path / "packs").glob("pack-*.bmp"))}

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
        with self._db_lock:
            row = self._db.execute(
                "SELECT p.name, c.offset, c.stored_len, c.raw_len, c.flags "
                "FROM chunks c JOIN packs p ON p.id=c.pack WHERE c.hash=?",
                (digest,),
            ).fetchone()
        return Location(*row) if row else None

    def has(self, digest: bytes) -> bool:
        with self._db_lock:
            return (
                self._db.execute("SELECT 1 FROM chunks WHERE hash=?", (digest,)).fetchone()
                is not None
            )

    def pack_path(self, name: str) -> Path:
        return inside(self.path, "packs", name)  # the name comes from the index: a cache

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
        """
        m = self.image(name)
        directory = self.image_dir(m.name)  # load_manifest checked: m.name is its directory
        trash = self.path / "trash" / f"{directory.name}-{os.getpid()}"
        os.rename(directory, trash)
        _fsync_dir(self.path / "images")
        shutil.rmtree(trash, ignore_errors=True)

    # ---- writing chunks ------------------------------------------------------------------

    def chunk_writer(self) -> ChunkWriter:
        if not self.write:
            raise BootmediaError("repository opened read-only")
        return ChunkWriter(self)


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
