"""Filesystems: what is on a partition, which blocks it uses, how small it can get, how to grow it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.run import run, run_text, which
from bootmedia.scratch import new_scratch
from bootmedia.tools import blkid

log = logging.getLogger("bootmedia.fs")

# blkid TYPE -> partclone program that can map its used blocks
PARTCLONE = {
    "ext2": "partclone.extfs",
    "ext3": "partclone.extfs",
    "ext4": "partclone.extfs",
    "vfat": "partclone.fat",
    "exfat": "partclone.exfat",
    "ntfs": "partclone.ntfs",
    "btrfs": "partclone.btrfs",
    "xfs": "partclone.xfs",
    "hfsplus": "partclone.hfsp",
    "f2fs": "partclone.f2fs",
}
ENCRYPTED = {"crypto_LUKS", "BitLocker"}
BTRFS_RELOCATE = 64 << 20  # room btrfs resize needs to move the chunks past the new end


@dataclass(frozen=True)
class FsInfo:
    type: str = ""  # blkid TYPE; "" when nothing is recognised
    uuid: str = ""
    label: str = ""


def probe(device: str) -> FsInfo:
    """Low-level probe (blkid -p): reads the device itself, never a stale cache."""
    values = blkid.content(blkid.probe(device))
    return FsInfo(values.get("TYPE", ""), values.get("UUID", ""), values.get("LABEL", ""))


def can_map(fstype: str, device: str | None = None) -> bool:
    """Whether partclone can map this filesystem's used blocks, and be trusted to."""
    tool = PARTCLONE.get(fstype)
    if tool is None or which(tool) is None:
        return False
    if fstype == "vfat" and device is not None:
        # partclone.fat counts in 512-byte sectors: on a FAT with 4 KiB sectors (4Kn disks)
        # its map misses most of the data. Such a FAT (an ESP, small) is captured raw instead.
        with open(device, "rb") as f:
            boot = f.read(512)
        if len(boot) < 13 or int.from_bytes(boot[11:13], "little") != 512:
            return False
    return True


def bitmap_ranges(bitmap: bytes, unit: int, limit: int) -> list[tuple[int, int]]:
    """Byte ranges of the set bits of an allocation bitmap (bit i, LSB first, = unit i).
    Whole 0x00/0xff bytes go by regex, so a 1 TB volume's 32 MB bitmap takes well under a
    second; only mixed bytes are looked at bit by bit."""
    ranges: list[tuple[int, int]] = []

    def add(first: int, count: int) -> None:
        start, end = first * unit, min((first + count) * unit, limit)
        if end <= start:
            return
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
        else:
            ranges.append((start, end - start))

    for m in re.finditer(rb"\xff+|[^\x00\xff]", bitmap):
        if m.group()[0] == 0xFF:
            add(m.start() * 8, (m.end() - m.start()) * 8)
            continue
        byte = m.group()[0]
        for bit in range(8):
            if byte >> bit & 1:
                add(m.start() * 8 + bit, 1)
    return ranges


def _ntfs_used(device: str) -> list[tuple[int, int]]:
    """NTFS's own cluster bitmap ($Bitmap, read with ntfscat). All metadata ($MFT, $LogFile,
    ...) lives in clusters it marks; partclone.ntfs -D reads the same map, 50x slower."""
    with open(device, "rb") as f:
        boot = f.read(512)
    sector = int.from_bytes(boot[11:13], "little")
    spc = boot[13]
    cluster = sector * (spc if spc <= 128 else 1 << (256 - spc))
    volume = (int.from_bytes(boot[40:48], "little") + 1) * sector  # + the backup boot sector
    bitmap = run(["ntfscat", "-f", device, "$Bitmap"]).stdout
    return bitmap_ranges(bitmap, cluster, volume)


