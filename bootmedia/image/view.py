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
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import errno
import json
import mmap
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from bootmedia.errors import BootmediaError, ImageError
from bootmedia.repo.maps import ENTRY, MAP_MAGIC, ZERO_HASH, Extent, check_map
from bootmedia.repo.packs import RECORD_SIZE, decode, parse_record_header
from bootmedia.repo.store import Repository
from bootmedia.run import run, which

BLOCK = 4096  # overlay granularity
CACHE_BYTES = 32 << 20  # decompressed chunks kept for the next reads
FILE_NAME = "area.img"
START_TIMEOUT = 20.0

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
            return repo.read_block(loc, e.hash, dctx2)
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

    _die_with_parent()
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

    try:
        mfusepy.FUSE(Ops(), args.mount, foreground=True, nothreads=False, fsname="bootmedia")
    finally:
        stats = {
            "overlay_used": overlay.used,
            "overlay_capacity": overlay.capacity,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "errors": errors[-5:],
        }
        Path(args.stats).write_text(json.dumps(stats))
        overlay.close()
        if repo is not None:
            repo.close()
    return 0


def _die_with_parent() -> None:
    """SIGTERM when the job that started us dies (even by SIGKILL): libfuse then leaves its
    loop and the overlay is removed, so a killed job leaves no overlay filling RAM or the
    stick. (The job's target is then marked incomplete, as after any interruption.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


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
    return _serve(ap.parse_args(argv))


# ---- the client side: mount, loop-attach, unmount ---------------------------------------------


@dataclass(frozen=True)
class ViewStats:
    overlay_used: int
    overlay_capacity: int
    peak_rss: int
    errors: tuple[str, ...] = ()


class MountedView:
    def __init__(
        self, mount: Path, size: int, overlay: Path, capacity: int, proc: subprocess.Popen[bytes]
    ) -> None:
        self.mount, self.size, self.overlay, self.capacity = mount, size, overlay, capacity
        self.path = mount / FILE_NAME
        self.proc = proc
        self.final: ViewStats | None = None

    @contextlib.contextmanager
    def loop(self) -> Iterator[str]:
        """A loop device over the view's file (the filesystems' tools want a block device)."""
        dev = run(["losetup", "--find", "--show", str(self.path)]).stdout.decode().strip()
        try:
            yield dev
        finally:
            run(["losetup", "-d", dev], check=False)

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
    source: ImageArea | DeviceArea, workdir: Path, capacity: int
) -> Iterator[MountedView]:
    """Serve one area (of an image, or a device) as a file under workdir; the overlay file lives
    in workdir too (choose a directory on the stick, or /dev/shm for RAM)."""
    if not Path("/dev/fuse").exists():
        raise BootmediaError("FUSE is not available (/dev/fuse is missing)")
    fusermount = _fusermount()
    workdir.mkdir(parents=True, exist_ok=True)
    area = source.area
    mount = Path(workdir) / f"view-{area}-{os.getpid()}"
    mount.mkdir(exist_ok=True)
    stats = Path(workdir) / f"view-{area}-{os.getpid()}.json"
    size = source.size()
    overlay = Path(workdir) / f"overlay-{area}-{os.getpid()}"
    argv = [
        sys.executable, "-m", "bootmedia.image.view", *source.argv(), "--mount", str(mount), "--overlay", str(overlay), "--capacity", str(capacity),
        "--stats", str(stats),
    ]  # fmt: skip
    log_path = Path(workdir) / f"view-{area}-{os.getpid()}.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
    view = MountedView(mount, size, overlay, capacity, proc)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _ready(view.path, size):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BootmediaError(f"the image view of {area} did not start: {' | '.join(tail)}")
            time.sleep(0.05)
        yield view
    finally:
        if os.path.ismount(mount):
            run([fusermount, "-u", str(mount)], check=False)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if stats.exists():
            d = json.loads(stats.read_text())
            view.final = ViewStats(
                d["overlay_used"], d["overlay_capacity"], d["peak_rss"], tuple(d["errors"])
            )
            stats.unlink()
        with contextlib.suppress(OSError):
            mount.rmdir()
        with contextlib.suppress(OSError):
            log_path.unlink()


def _ready(path: Path, size: int) -> bool:
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
