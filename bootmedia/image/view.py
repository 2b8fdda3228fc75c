"""A partition of an image as a block file: reads come from the chunks, writes go to an overlay.

    with mounted_view(repo_path, "win11", "p3", workdir, capacity=...) as view:
        with view.loop() as dev:          # /dev/loopN over the FUSE file
            run(["ntfsresize", "-s", str(new_size), dev])
        print(view.stats())               # overlay bytes used, peak memory of the server

The file has the partition's original size. Ranges the image holds read as its chunks (checked
against their hashes as they are decompressed); ranges it does not hold (free space in "used"
mode) read as zeros. Writes land in a copy-on-write overlay: a sparse file on the stick or in
/dev/shm (RAM), whose capacity is fixed up front; a write past it fails with ENOSPC, so a
shrinker can never fill the stick or the memory. The image itself is never written.

Why FUSE, and why mfusepy: the filesystems' own tools (resize2fs, ntfsresize, btrfs, mount)
need a block device holding the whole filesystem, and this kernel has no nbd and no
device-mapper, but it has FUSE and loop devices over FUSE files. mfusepy is the maintained
successor of fusepy (same high-level API, libfuse 2 and 3, pure ctypes, so no compiler on the
live system); pyfuse3 would need a C extension built against libfuse3 and trio, and its
low-level inode API is far more code for a single file.

The FUSE server runs in its own process (`python -m bootmedia.image.view`): libfuse installs
signal handlers and runs its own threads, and a process of its own keeps both away from the
job, lets the job read the loop device without sharing a GIL with the server, and reports the
server's own peak memory.

Kills. The server runs in a session of its own (a Ctrl-C on the job's terminal does not reach
it: the job unwinds and unmounts it). When the job dies without unwinding (SIGKILL), the server
sees its parent go, detaches the loop devices over its file, unmounts itself and removes its
overlay. Each view is recorded under a runtime directory (`runtime_dir()`, /run/bootmedia/views
for root): the record names the job, the server, the mount point and the loop devices. When
both die (a SIGKILL of the whole group, a crash), the next job that uses a view, or restores or
clones, finds the records whose job is dead and cleans what they name (`clean_leftovers()`).
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import errno
import itertools
import json
import logging
import mmap
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from bootmedia.errors import BootmediaError, ImageError
from bootmedia.log import log_file, log_to_file
from bootmedia.repo.maps import ENTRY, MAP_MAGIC, ZERO_HASH, Extent, check_map
from bootmedia.repo.packs import RECORD_SIZE, chunk_hash, decode, parse_record_header
from bootmedia.repo.store import Repository
from bootmedia.run import run, run_cleanup, spawn, which
from bootmedia.scratch import alive, holds_a_mount, owner_tag, start_time, sweep
from bootmedia.targetloops import clean_target_loops

log = logging.getLogger("bootmedia.view")
_SERIAL = itertools.count(1)

BLOCK = 4096  # overlay granularity
FRAMES_KEPT = 4  # decompressed format-2 frames kept per reading thread (about 1 MiB each)
CACHE_BYTES = 32 << 20  # decompressed chunks kept for the next reads
FILE_NAME = "area.img"
START_TIMEOUT = 20.0
GONE_TIMEOUT = 5.0  # after the job died: how long the server waits for the kernel to let go
ATTACH_TRIES = 5  # free loop devices taken by another process before one is ours: an error

Loader = Callable[[Extent], bytes]


class Overlay:
    """Copy-on-write blocks over a read-only base. Backed by a sparse file; a bitmap (one bit
    per 4 KiB) says which blocks it holds. At most `capacity` bytes are ever stored."""

    def __init__(self, path: Path, size: int, capacity: int) -> None:
        self.path, self.size, self.capacity = path, size, capacity
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.ftruncate(self.fd, size)
        self.bits = bytearray((size // BLOCK + 8) // 8)
        self.used = 0

    def has(self, block: int) -> bool:
        return bool(self.bits[block >> 3] >> (block & 7) & 1)

    def read(self, block: int) -> bytes:
        return os.pread(self.fd, BLOCK, block * BLOCK)

    def write(self, block: int, data: bytes) -> None:
        if not self.has(block):
            if self.used + BLOCK > self.capacity:
                raise OSError(errno.ENOSPC, "overlay full")
            self.bits[block >> 3] |= 1 << (block & 7)
            self.used += BLOCK
        os.pwrite(self.fd, data, block * BLOCK)

    def close(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class ExtentIndex:
    """An area's extent map, searched in place: the map file is memory-mapped and only the
    offsets (8 bytes an extent) are held in memory."""

    def __init__(self, path: Path, map_hash: str) -> None:
        check_map(path, map_hash)
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if self._mm[: len(MAP_MAGIC)] != MAP_MAGIC or (len(self._mm) - len(MAP_MAGIC)) % ENTRY.size:
            raise ImageError(f"{path.name}: not an extent map of a known version")
        self.count = (len(self._mm) - len(MAP_MAGIC)) // ENTRY.size
        self.offsets = array("Q")
        last = -1
        for i in range(self.count):
            off = ENTRY.unpack_from(self._mm, len(MAP_MAGIC) + i * ENTRY.size)[0]
            if off <= last:
                raise ImageError(f"{path.name}: extents out of order")
            self.offsets.append(off)
            last = off

    def get(self, i: int) -> Extent:
        return Extent(*ENTRY.unpack_from(self._mm, len(MAP_MAGIC) + i * ENTRY.size))

    def find(self, offset: int) -> int:
        """Index of the extent holding offset, or -1."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        if i >= 0:
            e = self.get(i)
            if e.offset <= offset < e.offset + e.length:
                return i
        return -1

    def next_after(self, offset: int) -> int:
        """Offset of the first extent starting after offset (or a huge number)."""
        i = bisect.bisect_right(self.offsets, offset)
        return self.offsets[i] if i < self.count else 1 << 62