def _fat_used(device: str) -> list[tuple[int, int]]:
    """FAT16/FAT32: everything before the data area, plus each cluster whose FAT entry is not
    zero (free). [] for FAT12 or anything odd, and partclone maps it instead."""
    with open(device, "rb") as f:
        boot = f.read(512)
        sector = int.from_bytes(boot[11:13], "little")
        spc, reserved, nfats = boot[13], int.from_bytes(boot[14:16], "little"), boot[16]
        root_entries = int.from_bytes(boot[17:19], "little")
        total = int.from_bytes(boot[19:21], "little") or int.from_bytes(boot[32:36], "little")
        fat_sectors = int.from_bytes(boot[22:24], "little") or int.from_bytes(boot[36:40], "little")
        if sector not in (512, 1024, 2048, 4096) or not spc or not nfats or not fat_sectors:
            return []
        root = (root_entries * 32 + sector - 1) // sector
        data_start = (reserved + nfats * fat_sectors + root) * sector
        clusters = (total * sector - data_start) // (spc * sector)
        if clusters < 4085:
            return []  # FAT12: 12-bit entries, leave it to partclone
        width = 2 if clusters < 65525 else 4
        f.seek(reserved * sector)
        fat = f.read(fat_sectors * sector)
    entries = memoryview(fat).cast("H" if width == 2 else "I")[2 : clusters + 2]
    mask = 0x0FFFFFFF if width == 4 else 0xFFFF
    # One byte per cluster: 0xff = used, so bitmap_ranges' byte-run scan applies unchanged.
    flags = bytes(0xFF if e & mask else 0 for e in entries)
    ranges = [(0, data_start)]
    unit = spc * sector
    for start, length in bitmap_ranges(flags, unit // 8, clusters * unit):
        begin, end = data_start + start, data_start + start + length
        if begin == ranges[-1][0] + ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
        else:
            ranges.append((begin, end - begin))
    return ranges


def fat_used(device: str) -> list[tuple[int, int]]:
    """A FAT16/FAT32's used ranges from its own FAT, [] for FAT12. A FAT bootmedia rebuilt is
    copied whole when this is []: partclone.fat misreads a FAT12 with 4 KiB sectors (a 40 MiB
    ESP rebuilt for a 4Kn disk lost file data that way)."""
    return _fat_used(device)


def _ext_used(device: str) -> list[tuple[int, int]]:
    """ext2/3/4: the complement of the free-block lists dumpe2fs prints from the bitmaps.
    (partclone.extfs -D reads the same bitmaps but then sleeps about 2 s in sync and its
    progress thread.)"""
    out = run_text(["dumpe2fs", device])
    head = dict(line.split(":", 1) for line in out.split("\n\n", 1)[0].splitlines() if ":" in line)
    try:
        bsize = int(head["Block size"])
        count = int(head["Block count"])
    except (KeyError, ValueError):
        return []
    free: list[tuple[int, int]] = []
    for m in re.finditer(r"^\s+Free blocks: (.*)$", out, re.M):
        for part in filter(None, (x.strip() for x in m.group(1).split(","))):
            a, _, b = part.partition("-")
            free.append((int(a), int(b or a)))
    free.sort()
    ranges: list[tuple[int, int]] = []
    pos = 0
    for a, b in free:
        if a > pos:
            ranges.append((pos * bsize, (a - pos) * bsize))
        pos = max(pos, b + 1)
    if pos < count:
        ranges.append((pos * bsize, (count - pos) * bsize))
    return ranges


def used_ranges(device: str, fstype: str, workdir: Path) -> list[tuple[int, int]]:
    """The byte ranges a filesystem uses. Only these are read at capture: free space is never
    read. From the filesystem's own bitmap where we read it directly (FAT, NTFS, ext), else from
    partclone's domain log (`partclone.X -D`)."""
    own = _ntfs_used(device) if fstype == "ntfs" and which("ntfscat") else []
    own = _fat_used(device) if fstype == "vfat" else own
    own = _ext_used(device) if fstype in ("ext2", "ext3", "ext4") else own
    if own:
        return own
    tool = PARTCLONE[fstype]
    domain = workdir / f"{Path(device).name}.domain"
    run([tool, "-D", "-q", "-s", device, "-o", str(domain), "-L", str(workdir / "partclone.log")])
    ranges: list[tuple[int, int]] = []
    for line in domain.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "+" and parts[0].startswith("0x"):
            start, size = int(parts[0], 16), int(parts[1], 16)
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + size)
            else:
                ranges.append((start, size))
    if not ranges:
        raise BootmediaError(f"{tool} reported no used blocks on {device}")
    return ranges


