"""Where a repository's bytes are read from. Every read of a repository goes through a Storage.

    Storage.read_bytes(rel)              a whole (small) file: bootmedia-repo.json, manifests, maps
    Storage.pread(rel, offset, length)   part of a file: a record in a pack
    Storage.size(rel), exists(rel), listdir(rel)

`rel` is a path relative to the repository's root, with "/" separators. Storages refuse an
absolute path or one with a ".." part, so nothing outside the repository is ever read, whatever a
manifest or index says. Missing files raise MissingFile (an ImageError) naming the path; any
other failure raises StorageError naming the path and the reason. Never another exception.

`LocalStorage(dir)` reads a directory (the stick, or a share the kernel or sshfs mounted);
`bootmedia.net` adds read-only HTTP. Writes stay on a local directory path.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path, PurePosixPath
from typing import Protocol

from bootmedia.errors import ImageError

MAX_SMALL_FILE = (
    256 << 20
)  # read_bytes refuses anything bigger (a map of a 4 TB partition is ~180 MB)


class StorageError(ImageError):
    """A repository file could not be read."""


class MissingFile(StorageError):
    """A repository file does not exist."""


def check_rel(rel: str) -> str:
    """A repository-relative path, normalised; refuses absolute paths and '..' parts."""
    if not isinstance(rel, str) or "\x00" in rel or "\\" in rel:
        raise StorageError(f"bad repository path {rel!r}")
    p = PurePosixPath(rel)
    if p.is_absolute() or any(part == ".." for part in p.parts):
        raise StorageError(f"repository path {rel!r} points outside the repository")
    return str(p)


class Storage(Protocol):
    """The read side of a repository (see the module docstring)."""

    def read_bytes(self, rel: str, limit: int = MAX_SMALL_FILE) -> bytes: ...

    def pread(self, rel: str, offset: int, length: int) -> bytes: ...

    def size(self, rel: str) -> int: ...

    def exists(self, rel: str) -> bool: ...

    def listdir(self, rel: str) -> list[str]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


class LocalStorage:
    """A repository in a local directory. Pack files stay open (one descriptor per file) for
    the storage's life, so a job reading thousands of records opens each pack once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self) -> str:
        return str(self.root)

    def path(self, rel: str) -> Path:
        path = self.root / check_rel(rel)
        # A symlink inside the repository may not lead out of it either.
        base = self.root.resolve()
        real = path.resolve()
        if real != base and not real.is_relative_to(base):
            raise StorageError(f"{self.root}: {rel} leads outside the repository (to {real})")
        return path

    def _fail(self, rel: str, exc: OSError) -> StorageError:
        if isinstance(exc, FileNotFoundError):
            return MissingFile(f"{self.root}: {rel} is missing")
        return StorageError(f"{self.root}: cannot read {rel}: {exc.strerror or exc}")

    def read_bytes(self, rel: str, limit: int = MAX_SMALL_FILE) -> bytes:
        path = self.path(rel)
        try:
            # O_NONBLOCK: a FIFO planted in the repository must not block the open.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise StorageError(f"{self.root}: {rel} is not a regular file")
                if st.st_size > limit:
                    raise StorageError(f"{self.root}: {rel} is too big ({st.st_size} bytes)")
                data = f.read(limit + 1)
                if len(data) > limit:
                    raise StorageError(f"{self.root}: {rel} is too big (grew while read)")
                return data
        except OSError as exc:
            raise self._fail(rel, exc) from None

    def _fd(self, rel: str) -> int:
        with self._lock:
            fd = self._fds.get(rel)
            if fd is None:
                try:
                    fd = os.open(self.path(rel), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError as exc:
                    raise self._fail(rel, exc) from None
                self._fds[rel] = fd
            return fd

    def pread(self, rel: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StorageError(f"{self.root}: bad read of {rel} at {offset} ({length} bytes)")
        fd = self._fd(rel)
        try:
            out = os.pread(fd, length, offset)
            while len(out) < length:  # pread on a network filesystem may return short
                more = os.pread(fd, length - len(out), offset + len(out))
                if not more:
                    break
                out += more
            return out
        except OSError as exc:
            raise self._fail(rel, exc) from None

    def size(self, rel: str) -> int:
        try:
            return self.path(rel).stat().st_size
        except OSError as exc:
            raise self._fail(rel, exc) from None

    def exists(self, rel: str) -> bool:
        try:
            self.path(rel).stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._fail(rel, exc) from None
        return True

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel) if rel not in ("", ".") else self.root))
        except OSError as exc:
            raise self._fail(rel, exc) from None

    def forget(self, rel: str) -> None:
        """Close a kept descriptor (a pack that collection is about to unlink)."""
        with self._lock:
            fd = self._fds.pop(check_rel(rel), None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)