class ChunkBase:
    """An image area's bytes from its chunks; ranges without an extent read as zeros."""

    def __init__(self, index: ExtentIndex, load: Loader) -> None:
        self.index, self.load = index, load
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def _chunk(self, i: int) -> bytes:
        with self._lock:
            data = self._cache.get(i)
            if data is not None:
                self._cache.move_to_end(i)
                return data
        e = self.index.get(i)
        data = bytes(e.length) if e.hash == ZERO_HASH else self.load(e)
        if len(data) != e.length:
            raise ImageError(
                f"extent at {e.offset}: the map says {e.length} bytes, its chunk holds {len(data)}"
            )
        with self._lock:
            if i not in self._cache:
                self._cache[i] = data
                self._cached += len(data)
                while self._cached > CACHE_BYTES and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= len(old)
        return data

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            i = self.index.find(pos)
            if i < 0:
                n = min(end, self.index.next_after(pos)) - pos
                out += bytes(n)
            else:
                e = self.index.get(i)
                data = self._chunk(i)
                n = min(end, e.offset + e.length) - pos
                out += data[pos - e.offset : pos - e.offset + n]
            pos += n
        return bytes(out)


class DeviceBase:
    """A partition's bytes straight from its device, opened read-only (disk-to-disk clone)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)


class AreaView:
    """The bytes of one area: overlay blocks first, then the base (chunks or a device)."""

    def __init__(self, size: int, base: ChunkBase | DeviceBase, overlay: Overlay) -> None:
        self.size, self.base, self.overlay = size, base, overlay

    def read_base(self, offset: int, length: int) -> bytes:
        return self.base.read(offset, length)

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if length == 0:
            return b""
        if not any(self.overlay.has(b) for b in range(first, last + 1)):
            return self.read_base(offset, length)
        out = bytearray()
        for b in range(first, last + 1):
            out += self.overlay.read(b) if self.overlay.has(b) else self.read_base(b * BLOCK, BLOCK)
        skip = offset - first * BLOCK
        return bytes(out[skip : skip + length])

    def write(self, offset: int, data: bytes) -> int:
        if offset + len(data) > self.size:
            raise OSError(errno.ENOSPC, "write past the end of the area")
        pos, view = offset, memoryview(data)
        while view:
            b = pos // BLOCK
            inner = pos - b * BLOCK
            n = min(BLOCK - inner, len(view))
            if n == BLOCK:
                block = bytes(view[:n])
            else:
                old = (
                    self.overlay.read(b)
                    if self.overlay.has(b)
                    else self.read_base(b * BLOCK, BLOCK)
                )
                block = old[:inner] + bytes(view[:n]) + old[inner + n :]
                block = block.ljust(BLOCK, b"\0")
            self.overlay.write(b, block)
            pos, view = pos + n, view[n:]
        return len(data)


def repo_loader(repo: Repository) -> Loader:
    """Chunks read straight from the packs and checked against their names."""
    fds: dict[str, int] = {}
    lock = threading.Lock()
    local = threading.local()

    def load(e: Extent) -> bytes:
        loc = repo.locate(e.hash)
        if loc is None:
            raise ImageError(f"chunk {e.hash.hex()[:16]} is missing from the repository")
        if loc.is_frame:  # format 2: the block inside its frame, checked
            dctx2 = getattr(local, "dctx", None)
            if dctx2 is None:
                dctx2 = local.dctx = zstandard.ZstdDecompressor()
                local.frames = OrderedDict()
            # A frame holds ~64 blocks read one after the other: decompress it once, not once
            # per block (the shrinks of a format-2 image took 11x the CPU that way).
            frames: OrderedDict[tuple[str, int], bytes] = local.frames
            key = (loc.pack, loc.offset)
            data = frames.get(key)
            if data is None:
                data = repo.read_frame(loc, dctx2)[1]
                frames[key] = data
                if len(frames) > FRAMES_KEPT:
                    frames.popitem(last=False)
            else:
                frames.move_to_end(key)
            block = data[loc.in_frame : loc.in_frame + loc.raw_len]
            if len(block) != loc.raw_len or chunk_hash(block) != e.hash:
                raise ImageError(f"chunk {e.hash.hex()[:16]}: block checksum mismatch")
            return bytes(block)
        with lock:
            fd = fds.get(loc.pack)
            if fd is None:
                fd = fds[loc.pack] = os.open(repo.pack_path(loc.pack), os.O_RDONLY | os.O_CLOEXEC)
        buf = os.pread(fd, RECORD_SIZE + loc.stored_len, loc.offset - RECORD_SIZE)
        head = parse_record_header(buf[:RECORD_SIZE], loc.offset)
        if head is None or head.hash != e.hash:
            raise ImageError(
                f"{loc.pack}: damaged record header at byte {loc.offset - RECORD_SIZE}"
            )
        dctx = getattr(local, "dctx", None)
        if dctx is None:
            dctx = local.dctx = zstandard.ZstdDecompressor()
        return decode(loc.record(e.hash), buf[RECORD_SIZE:], dctx)

    return load


# ---- the FUSE server -------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import mfusepy  # here, not at the top: only the server process needs libfuse

    repo: Repository | None = None
    base: ChunkBase | DeviceBase
    if args.device:
        base = DeviceBase(args.device)
        size = args.size
    else:
        repo = Repository.open(args.repo)
        m = repo.image(args.image)
        area = m.area(args.area)
        if area is None or not area.map:
            print(f"image {m.name} has no area {args.area} with data", file=sys.stderr)
            return 2
        base = ChunkBase(
            ExtentIndex(repo.image_dir(m.name) / area.map, area.map_hash), repo_loader(repo)
        )
        size = area.size
    overlay = Overlay(Path(args.overlay), size, args.capacity)
    view = AreaView(size, base, overlay)
    path = "/" + FILE_NAME
    errors: list[str] = []

    class Ops(mfusepy.Operations):
        use_ns = True

        def getattr(self, p: str, fh: object = None) -> dict[str, int]:
            now = int(time.time() * 1e9)
            if p == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, "st_mtime": now}
            if p == path:
                return {
                    "st_mode": stat.S_IFREG | 0o600,
                    "st_nlink": 1,
                    "st_size": size,
                    "st_mtime": now,
                    "st_blocks": (size + 511) // 512,
                }
            raise mfusepy.FuseOSError(errno.ENOENT)

        def readdir(self, p: str, fh: int) -> list[str]:
            return [".", "..", FILE_NAME]

        def open(self, p: str, flags: int) -> int:
            if p != path:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

        def read(self, p: str, size: int, offset: int, fh: int) -> bytes:
            try:
                return view.read(offset, size)
            except ImageError as exc:
                errors.append(str(exc))
                raise mfusepy.FuseOSError(errno.EIO) from None

        def write(self, p: str, data: bytes, offset: int, fh: int) -> int:
            try:
                return view.write(offset, data)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    errors.append(f"overlay full ({overlay.capacity} bytes)")
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None
            except ImageError as exc:
                errors.append(str(exc))
                raise mfusepy.FuseOSError(errno.EIO) from None

        def truncate(self, p: str, length: int, fh: object = None) -> int:
            if length != size:
                raise mfusepy.FuseOSError(errno.EPERM)
            return 0

        def fsync(self, p: str, datasync: int, fh: int) -> int:
            return 0

        def flush(self, p: str, fh: int) -> int:
            return 0

    watcher = threading.Thread(
        target=_watch_parent,
        args=(args.job, Path(args.mount), overlay, args),
        daemon=True,
    )
    watcher.start()
    try:
        mfusepy.FUSE(Ops(), args.mount, foreground=True, nothreads=False, fsname="bootmedia")
    finally:
        stats = {
            "overlay_used": overlay.used,
            "overlay_capacity": overlay.capacity,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "errors": errors[-5:],
        }
        # The stats are for the job; once it is gone, they are removed with the rest (written
        # after that, they were left in the overlay's directory, /dev/shm/bootmedia).
        Path(args.stats).write_text(json.dumps(stats))
        if os.getppid() != args.job:  # the job is gone: nobody else will remove these
            _forget(Path(args.mount), args)
        overlay.close()
        if repo is not None:
            repo.close()
    return 0


def _watch_parent(job: int, mount: Path, overlay: Overlay, args: argparse.Namespace) -> None:
    """When the job that started us dies without unmounting us (SIGKILL): stop what it left
    working on our file (the tools it ran, now orphans, that hold a loop device over it, and a
    temporary mount of one, btrfs's), detach those loop devices, unmount, and leave, removing
    the overlay, our files and the view's record: a killed job leaves no loop device, mount or
    overlay behind. If the kernel has not let go of our mount after GONE_TIMEOUT, we exit anyway."""
    group = os.getpgid(job) if os.getppid() == job else 0
    while os.getppid() == job:
        time.sleep(0.2)
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.ismount(mount) and time.monotonic() < deadline:  # still starting
        time.sleep(0.05)
    for dev in loops_backed_by({str(mount / FILE_NAME)}):
        for where in _mounts_of(dev):
            run_cleanup(["umount", "-l", where])
        for pid in _holders(dev, group) if group else ():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        run_cleanup(["losetup", "-d", dev])
    run_cleanup(["umount", "-l", str(mount)])
    _forget(mount, args)
    time.sleep(GONE_TIMEOUT)  # libfuse's loop ends (and main's finally runs) long before this
    if os.path.ismount(mount) or _dead_mount(mount):
        run_cleanup(["umount", "-l", str(mount)])
    overlay.close()
    _forget(mount, args)
    os._exit(3)


def _forget(mount: Path, args: argparse.Namespace) -> None:
    """Remove what only the job would have removed: the record, the mount point, our log and
    stats files (and their directory, a job's temporary one, when that is left empty)."""
    for name in (args.record, args.log, args.stats):
        if name:
            with contextlib.suppress(OSError):
                Path(name).unlink()
    with contextlib.suppress(OSError):
        mount.rmdir()
    _rmdir_temp(Path(args.stats).parent)
    if args.scratch:
        _rmdir_temp(Path(args.scratch), whole=True)


def _rmdir_temp(d: Path, whole: bool = False) -> None:
    """A job's temporary directory (bootmedia-... in /tmp): when empty, or `whole`."""
    if d.name.startswith("bootmedia-") and d.parent == Path(tempfile.gettempdir()):
        if whole:
            if d.exists() and holds_a_mount(d):  # never delete through a mount
                log.warning("left %s: a filesystem is still mounted in it", d)
                return
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            d.rmdir()


def _mounts_of(dev: str) -> list[str]:
    """Where a block device is mounted (from /proc/self/mountinfo)."""
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) > 4 and len(rest) > 1 and rest[1] == dev:
                out.append(fields[4].replace("\\040", " "))
    return out


def _holders(dev: str, group: int) -> list[int]:
    """Processes of the job's process group (the tools it ran keep it when they are orphaned)
    with the device open."""
    out = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        try:
            if pid == os.getpid() or os.getpgid(pid) != group:
                continue
        except OSError:
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) == dev for fd in fd_dir.iterdir()):
                out.append(pid)
    return out