def block_size(device: str, fstype: str) -> int | None:
    """The filesystem's own sector/block size, read from its superblock. A filesystem cannot
    live on a disk whose logical sectors are larger than this."""
    with open(device, "rb") as f:
        head = f.read(2048)
    if fstype in ("ext2", "ext3", "ext4") and len(head) >= 1024 + 28:
        return 1024 << int.from_bytes(head[1024 + 24 : 1024 + 28], "little")
    if fstype in ("vfat", "ntfs", "exfat") and len(head) >= 13:
        if fstype == "exfat":
            return 1 << head[108]
        return int.from_bytes(head[11:13], "little")
    return None


def min_size(device: str, fstype: str) -> int | None:
    """The smallest size the filesystem says it can shrink to, where it can tell."""
    try:
        if fstype in ("ext2", "ext3", "ext4"):
            blocks = re.search(
                r"minimum size of the filesystem: (\d+)", run_text(["resize2fs", "-P", device])
            )
            bsize = re.search(r"Block size:\s+(\d+)", run_text(["dumpe2fs", "-h", device]))
            if blocks and bsize:
                return int(blocks.group(1)) * int(bsize.group(1))
        elif fstype == "btrfs":
            # What its chunks take on the device (read from the superblock, no mount): btrfs
            # resize relocates whole chunks and needs room for each one it moves, so it cannot
            # be trusted to go below what is allocated (it turns read-only when it runs out).
            out = run_text(["btrfs", "inspect-internal", "dump-super", device])
            m = re.search(r"^dev_item.bytes_used\s+(\d+)", out, re.M)
            if m:
                return int(m.group(1)) + BTRFS_RELOCATE
        elif fstype == "ntfs":
            out = run_text(["ntfsresize", "--info", "--force", "--no-action", device])
            m = re.search(r"resize at (\d+) bytes", out)
            if m:
                return int(m.group(1))
    except BootmediaError as exc:
        log.info("no minimum size for %s: %s", device, exc)
    return None


def grow_tool(fstype: str) -> str | None:
    """The program that grows this filesystem, if it is installed."""
    tool = {
        "ext2": "resize2fs",
        "ext3": "resize2fs",
        "ext4": "resize2fs",
        "ntfs": "ntfsresize",
        "xfs": "xfs_growfs",
        "btrfs": "btrfs",
        "vfat": "fatresize",
    }.get(fstype)
    return tool if tool and which(tool) else None


def grow(device: str, fstype: str) -> None:
    """Grow the filesystem on device to fill its (just enlarged) partition."""
    if fstype in ("ext2", "ext3", "ext4"):
        # resize2fs insists on a freshly checked filesystem; -p repairs nothing it must ask about.
        run(["e2fsck", "-f", "-p", device])
        run(["resize2fs", device])
    elif fstype == "ntfs":
        run(["ntfsresize", "--force", "--no-progress-bar", device], input=b"y\n")
    elif fstype == "vfat":
        run(["fatresize", "-s", "max", device])
    elif fstype in ("xfs", "btrfs"):
        with mounted(device) as mnt:
            if fstype == "xfs":
                run(["xfs_growfs", mnt])
            else:
                run(["btrfs", "filesystem", "resize", "max", mnt])
    else:
        raise BootmediaError(f"cannot grow a {fstype or 'unknown'} filesystem")


@contextlib.contextmanager
def mounted(device: str, read_only: bool = False) -> Iterator[str]:
    """The device mounted on a scratch directory of this job. When the umount fails, the
    directory is left (with a warning), never removed with the filesystem still on it: that
    would delete the mounted filesystem's files."""
    with new_scratch("mnt") as where:
        mnt = str(where)
        run(["mount", *(["-o", "ro"] if read_only else []), device, mnt])
        try:
            yield mnt
        finally:
            run(["umount", mnt])


def make_swap(device: str, uuid: str, label: str) -> None:
    argv = ["mkswap"]
    if uuid:
        argv += ["-U", uuid]
    if label:
        argv += ["-L", label]
    run([*argv, device])


# ---- shrinking (issue 10): each filesystem's own tool, never a relocator of our own ----------

