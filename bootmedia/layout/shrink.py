"""Shrink a partition of an image on its way to a smaller target.

The image's partition is served as a block file of its original size (bootmedia.image.view),
loop-attached, and shrunk there by the filesystem's own tool; the writes land in the view's
overlay, never in the image. Then only the blocks the shrunk filesystem uses are copied to the
target, each piece hashed as it is read and checked again after it is read back.

    with ExitStack() as stack:
        prepared = prepare_shrink(stack, repo, image, area, new_size, workdir)  # before any write
        ...
        copy_prepared(prepared, target_fd, base, reporter)                    # the writes
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3

from bootmedia import blockdev, directio, fs
from bootmedia.errors import BootmediaError, ImageError
from bootmedia.image.view import DeviceArea, ImageArea, MountedView
from bootmedia.layout.fat import rebuild_fat
from bootmedia.layout.plan import Change
from bootmedia.layout.refile import (
    VIEW_CAPACITY,
    Refile,
    open_view,
    prepare_refile,
    write_refile,
)
from bootmedia.pipeline import OrderedPool, default_threads
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import Area
from bootmedia.run import require_tools

MiB = 1 << 20
PIECE = 4 * MiB
DEPTH = 4  # pieces read ahead (16 MiB): enough to keep reads, hashing and writes overlapped
WINDOW = 256  # pieces written before they are read back (1 GiB): the hashes kept are bounded
RAM_SHARE = 4  # an overlay goes to RAM when it needs at most 1/RAM_SHARE of the free memory
SHM = Path("/dev/shm")


def overlay_capacity(area: Area, new_size: int) -> int:
    """What the shrinker can write, fixed before it runs: the tools move the blocks that lie
    past the new end and rewrite metadata; btrfs relocates whole block groups."""
    used = area.used if area.used is not None else area.size
    extra = used + 512 * MiB if area.fstype == "btrfs" else max(64 * MiB, area.size // 32)
    need = used + extra
    return min(area.size, need) // 4096 * 4096 + 4096


def overlay_dir(capacity: int, fallback: Path) -> Path:
    """RAM (/dev/shm) when the overlay fits comfortably in free memory, else the fallback
    (a directory on the stick)."""
    try:
        avail = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemAvailable:")
        )
        st = os.statvfs(SHM)
        shm_free = st.f_bavail * st.f_frsize
    except (OSError, StopIteration, ValueError):
        return fallback
    if capacity * RAM_SHARE <= avail and capacity * 2 <= shm_free:
        return SHM / "bootmedia"
    return fallback


@dataclass(frozen=True)
class ShrinkStats:
    number: int
    fstype: str
    old_size: int
    new_size: int
    fs_size: int  # the filesystem's length after shrinking
    used: int  # bytes of it copied to the target
    overlay_used: int
    overlay_capacity: int
    overlay_dir: str
    server_peak_rss: int
    seconds: float


@dataclass
class Shrunk:
    """A filesystem shrunk in a view, and the byte ranges of it to copy."""

    area: Area
    new_size: int
    view: MountedView
    device: str  # the loop device over the view, holding the shrunk filesystem
    ranges: list[tuple[int, int]]
    fs_size: int
    overlay_dir: Path
    capacity: int
    started: float

    @property
    def used(self) -> int:
        return sum(n for _, n in self.ranges)


def prepare_shrink(
    stack: contextlib.ExitStack,
    source: ImageArea | DeviceArea,
    area: Area,
    new_size: int,
    workdir: Path,
    sector: int = 0,
) -> Prepared:
    """Shrink the area's filesystem in a view of the image (or of the source disk's partition,
    for a clone); the view stays mounted until the stack closes. A FAT is made anew instead,
    `new_size` long, with the target's `sector` size when that is larger than its own; an XFS
    is restored by files into a new XFS (bootmedia.layout.refile)."""
    if area.fstype == "xfs":  # no shrinker: by files (ext4 only when its blocks are too small)
        return prepare_refile(stack, source, area, new_size, workdir, sector)
    tools = fs.SHRINK_TOOLS.get(area.fstype)
    if tools is None:
        raise BootmediaError(f"{area.name}: cannot shrink a {area.fstype or 'raw'} partition")
    require_tools("losetup", *tools)
    started = time.monotonic()
    if area.fstype == "vfat":
        return _rebuild_fat(stack, source, area, new_size, workdir, sector, started)
    capacity = overlay_capacity(area, new_size)
    where = overlay_dir(capacity, workdir)
    view = open_view(stack, source, workdir, capacity, where)
    device = stack.enter_context(view.loop())
    try:
        fs.shrink(device, area.fstype, new_size)
    except BootmediaError as exc:
        raise BootmediaError(
            f"{area.name}: {area.fstype} could not be shrunk to {human_bytes(new_size)}: {exc}"
        ) from None
    size = fs.fs_size(device, area.fstype)
    if size is None or size > new_size:
        raise BootmediaError(
            f"{area.name}: after shrinking, the {area.fstype} is "
            f"{human_bytes(size or 0)}, larger than its new partition ({human_bytes(new_size)})"
        )
    ranges = [
        (o, min(n, size - o)) for o, n in fs.used_ranges(device, area.fstype, workdir) if o < size
    ]
    if area.fstype == "ntfs":
        # NTFS keeps a copy of its boot sector after the volume, outside $Bitmap; ntfsresize
        # does not write one, and ntfs-3g looks for it in the partition's last sector.
        _ntfs_backup_boot(device, (size - 512, new_size - 512))
        ranges += [(size - 512, 512), (new_size - 512, 512)]
    return Shrunk(area, new_size, view, device, ranges, size, where, capacity, started)


def _rebuild_fat(
    stack: contextlib.ExitStack,
    source: ImageArea | DeviceArea,
    area: Area,
    new_size: int,
    workdir: Path,
    sector: int,
    started: float,
) -> Shrunk:
    """FAT, made smaller by file: a new FAT of new_size (same volume id, label, FAT type where
    it fits, logical sector size unless the target's is larger) with the image's files, which
    are read back and compared (bootmedia.layout.fat)."""
    capacity = 16 << 20  # nothing writes to this view; mtools only reads it
    view = open_view(stack, source, workdir, capacity)
    with open(view.path, "rb") as f:
        own = int.from_bytes(f.read(512)[11:13], "little") or 512
    work = workdir / f"fat-{area.name}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        image = rebuild_fat(view.path, new_size, max(own, sector), area.label, work)
    except BootmediaError as exc:
        raise BootmediaError(
            f"{area.name}: its FAT could not be rebuilt in {human_bytes(new_size)}: {exc}"
        ) from None
    ranges = fs.fat_used(str(image)) or [(0, new_size)]
    return Shrunk(area, new_size, view, str(image), ranges, new_size, workdir, capacity, started)


# What prepare_shrink gives: a filesystem shrunk in a view, or one to restore by files.
Prepared = Shrunk | Refile

Sums = list[tuple[int, int, bytes]]


def copy_ranges(
    source: str,
    ranges: list[tuple[int, int]],
    fd: int,
    base: int,
    reporter: Reporter,
    what: str,
    verify: bool = False,
) -> Sums:
    """Copy byte ranges of a device to the target at base; the hash of every piece written and
    not yet read back. With verify, every WINDOW pieces are flushed and read back as the copy
    goes, so at most WINDOW hashes are kept (one per 4 MiB would be 25 MB per TB); the caller
    reads back the rest (verify_ranges) after its own flush.

    The same shape as capture and apply: a pool of workers reads the pieces (O_DIRECT into
    reused aligned buffers where the source takes it) and hashes them, several reads in
    flight, and this thread alone writes them to the target, in order, through O_DIRECT where
    the piece is aligned to the target's sectors. At most DEPTH pieces are in flight."""
    sums: Sums = []
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    dsrc = directio.reopen(src, write=False)
    dst = directio.reopen(fd, write=True)
    src_unit = directio.sector_of(src) - 1
    dst_unit = directio.sector_of(fd) - 1
    buffers = directio.AlignedBuffers()

    def pieces() -> Iterator[tuple[int, int]]:
        for offset, length in ranges:
            pos, end = offset, offset + length
            while pos < end:
                n = min(PIECE, end - pos)
                yield pos, n
                pos += n

    def read(piece: tuple[int, int]) -> tuple[memoryview, bytes]:
        pos, n = piece
        buf = buffers.take(n)
        view = buf[:n]
        direct = dsrc >= 0 and not ((pos | n) & src_unit)
        got = 0
        while got < n:
            k = os.preadv(dsrc if direct else src, [view[got:]], pos + got)
            if k <= 0:
                raise ImageError(f"{what}: short read from {source} at byte {pos + got}")
            got += k
        return buf, blake3.blake3(view).digest()

    try:
        pool = OrderedPool(read, default_threads(), depth=DEPTH)
        for (pos, n), (buf, digest) in pool.run(pieces(), reporter.cancel):
            reporter.check_cancel()
            view, at = buf[:n], base + pos
            if dst >= 0 and not ((at | n) & dst_unit):
                try:
                    _pwrite_all(dst, view, at)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    os.close(dst)  # the target takes no O_DIRECT after all: buffered
                    dst = -1
                    _pwrite_all(fd, view, at)
            else:
                _pwrite_all(fd, view, at)
            buffers.give(buf)
            sums.append((pos, n, digest))
            reporter.advance(n)
            if verify and len(sums) >= WINDOW:
                blockdev.flush(fd)
                verify_ranges(fd, base, sums, reporter, what)
                sums = []
        reporter.check_cancel()
    finally:
        for d in (dst, dsrc, src):
            if d >= 0:
                os.close(d)
    return sums


def verify_ranges(fd: int, base: int, sums: Sums, reporter: Reporter, what: str) -> None:
    """Read back what copy_ranges wrote (after a flush) and check every piece's hash."""
    for pos, n, digest in sums:
        reporter.check_cancel()
        if blake3.blake3(os.pread(fd, n, base + pos)).digest() != digest:
            raise ImageError(
                f"verification failed: {what} at offset {pos} does not read back as written "
                "(bad target disk or cable?)"
            )
        reporter.advance(n)


def copy_prepared(
    p: Prepared, fd: int, base: int, reporter: Reporter, verify: bool = True
) -> ShrinkStats:
    """Copy the shrunk filesystem's used blocks to the target at `base`, then read them back
    (or, for a filesystem restored by files, make it there and compare its files)."""
    if isinstance(p, Refile):
        used = write_refile(p, fd, base, reporter, verify)
        stats = p.view.stats()
        return ShrinkStats(
            p.area.number, p.area.fstype, p.area.size, p.new_size, p.new_size, used,
            stats.overlay_used, VIEW_CAPACITY, str(p.view.overlay.parent), stats.peak_rss,
            round(time.monotonic() - p.started, 3),
        )  # fmt: skip
    sums = copy_ranges(p.device, p.ranges, fd, base, reporter, p.area.name, verify)
    blockdev.flush(fd)
    if verify:
        verify_ranges(fd, base, sums, reporter, p.area.name)
    stats = p.view.stats()
    return ShrinkStats(
        p.area.number,
        p.area.fstype,
        p.area.size,
        p.new_size,
        p.fs_size,
        p.used,
        stats.overlay_used,
        p.capacity,
        str(p.overlay_dir),
        stats.peak_rss,
        round(time.monotonic() - p.started, 3),
    )


def fix_moved_boot_sectors(fd: int, changes: tuple[Change, ...]) -> None:
    """NTFS/FAT boot sectors record their partition's start; set it where a partition moved,
    and read it back."""
    for c in changes:
        if (
            c.moved
            and c.fstype in ("ntfs", "vfat")
            and fs.set_hidden_sectors(fd, c.new_start, c.fstype)
        ):
            blockdev.flush(fd)
            boot = os.pread(fd, 512, c.new_start)
            sector = int.from_bytes(boot[11:13], "little")
            if int.from_bytes(boot[0x1C:0x20], "little") * sector != c.new_start:
                raise ImageError(
                    f"verification failed: partition {c.number}'s boot sector does not read "
                    "back with its new start"
                )


def _ntfs_backup_boot(device: str, where: tuple[int, ...]) -> None:
    fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    try:
        boot = os.pread(fd, 512, 0)
        for pos in where:
            os.pwrite(fd, boot, pos)
        os.fsync(fd)
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: bytes | memoryview, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
