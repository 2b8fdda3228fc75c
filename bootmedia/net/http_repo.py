"""Read-only repositories over HTTP(S): images, info, verify and apply from any web server.

A URL is attached as a small local directory under /run/bootmedia/net/ holding only
`bootmedia-remote.json` (the URL); Repository.open sees it and opens an HttpRepository whose
storage is an HttpStorage. So every command and safety check keeps working on a local path
(which is on the live system's tmpfs and holds no repository data), while every repository
byte comes from the server through Range requests and is checked against its BLAKE3 name.

The chunk index is built in memory from the packs' record headers (one small Range request
per record, packs in parallel): the server's own index file, if any, is never trusted.
HTTP readers cannot take a lease on the server: if the server collects garbage during a
restore, the missing pack is a clear error (404), never a wrong byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bootmedia.errors import ImageError, UsageError
from bootmedia.net.http import HttpStorage
from bootmedia.net.url import REMOTE_FILE, RepoURL, parse_url
from bootmedia.repo import leases
from bootmedia.repo.manifest import Manifest, check_config_types
from bootmedia.repo.packs import PACK_HEADER, PACK_MAGIC, RECORD_SIZE, Record, parse_record_header
from bootmedia.repo.storage import MissingFile, StorageError
from bootmedia.repo.store import (
    _SCHEMA,
    NAME_RE,
    READ_VERSIONS,
    REPO_FILE,
    REPO_FORMAT,
    Location,
    Repository,
    check_config,
)

log = logging.getLogger("bootmedia.net.http")


def placeholder(url: RepoURL, root: Path, ca: Path | None = None) -> Path:
    """The local directory that stands for an http(s) repository (and the CA file that its
    server's certificate must chain to, from the credentials file; else the system's CAs)."""
    key = url.http_base() + (f"\0{Path(ca).resolve()}" if ca else "")
    digest = hashlib.blake2s(key.encode(), digest_size=5).hexdigest()
    path = root / f"{url.scheme}-{url.host.strip('[]').replace(':', '_')}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    # Several commands may attach the same URL at once: each writes its own temporary file.
    tmp = path / f".{REMOTE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    remote: dict[str, str] = {"url": url.http_base()}
    if ca:
        remote["ca"] = str(Path(ca).resolve())
    tmp.write_text(json.dumps(remote) + "\n")
    os.replace(tmp, path / REMOTE_FILE)
    return path


def _remote(path: str | os.PathLike[str]) -> dict[str, str] | None:
    f = Path(path) / REMOTE_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
        if not isinstance(data, dict) or not isinstance(data["url"], str):
            raise TypeError
        if not isinstance(data.get("ca", ""), str):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{f}: unreadable") from None
    return data


def remote_url(path: str | os.PathLike[str]) -> str | None:
    """The URL a placeholder directory stands for, or None for an ordinary directory."""
    data = _remote(path)
    return data["url"] if data else None


def open_http(path: Path, write: bool) -> Repository:
    remote = _remote(path)
    assert remote is not None
    url = remote["url"]
    if write:
        raise UsageError(
            f"{url}: http(s) repositories are read-only: capture and delete need an smb://, "
            "nfs:// or ssh:// repository (or the stick)"
        )
    parse_url(url)
    storage = HttpStorage(url, ca=remote.get("ca") or None)
    try:
        try:
            config = json.loads(storage.read_bytes(REPO_FILE, limit=1 << 16))
        except MissingFile:
            raise UsageError(f"{url}: not a bootmedia repository (no {REPO_FILE})") from None
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"{url}{REPO_FILE} is corrupt") from None
        if not isinstance(config, dict) or config.get("format") != REPO_FORMAT:
            raise ImageError(f"{url}: not a bootmedia repository")
        check_config_types(config, f"{url}{REPO_FILE}")
        if config.get("version") == 2:
            # Format 2 keeps an .idx beside each pack: the repository reads them through the
            # storage (each file checked by its BLAKE3 trailer) into a local cache.
            return HttpRepository2(path, storage, check_config(config, url))
        if config.get("version") != 1:
            raise ImageError(
                f"{url}: unknown repository format version {config.get('version')!r} "
                f"(this bootmedia reads versions {', '.join(map(str, READ_VERSIONS))})"
            )
        return HttpRepository(path, storage, config)
    except BaseException:
        storage.close()
        raise


class HttpRepository(Repository):
    """A Repository whose bytes all come through an HttpStorage; never written."""

    def __init__(self, path: Path, storage: HttpStorage, config: dict[str, int]) -> None:
        self.http = storage
        self.url = storage.base
        self._index_lock = threading.Lock()
        self._indexed = False
        super().__init__(path, config, False, [])
        self.storage = storage

    def _open_index(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        db.executescript(_SCHEMA)
        self._memory_index = True
        return db

    def _pack_names(self) -> list[str]:
        try:
            names = self.http.listdir("packs")
        except MissingFile:
            return []
        return [n for n in names if n.startswith("pack-") and n.endswith(".bmp")]

    def sync_index(self) -> None:
        """Nothing at open: the index is built on first use (listing images, or checking a
        fallback that may never be needed, costs no request per record)."""
        self._indexed = False

    def _ensure_index(self) -> None:
        with self._index_lock:
            if not self._indexed:
                self._build_index()
                self._indexed = True

    def locate(self, digest: bytes) -> Location | None:
        self._ensure_index()
        return super().locate(digest)

    def has(self, digest: bytes) -> bool:
        self._ensure_index()
        return super().has(digest)

    def chunk_sizes(self, digests: list[bytes]) -> int:
        self._ensure_index()
        return super().chunk_sizes(digests)

    def _build_index(self) -> None:
        names = self._pack_names()
        if not names:
            return
        with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
            scanned = list(pool.map(self._scan, names))
        for name, size, rows in scanned:
            if not rows:
                continue
            with self._tx():
                self._db.execute("INSERT INTO packs(name, indexed_len) VALUES(?, ?)", (name, size))
                pid = self._db.execute("SELECT id FROM packs WHERE name=?", (name,)).fetchone()[0]
                self._db.executemany(
                    "INSERT OR IGNORE INTO chunks VALUES(?,?,?,?,?,?)",
                    [(r.hash, pid, r.offset, r.stored_len, r.raw_len, r.flags) for r in rows],
                )
        log.info("indexed %d packs of %s over HTTP", len(scanned), self.url)

    def _scan(self, name: str) -> tuple[str, int, list[Record]]:
        """The records of one pack, from their headers (payloads are checked when read)."""
        rel = f"packs/{name}"
        size = self.http.size(rel)
        head = self.http.pread(rel, 0, PACK_HEADER.size)
        if len(head) != PACK_HEADER.size or PACK_HEADER.unpack(head)[0] != PACK_MAGIC:
            log.warning("%s%s: not a pack of a known version; skipped", self.url, rel)
            return name, size, []
        rows: list[Record] = []
        pos = PACK_HEADER.size
        while pos + RECORD_SIZE <= size:
            rec = parse_record_header(self.http.pread(rel, pos, RECORD_SIZE), pos + RECORD_SIZE)
            if rec is None or rec.end > size:
                log.warning("%s: %d bytes at the end are torn; ignored", name, size - pos)
                break
            rows.append(rec)
            pos = rec.end
        return name, size, rows

    def stored_bytes(self) -> int:
        return sum(self.http.size(f"packs/{n}") for n in self._pack_names())

    def scan_images(self) -> tuple[list[Manifest], list[str]]:
        good, bad = [], []
        try:
            names = self.http.listdir("images")
        except MissingFile:
            names = []
        for name in names:
            if not NAME_RE.match(name):
                continue
            try:
                good.append(self.load_image(name))
            except ImageError as exc:
                if "manifest is missing" not in str(exc):  # a listed file, not an image
                    bad.append(str(exc))
        good.sort(key=lambda m: (m.created, m.name))
        return good, bad

    def image(self, ref: str) -> Manifest:
        if NAME_RE.match(ref):
            try:
                return self.load_image(ref)
            except ImageError as exc:
                if "manifest is missing" not in str(exc):
                    raise
        images = self.images()
        if ref.lstrip("#").isdigit():
            n = int(ref.lstrip("#"))
            if 1 <= n <= len(images):
                return images[n - 1]
        names = ", ".join(m.name for m in images) or "none"
        raise UsageError(f"no image {ref!r} in {self.url} (images: {names})")

    def close(self) -> None:
        super().close()
        self.http.close()


class HttpRepository2(Repository):
    """A format-2 repository over HTTP: the index comes from the packs' .idx files (each
    checked by its BLAKE3 trailer) through the storage into the local cache; images are listed
    the way HttpRepository lists them."""

    def __init__(self, path: Path, storage: HttpStorage, config: dict[str, object]) -> None:
        self.http = storage
        self.url = storage.base
        self._index_lock = threading.Lock()
        super().__init__(path, config, False, [], storage=storage)

    lazy_index = True  # opening asks nothing of the server but the config and the images
    _synced = False

    def _ensure_index(self) -> None:
        with self._index_lock:
            if not self._synced:
                self.sync_cache()
                self._synced = True

    def locate(self, digest: bytes) -> Location | None:
        self._ensure_index()
        return super().locate(digest)

    def has(self, digest: bytes) -> bool:
        self._ensure_index()
        return super().has(digest)

    def chunk_sizes(self, digests: list[bytes]) -> int:
        self._ensure_index()
        return super().chunk_sizes(digests)

    # A restore's lookups (located() goes through locate_many()): without these the cache of a
    # machine that never saw the repository (a netbooted live system) stayed empty, and every
    # chunk was "missing from the repository".
    def locate_many(self, digests: list[bytes]) -> dict[bytes, Location]:
        self._ensure_index()
        return super().locate_many(digests)

    def stored_ends(self, m: Manifest, area_name: str, batch: int = 2000) -> dict[str, int]:
        self._ensure_index()
        return super().stored_ends(m, area_name, batch)

    _pack_names = HttpRepository._pack_names
    stored_bytes = HttpRepository.stored_bytes
    scan_images = HttpRepository.scan_images
    image = HttpRepository.image

    def hold(self, image: str, job: str = "read") -> None:
        """No lease on a web server (see the module docstring)."""

    def readers(self, image: str | None = None) -> list[leases.LeaseInfo]:
        return []


__all__ = [
    "REMOTE_FILE",
    "HttpRepository",
    "HttpRepository2",
    "StorageError",
    "open_http",
    "placeholder",
]