def loops_backed_by(files: set[str]) -> list[str]:
    """Loop devices whose backing file is one of these paths (read from sysfs, never changed).
    Once a view's server is dead, the kernel may show its file as "<path> (deleted)" (after a
    stat of the dead mount): that is the same file (found by test_shrink_kill, where the next
    restore's cleanup then left the loop device over a killed view attached)."""
    out = []
    for b in sorted(Path("/sys/block").glob("loop*")):
        try:
            backing = (b / "loop" / "backing_file").read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if backing in files:
            out.append(f"/dev/{b.name}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bootmedia.image.view")
    ap.add_argument("--repo")
    ap.add_argument("--image")
    ap.add_argument("--area")
    ap.add_argument("--device", help="serve this device's bytes instead of an image area")
    ap.add_argument("--size", type=int, default=0)
    ap.add_argument("--mount", required=True)
    ap.add_argument("--overlay", required=True)
    ap.add_argument("--capacity", type=int, required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--record", help="this view's record in the runtime directory")
    ap.add_argument("--log", help="the file our output goes to (removed if the job dies)")
    ap.add_argument("--scratch", help="the job's temporary directory (removed if the job dies)")
    ap.add_argument("--job", type=int, default=0, help="the job's pid (default: our parent)")
    ap.add_argument("--job-log", help="the job's log file: ours go there too")
    args = ap.parse_args(argv)
    if args.job_log:
        log_to_file(args.job_log)
    args.job = args.job or os.getppid()
    return _serve(args)


# ---- the client side: mount, loop-attach, unmount ---------------------------------------------


@dataclass(frozen=True)
class ViewStats:
    overlay_used: int
    overlay_capacity: int
    peak_rss: int
    errors: tuple[str, ...] = ()


class MountedView:
    def __init__(
        self,
        mount: Path,
        size: int,
        overlay: Path,
        capacity: int,
        proc: subprocess.Popen[bytes],
        record: Path | None = None,
    ) -> None:
        self.mount, self.size, self.overlay, self.capacity = mount, size, overlay, capacity
        self.path = mount / FILE_NAME
        self.proc = proc
        self.record = record
        self.final: ViewStats | None = None

    @contextlib.contextmanager
    def loop(self) -> Iterator[str]:
        """A loop device over the view's file (the filesystems' tools want a block device)."""
        dev = self._attach()
        try:
            yield dev
        finally:
            run_cleanup(["losetup", "-d", dev])

    def _attach(self) -> str:
        """A free loop device, named in the record before it is attached to the view's file:
        a job killed between the two (and its server with it) leaves a record that names it,
        and the next run detaches it if it is backed by this view's file; attached first, it
        would be nobody's to detach. Another process may take the free device first: then the
        next free one."""
        if self.record is None:
            return run(["losetup", "--find", "--show", str(self.path)]).stdout.decode().strip()
        for attempt in range(1, ATTACH_TRIES + 1):
            dev = run(["losetup", "--find"]).stdout.decode().strip()
            _update_record(self.record, loop=dev)
            # the last refusal is the error, with its command and stderr
            if run(["losetup", dev, str(self.path)], check=attempt == ATTACH_TRIES).returncode == 0:
                return dev
        raise AssertionError("unreachable: the last attempt raises")

    def stats(self) -> ViewStats:
        """While mounted: the overlay's allocated bytes and the server's peak memory (VmHWM);
        after unmounting: what the server itself reported as it stopped."""
        if self.final is not None:
            return self.final
        try:
            used = os.stat(self.overlay).st_blocks * 512
        except OSError:
            used = 0
        return ViewStats(min(used, self.capacity), self.capacity, _peak_rss(self.proc.pid))


# ---- leftovers of killed jobs ---------------------------------------------------------------


def runtime_dir() -> Path:
    """Where views are mounted and recorded: /run/bootmedia/views for root (a tmpfs, gone at
    reboot, as the mounts are), $BOOTMEDIA_RUNTIME_DIR when set."""
    env = os.environ.get("BOOTMEDIA_RUNTIME_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0 and os.access("/run", os.W_OK):
        return Path("/run/bootmedia/views")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/bootmedia-{os.geteuid()}"
    return Path(base) / "bootmedia" / "views"


def _write_record(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _update_record(path: Path, loop: str) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    data["loops"] = [*data.get("loops", []), loop]
    _write_record(path, data)


def clean_leftovers(where: Path | None = None) -> list[str]:
    """Clean what killed jobs left: for each view record whose job is dead, its server (if it
    is still there), the loop devices it names (only while they are backed by that view's file),
    its mount and its overlay. One line per job cleaned, for the technician."""
    where = where or runtime_dir()
    try:
        records = sorted(where.glob("*.json"))
    except OSError:
        return []
    live_loops: set[str] = set()
    dead: list[tuple[Path, dict]] = []
    for rec in records:
        try:
            data = json.loads(rec.read_text())
            job = int(data["job"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if alive(job, str(data.get("job_start", ""))):
            live_loops.update(str(x) for x in data.get("loops", []))
        else:
            dead.append((rec, data))
    lines = []
    for rec, data in dead:
        mount = Path(str(data.get("mount", "")))
        own = {str(mount / FILE_NAME), "/" + FILE_NAME}  # "/area.img": once lazily unmounted
        done = []
        server = int(data.get("server", 0) or 0)
        if alive(server, str(data.get("server_start", ""))):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server, signal.SIGKILL)
            done.append(f"stopped its view server (pid {server})")
        loops = [str(x) for x in data.get("loops", [])]
        for dev in loops_backed_by(own):
            if dev in loops and dev not in live_loops and run_cleanup(["losetup", "-d", dev]):
                done.append(f"detached {dev}")
        if mount.is_relative_to(where) and mount.name:
            if (os.path.ismount(mount) or _dead_mount(mount)) and run_cleanup(
                ["umount", "-l", str(mount)]
            ):
                done.append(f"unmounted {mount}")
            with contextlib.suppress(OSError):
                mount.rmdir()
        overlay = Path(str(data.get("overlay", "")))
        if overlay.name.startswith("overlay-") and overlay.is_file():
            size = overlay.stat().st_blocks * 512
            overlay.unlink()
            _rmdir_temp(overlay.parent)
            done.append(f"removed its overlay ({size} bytes)")
        for name in data.get("files", []):
            f = Path(str(name))
            if f.name.startswith("view-") and f.is_file():
                with contextlib.suppress(OSError):
                    f.unlink()
                _rmdir_temp(f.parent)
        if data.get("scratch"):
            _rmdir_temp(Path(str(data["scratch"])), whole=True)
        with contextlib.suppress(OSError):
            rec.unlink()
        if done:
            lines.append(
                f"a killed bootmedia job (pid {data['job']}) left an image view behind: "
                + ", ".join(done)
            )
    return lines + clean_target_loops()  # and a restore by files' loop device over its target


def _dead_mount(path: Path) -> bool:
    """A FUSE mount whose server is gone: stat fails with ENOTCONN."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _fusermount() -> str:
    for tool in ("fusermount3", "fusermount"):
        if which(tool):
            return tool
    raise BootmediaError("fusermount3 is not installed (package fuse3)")


@dataclass(frozen=True)
class ImageArea:
    """A view's base: one area of an image in a repository."""

    repo: str | Path
    image: str
    area: str

    def argv(self) -> list[str]:
        return ["--repo", str(self.repo), "--image", self.image, "--area", self.area]

    def size(self) -> int:
        with Repository.open(self.repo) as r:
            a = r.image(self.image).area(self.area)
        if a is None:
            raise BootmediaError(f"image {self.image} has no area {self.area}")
        return a.size


@dataclass(frozen=True)
class DeviceArea:
    """A view's base: a partition device, never written (disk-to-disk clone)."""

    device: str
    length: int
    area: str

    def argv(self) -> list[str]:
        return ["--device", self.device, "--size", str(self.length)]

    def size(self) -> int:
        return self.length


@contextlib.contextmanager
def mounted_view(
    source: ImageArea | DeviceArea, workdir: Path, capacity: int, scratch: Path | None = None
) -> Iterator[MountedView]:
    """Serve one area (of an image, or a device) as a file under workdir; the overlay file lives
    in workdir too (choose a directory on the stick, or /dev/shm for RAM). `scratch`: the job's
    temporary directory (bootmedia-... in /tmp), removed with the view if the job is killed."""
    if not Path("/dev/fuse").exists():
        raise BootmediaError("FUSE is not available (/dev/fuse is missing)")
    fusermount = _fusermount()
    for line in clean_leftovers():
        log.warning("%s", line)
    # What a view's record did not name (its files, when the record was gone already).
    swept = sweep([workdir])
    if swept:
        log.warning("%s", swept)
    workdir.mkdir(parents=True, exist_ok=True)
    area = source.area
    runtime = runtime_dir()
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    tag = f"{owner_tag()}-{area}-{next(_SERIAL)}"  # the owner first: bootmedia.scratch.sweep
    mount = runtime / tag
    record = runtime / f"{tag}.json"
    stats = Path(workdir) / f"view-{tag}.json"
    log_path = Path(workdir) / f"view-{tag}.log"
    size = source.size()
    overlay = Path(workdir) / f"overlay-{tag}"
    argv = [
        sys.executable, "-m", "bootmedia.image.view", *source.argv(), "--mount", str(mount), "--overlay", str(overlay), "--capacity", str(capacity),
        "--stats", str(stats), "--record", str(record), "--log", str(log_path), "--job", str(os.getpid()),
        *(["--scratch", str(scratch)] if scratch else []),
        *(["--job-log", job_log] if (job_log := log_file()) else []),
    ]  # fmt: skip
    # The record first: whatever moment the job is killed at, the next run knows what to clean.
    facts: dict[str, object] = {
        "job": os.getpid(),
        "job_start": start_time(os.getpid()),
        "mount": str(mount),
        "overlay": str(overlay),
        "files": [str(log_path), str(stats)],
        "scratch": str(scratch or ""),
        "loops": [],
    }
    _write_record(record, facts)
    mount.mkdir(exist_ok=True)
    with open(log_path, "wb") as logf:
        # A session of its own: a Ctrl-C on the job's terminal reaches the job, which unwinds
        # and unmounts the view; the server must not leave by itself under the loop device.
        proc = spawn(argv, logf, own_session=True)
    _write_record(record, {**facts, "server": proc.pid, "server_start": start_time(proc.pid)})
    view = MountedView(mount, size, overlay, capacity, proc, record)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(view.path, size):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BootmediaError(f"the image view of {area} did not start: {' | '.join(tail)}")
            time.sleep(0.05)
        yield view
    finally:
        _stop_server(proc, mount, fusermount)
        if stats.exists():
            d = json.loads(stats.read_text())
            view.final = ViewStats(
                d["overlay_used"], d["overlay_capacity"], d["peak_rss"], tuple(d["errors"])
            )
            stats.unlink()
        with contextlib.suppress(OSError):
            overlay.unlink()
        with contextlib.suppress(OSError):
            mount.rmdir()
        with contextlib.suppress(OSError):
            log_path.unlink()
        with contextlib.suppress(OSError):
            record.unlink()


def _stop_server(proc: subprocess.Popen[bytes], mount: Path, fusermount: str) -> None:
    """Unmount the view and see its server gone. A server not mounted yet (the job was stopped
    while it started) is told to stop with SIGTERM (libfuse unmounts as it leaves); one that
    does not leave is killed, and a mount it left dead is unmounted lazily."""
    if os.path.ismount(mount):
        if not run_cleanup([fusermount, "-u", str(mount)]):
            run_cleanup([fusermount, "-u", "-z", str(mount)])  # busy: let go lazily
        waits: tuple[tuple[signal.Signals | None, float], ...] = (
            (None, 30),
            (signal.SIGTERM, 5),
            (signal.SIGKILL, 5),
        )
    else:
        waits = ((signal.SIGTERM, 5), (signal.SIGKILL, 5))
    for sig, timeout in waits:
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    if os.path.ismount(mount) or _dead_mount(mount):
        run_cleanup(["umount", "-l", str(mount)])


def _ready(path: Path, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