SHRINK_TOOLS = {
    "ext2": ("e2fsck", "resize2fs"),
    "ext3": ("e2fsck", "resize2fs"),
    "ext4": ("e2fsck", "resize2fs"),
    "ntfs": ("ntfsresize",),
    "btrfs": ("btrfs", "mount", "umount"),
    "vfat": ("mkfs.vfat", "mcopy", "mdir"),
    # restored by files into a new XFS instead (bootmedia.layout.refile)
    "xfs": ("mkfs.xfs", "xfs_info", "xfsdump", "xfsrestore", "xfs_repair", "mount", "umount"),
}


def shrink(device: str, fstype: str, size: int) -> None:
    """Make the filesystem on device at most `size` bytes long, with its own tool.
    (FAT is rebuilt by file instead: see bootmedia.layout.fat.)"""
    if fstype in ("ext2", "ext3", "ext4"):
        # resize2fs insists on a freshly checked filesystem; -p repairs nothing it must ask about.
        run(["e2fsck", "-f", "-p", device])
        run(["resize2fs", device, f"{size // 1024}K"])
    elif fstype == "ntfs":
        # --force: an image of a disk Windows hibernated or did not shut down cleanly is marked
        # for chkdsk; ntfsresize refuses it otherwise. The size is in bytes.
        run(
            ["ntfsresize", "--force", "--no-progress-bar", "--size", str(size), device],
            input=b"y\n",
        )
    elif fstype == "btrfs":
        with mounted(device) as mnt:
            run(["btrfs", "filesystem", "resize", str(size), mnt])
    else:
        raise BootmediaError(f"cannot shrink a {fstype or 'unknown'} filesystem")


def fs_size(device: str, fstype: str) -> int | None:
    """The filesystem's own idea of its length in bytes (after a shrink it must fit)."""
    if fstype in ("ext2", "ext3", "ext4"):
        head = run_text(["dumpe2fs", "-h", device])
        count = re.search(r"^Block count:\s+(\d+)", head, re.M)
        bsize = re.search(r"^Block size:\s+(\d+)", head, re.M)
        return int(count.group(1)) * int(bsize.group(1)) if count and bsize else None
    if fstype == "ntfs":
        with open(device, "rb") as f:
            boot = f.read(512)
        sector = int.from_bytes(boot[11:13], "little")
        return (int.from_bytes(boot[40:48], "little") + 1) * sector
    if fstype == "btrfs":
        out = run_text(["btrfs", "inspect-internal", "dump-super", device])
        m = re.search(r"^dev_item.total_bytes\s+(\d+)", out, re.M)
        return int(m.group(1)) if m else None
    return None


def set_hidden_sectors(fd: int, base: int, fstype: str) -> bool:
    """NTFS and FAT boot sectors record the partition's start (in sectors) at byte 0x1C; Windows
    will not boot an NTFS whose field names the old start. Set it for the partition that starts
    at byte `base` of the disk open on fd (and in the backup boot sector: NTFS's is its volume's
    last sector, FAT32's is named by the boot sector). Returns whether anything changed."""
    boot = bytearray(os.pread(fd, 512, base))
    sector = int.from_bytes(boot[11:13], "little")
    if sector not in (512, 1024, 2048, 4096) or base % sector:
        return False
    start_sector = base // sector
    if fstype == "ntfs" and boot[3:11] != b"NTFS    ":
        return False
    if fstype == "vfat" and boot[510:512] != b"\x55\xaa":
        return False
    old = int.from_bytes(boot[0x1C:0x20], "little")
    if old == start_sector:
        return False
    boot[0x1C:0x20] = start_sector.to_bytes(4, "little")
    os.pwrite(fd, bytes(boot), base)
    if fstype == "ntfs":
        backup = base + int.from_bytes(boot[40:48], "little") * sector
        copy = bytearray(os.pread(fd, 512, backup))
        if copy[3:11] == b"NTFS    ":
            copy[0x1C:0x20] = start_sector.to_bytes(4, "little")
            os.pwrite(fd, bytes(copy), backup)
    elif fstype == "vfat" and int.from_bytes(boot[22:24], "little") == 0:  # FAT32
        backup_at = int.from_bytes(boot[50:52], "little")
        if 0 < backup_at < 32:
            copy = bytearray(os.pread(fd, 512, base + backup_at * sector))
            if copy[510:512] == b"\x55\xaa":
                copy[0x1C:0x20] = start_sector.to_bytes(4, "little")
                os.pwrite(fd, bytes(copy), base + backup_at * sector)
    return True
