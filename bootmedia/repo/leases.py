"""Leases (format 2): who is using a repository, as small files in `REPO/locks/`.

flock(2) does not work on every network filesystem; creating a file with O_CREAT|O_EXCL is
atomic on local filesystems, NFSv3+, SMB and sshfs. A lease file holds JSON naming the host,
pid, job, image and start time; its holder touches it every REFRESH seconds. It is stale when
not touched for STALE seconds, or at once when it names this host and a process that is gone
(a killed job). See docs/FORMAT.md for the protocol and why its order makes the races safe.

    locks/write.lease              the one capture, delete or repair writing (exclusive)
    locks/gc.lease                 collection running (exclusive)
    locks/read-<host>-<pid>-<rnd>.lease   a restore, verify or cast reading an image
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bootmedia.errors import BootmediaError

log = logging.getLogger("bootmedia.repo")

REFRESH = 30.0
STALE = 300.0
WRITE = "write.lease"
GC = "gc.lease"


class Busy(BootmediaError):
    """The repository is in use by another job; the message says who and since when."""

    exit_code = 5


@dataclass(frozen=True)
class LeaseInfo:
    file: str
    host: str
    pid: int
    job: str
    image: str
    started: str
    age: float  # seconds since last refresh

    def who(self) -> str:
        what = f"{self.job} of image {self.image!r}" if self.image else self.job
        return f"{what} (host {self.host}, pid {self.pid}, since {self.started})"


def _host() -> str:
    return socket.gethostname() or "localhost"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lease(path: Path) -> LeaseInfo | None:
    """A lease's content, or None when it vanished. Unreadable content counts as a fresh lease
    of an unknown job until it goes stale by age."""
    st: os.stat_result | None
    try:
        st = path.stat()
        raw = path.read_bytes()[:4096]
    except FileNotFoundError:
        return None
    except OSError:
        raw, st = b"", None
    age = time.time() - st.st_mtime if st is not None else 0.0
    try:
        d = json.loads(raw)
        if not isinstance(d, dict):
            raise ValueError
        return LeaseInfo(
            path.name,
            str(d.get("host", "?")),
            int(d.get("pid", 0)),
            str(d.get("job", "?")),
            str(d.get("image", "")),
            str(d.get("started", "?")),
            age,
        )
    except (ValueError, TypeError):
        return LeaseInfo(path.name, "?", 0, "unknown job", "", "?", age)


def is_stale(info: LeaseInfo) -> bool:
    if info.age > STALE:
        return True
    return info.host == _host() and info.pid > 0 and not _alive(info.pid)


class Lease:
    """One lease file, refreshed by a daemon thread until released."""

    def __init__(self, directory: Path, name: str, job: str, image: str = "") -> None:
        self.path = directory / name
        self.job = job
        self.image = image
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps(
            {
                "host": _host(),
                "pid": os.getpid(),
                "job": self.job,
                "image": self.image,
                "started": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        ).encode()

    def try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, self._body())
            os.fsync(fd)
        except OSError as exc:
            # A full disk: the empty file still holds the lease (it goes stale by age only).
            if exc.errno != errno.ENOSPC:
                self.path.unlink(missing_ok=True)
                raise
        finally:
            os.close(fd)
        self._thread = threading.Thread(target=self._refresh, name="bm-lease", daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def acquire(directory: Path, name: str, job: str, image: str = "") -> Lease:
    """An exclusive lease (write, gc), taking over a stale one. Busy when another job holds it."""
    directory.mkdir(exist_ok=True)
    lease = Lease(directory, name, job, image)
    for _ in range(3):
        if lease.try_create():
            return lease
        info = read_lease(directory / name)
        if info is None:
            continue
        if not is_stale(info):
            raise Busy(f"repository is busy: {info.who()}")
        _take_over(directory / name, info)
    raise Busy(f"repository is busy: could not take {name} (another job is starting)")


def _take_over(path: Path, info: LeaseInfo) -> None:
    """Move a stale lease out of the way. The rename is atomic; if what we moved turns out not
    to be the stale lease we judged (another job took it over first), put it back."""
    aside = path.with_name(f"stale-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = read_lease(aside)
    if moved is not None and (moved.pid, moved.host, moved.started) != (
        info.pid,
        info.host,
        info.started,
    ):
        with contextlib.suppress(OSError):
            os.link(aside, path)
    log.info("took over a stale lease: %s", info.who())
    with contextlib.suppress(OSError):
        aside.unlink()


def read_lease_name() -> str:
    return f"read-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.lease"


def live(directory: Path, prefix: str = "") -> list[LeaseInfo]:
    """Fresh leases whose file names start with prefix; stale ones are removed on the way."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.endswith(".lease") or not name.startswith(prefix):
            continue
        info = read_lease(directory / name)
        if info is None:
            continue
        if is_stale(info):
            if name.startswith("read-"):
                with contextlib.suppress(OSError):
                    (directory / name).unlink()
            continue
        out.append(info)
    return out
