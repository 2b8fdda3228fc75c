"""A FAT filesystem rebuilt for another sector size (a 512-byte-sector ESP onto a 4Kn disk), or
smaller (a FAT restored onto a smaller partition: FAT has no shrinker we trust).

A FAT's logical sector size is fixed when it is made and must be at least the disk's, so an
ESP from a 512-byte-sector disk cannot be copied to a 4Kn disk block for block. It is made
anew (`mkfs.vfat -S 4096`, the same volume id and label) and its files are copied with mtools,
which read and write FAT images as files (this kernel has no vfat module, and none is needed).
The new FAT's files are then read back with mtools and compared with the image's, name by name
and byte by byte, before anything is written to the target.
"""

from __future__ import annotations

import os
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.run import require_tools, run

TOOLS = ("mkfs.vfat", "mcopy", "mdir")


def volume_id(boot: bytes) -> str:
    """The FAT volume serial, as mkfs.vfat -i takes it (8 hex digits)."""
    fat32 = int.from_bytes(boot[22:24], "little") == 0
    at = 67 if fat32 else 39
    return boot[at : at + 4][::-1].hex().upper()


def rebuild_fat(source: str | Path, size: int, sector: int, label: str, work: Path) -> Path:
    """A new FAT image file of `size` bytes with `sector`-byte sectors holding source's files,
    volume id and label."""
    require_tools(*TOOLS)
    with open(source, "rb") as f:
        boot = f.read(512)
    if boot[510:512] != b"\x55\xaa":
        raise BootmediaError(f"{source}: no FAT boot sector to rebuild from")
    files = work / "fat-files"
    files.mkdir(parents=True, exist_ok=True)
    names = [
        n for n in run(["mdir", "-b", "-i", str(source), "::/"]).stdout.decode().splitlines() if n
    ]
    if names:
        # -s recursive, -p keep attributes where mtools can, -m keep modification times
        run(["mcopy", "-s", "-p", "-m", "-n", "-i", str(source), "::/*", str(files)])
    out = work / "fat-rebuilt.img"
    with open(out, "wb") as f:
        f.truncate(size)
    fat32 = (
        ["-F", "32"]
        if int.from_bytes(boot[22:24], "little") == 0 and _fits_fat32(size, sector)
        else []
    )
    argv = ["mkfs.vfat", *fat32, "-S", str(sector), "-i", volume_id(boot)]
    if label:
        argv += ["-n", label[:11]]
    run([*argv, str(out)])
    entries = sorted(os.listdir(files))
    if entries:
        run(["mcopy", "-s", "-p", "-m", "-i", str(out), *(str(files / e) for e in entries), "::/"])
    check = work / "fat-check"
    check.mkdir(exist_ok=True)
    if entries:
        run(["mcopy", "-s", "-p", "-m", "-n", "-i", str(out), "::/*", str(check)])
    diff = compare_trees(files, check)
    if diff:
        raise BootmediaError(f"the rebuilt FAT does not hold the image's files: {diff}")
    return out


def compare_trees(a: Path, b: Path) -> str:
    """The first difference between two file trees (names, kinds, contents), or ""."""

    def walk(root: Path) -> dict[str, Path]:
        return {str(p.relative_to(root)): p for p in root.rglob("*")}

    left, right = walk(a), walk(b)
    for name in sorted(left.keys() ^ right.keys()):
        return f"{name} is {'missing' if name in left else 'new'}"
    for name in sorted(left):
        x, y = left[name], right[name]
        if x.is_dir() != y.is_dir():
            return f"{name} is a directory on one side only"
        if x.is_file():
            if x.stat().st_size != y.stat().st_size:
                return f"{name} has {y.stat().st_size} bytes, not {x.stat().st_size}"
            if not _same_bytes(x, y):
                return f"{name} differs"
    return ""


def _same_bytes(x: Path, y: Path) -> bool:
    with open(x, "rb") as f, open(y, "rb") as g:
        while True:
            a, b = f.read(1 << 20), g.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True


def _fits_fat32(size: int, sector: int) -> bool:
    """FAT32 needs at least 65525 clusters; at one sector per cluster, that many sectors."""
    return size // sector > 65525 + 1024
