"""Scratch space a job owns, and the sweep that removes what killed jobs left behind.

    work = new_scratch("capture", say=reporter.message)   # /tmp/bootmedia-capture-<pid>-<start>-...
    ... Path(work.name) / "seen.sqlite" ...
    work.cleanup()

A job killed by SIGKILL cannot remove its own scratch, so every scratch is named after its
owner: the pid and the process's start time (clock ticks since boot), which together name one
process even after the pid is reused. The owner also holds an flock on the directory for as
long as it lives; the kernel lets go of it when the process dies, however it dies.

The next job that makes a scratch, or mounts an image view, runs sweep(): it removes the
entries whose owner is gone (never a live job's: its pid and start time still match, and its
flock is held), and says in one line what it removed and how much space that freed. What it
sweeps: directories `bootmedia-<kind>-<pid>-<start>-*` in the temporary directory, and the
files of image views (`view-<pid>-<start>-*`, `overlay-<pid>-<start>-*`) in /dev/shm/bootmedia.
It never crosses into another filesystem: a scratch directory with a mount inside it (a job
killed while something was mounted there) is left alone and named in the line.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from bootmedia.progress import human_bytes

log = logging.getLogger("bootmedia.scratch")

SHM_DIR = Path("/dev/shm/bootmedia")  # image views' overlays and files when they go to RAM
LOCK = ".owner"
# bootmedia-capture-1234-98765-k2j3h4 (a scratch), view-1234-98765-p3-1.json (a view's file)
_OWNED = re.compile(r"^(?:bootmedia-[a-z]+|view|overlay)-(\d+)-(\d+)-")


def start_time(pid: int) -> str:
    """A process's start time (clock ticks since boot), "" when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return "" if fields[0] in ("Z", "X") else fields[19]


def alive(pid: int, started: str) -> bool:
    """Whether the process that had this pid and start time still runs."""
    return bool(pid and started) and start_time(pid) == started


def owner_tag() -> str:
    """`<pid>-<start>` of this process: what names its scratch and its views' files."""
    return f"{os.getpid()}-{start_time(os.getpid())}"


class Scratch:
    """A scratch directory of this process (made by new_scratch). `name` is its path, as
    tempfile.TemporaryDirectory's; cleanup() removes it and lets go of its lock."""

    def __init__(self, kind: str) -> None:
        if not re.fullmatch(r"[a-z]+", kind):
            raise ValueError(f"scratch kind {kind!r}: lower-case letters only")
        self.name = tempfile.mkdtemp(prefix=f"bootmedia-{kind}-{owner_tag()}-")
        self.path = Path(self.name)
        self._lock = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def cleanup(self) -> None:
        """Remove it, unless a filesystem is still mounted on it or inside it (an umount that
        failed): removing that would delete the mounted filesystem's files. Left then, with a
        warning, for the sweep to report."""
        if _size_on_one_fs(self.path) is None:
            log.warning("left %s: a filesystem is still mounted in it", self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def new_scratch(kind: str, say: Callable[[str], None] | None = None) -> Scratch:
    """Sweep what killed jobs left (the line goes to `say`, else to the log), then make this
    job's scratch directory in the temporary directory."""
    line = sweep()
    if line:
        (say or log.warning)(line)
    return Scratch(kind)


def sweep(extra: Iterable[Path] = ()) -> str:
    """Remove the scratch directories and view files of processes that are gone; one line
    saying what was removed and the space freed ("" when there was nothing)."""
    removed: list[str] = []
    kept: list[str] = []
    freed = 0
    places = [Path(tempfile.gettempdir()), SHM_DIR, *extra]
    seen: set[Path] = set()
    for place in places:
        if place in seen:
            continue
        seen.add(place)
        try:
            entries = sorted(place.iterdir())
        except OSError:
            continue
        for entry in entries:
            m = _OWNED.match(entry.name)
            if m is None or alive(int(m[1]), m[2]):
                continue
            if entry.name.startswith("bootmedia-"):
                if place != places[0]:
                    continue  # scratch directories live in the temporary directory only
                size = _remove_dir(entry)
            else:
                size = _remove_file(entry)
            if size is None:
                kept.append(str(entry))
            else:
                removed.append(str(entry))
                freed += size
    if not removed and not kept:
        return ""
    parts = []
    if removed:
        what = removed[0] if len(removed) == 1 else f"{len(removed)} entries ({removed[0]}, ...)"
        parts.append(f"removed {what} left by killed bootmedia jobs, {human_bytes(freed)} freed")
    if kept:
        parts.append(f"left {', '.join(kept)} (a mount inside, or in use)")
    return "; ".join(parts)


def _usage(st: os.stat_result) -> int:
    return st.st_blocks * 512


def _remove_file(path: Path) -> int | None:
    try:
        st = path.lstat()
        if not path.is_file() or path.is_symlink():
            return None
        path.unlink()
    except FileNotFoundError:
        return 0  # another sweep was quicker
    except OSError:
        return None
    return _usage(st)


def holds_a_mount(path: Path) -> bool:
    """Whether path is a mount point or has one inside it: removing it would delete the
    mounted filesystem's files."""
    return _size_on_one_fs(path) is None


def _size_on_one_fs(path: Path) -> int | None:
    """The bytes the files under path take, or None when path is a mount point or has one
    inside it (the walk never enters another filesystem)."""
    try:
        if os.path.ismount(path):
            return None
        top = path.lstat().st_dev
        size = 0
        for root, dirs, files in os.walk(path):
            for name in dirs:
                if os.lstat(os.path.join(root, name)).st_dev != top:
                    return None
            for name in files:
                with contextlib.suppress(OSError):
                    size += _usage(os.lstat(os.path.join(root, name)))
    except FileNotFoundError:
        return 0
    return size


def _remove_dir(path: Path) -> int | None:
    """Remove a dead job's scratch directory, unless its lock is still held (a live owner in
    another pid namespace) or another filesystem is mounted under it: None then."""
    try:
        if not path.is_dir() or path.is_symlink():
            return None
        fd = os.open(path / LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1  # killed between mkdtemp and the lock, or removed meanwhile
    except OSError:
        return None
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
        size = _size_on_one_fs(path)
        if size is None:
            return None
        shutil.rmtree(path)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
        return None
    finally:
        if fd >= 0:
            os.close(fd)
    return size
