"""Plain image files standing in for disks: the demo lab without root, and `capture FILE`.

A regular file has no partition nodes and no kernel behind it, so everything that would read
or write a partition node works on byte ranges of the file instead: blkid probes at an offset,
and tools that insist on a path of their own (partclone, ntfscat, mkfs) get a sparse scratch
copy of the partition, which is copied back into the file where it was written.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from bootmedia.disks.model import INCOMPLETE_MARKER, Disk, Partition
from bootmedia.errors import BootmediaError
from bootmedia.run import run
from bootmedia.tools import blkid

TRANSPORT = "file"  # Disk.transport of an image file; the UI shows it as "image file"
COPY_CHUNK = 1 << 20


def is_image_file(path: str | Path) -> bool:
    return os.path.isfile(path)


def probe_at(path: str | Path, offset: int, size: int) -> dict[str, str]:
    """blkid's low-level probe of the byte range [offset, offset+size) of a file."""
    return blkid.content(blkid.probe(path, offset, size))


def file_disk(path: str | Path) -> Disk:
    """The Disk for an image file: named by its file name (what the technician types to
    confirm a write), no serial, transport "file", partitions from `sfdisk -J` on the file."""
    from bootmedia.table import read_table  # table imports blockdev; keep this module light

    path = Path(path).absolute()
    if not path.is_file():
        raise BootmediaError(f"{path}: no such image file")
    size = path.stat().st_size
    table = read_table(str(path)) if size else None
    parts = []
    for p in table.partitions if table else ():
        start, length = p.start * table.sector_size, p.size * table.sector_size  # type: ignore[union-attr]
        found = probe_at(path, start, length)
        node = f"{path}{p.number}"  # as sfdisk names them
        parts.append(
            Partition(
                name=Path(node).name,
                path=node,
                number=p.number,
                size=length,
                start=start,
                fstype=found.get("TYPE", ""),
                label=found.get("LABEL", ""),
                uuid=found.get("UUID", ""),
                part_type=p.type,
                part_uuid=p.uuid,
                part_name=p.name,
            )
        )
    whole = probe_at(path, 0, size) if size and table is None else {}
    with open(path, "rb") as f:
        head = f.read(len(INCOMPLETE_MARKER))
    return Disk(
        name=path.name,
        path=str(path),
        size=size,
        model="image file",
        transport=TRANSPORT,
        partition_table=table.label if table else "",
        fstype=whole.get("TYPE", ""),
        partitions=tuple(parts),
        backing_file=str(path),
        incomplete_restore=head == INCOMPLETE_MARKER,
    )


def _data_segments(fd: int, offset: int, length: int) -> list[tuple[int, int]]:
    """The allocated (data) ranges of [offset, offset+length) of a sparse file, so holes are
    neither read nor written; the whole range where SEEK_DATA is not supported."""
    end, pos, found = offset + length, offset, []
    try:
        while pos < end:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here on
                    break
                raise
            if start >= end:
                break
            stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
            found.append((start, stop - start))
            pos = stop
    except OSError:
        return [(offset, length)]
    return found


def extract(path: str | Path, offset: int, length: int, dest: str | Path) -> Path:
    """Copy a partition's bytes out of an image file into a sparse file of its own. Holes of
    the image stay holes, and runs of zeros are not written, so the copy costs what is stored."""
    dest = Path(dest)
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with open(dest, "wb") as out:
            out.truncate(length)
            for start, n in _data_segments(src, offset, length):
                for pos in range(start, start + n, COPY_CHUNK):
                    data = os.pread(src, min(COPY_CHUNK, start + n - pos), pos)
                    if data.count(0) != len(data):
                        out.seek(pos - offset)
                        out.write(data)
    finally:
        os.close(src)
    return dest


def write_at(src: str | Path, path: str | Path, offset: int, length: int) -> None:
    """Put a partition made in a scratch file into an image file at offset: the whole range
    is cleared first (a hole where the filesystem allows, else zeros), then the scratch file's
    data is written. Like `dd conv=notrunc seek=...`, but holes stay holes."""
    from bootmedia.blockdev import zero_range

    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        punched = run(
            ["fallocate", "--punch-hole", "-o", str(offset), "-l", str(length), str(path)],
            check=False,
        )
        if punched.returncode != 0:
            zero_range(fd, offset, length)
        s = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for start, n in _data_segments(s, 0, min(length, os.fstat(s).st_size)):
                for pos in range(start, start + n, COPY_CHUNK):
                    data = os.pread(s, min(COPY_CHUNK, start + n - pos), pos)
                    if data.count(0) != len(data):
                        os.pwrite(fd, data, offset + pos)
        finally:
            os.close(s)
        os.fsync(fd)
    finally:
        os.close(fd)


def find_disk_or_file(path: str | Path) -> Disk:
    """The disk at a node or by-id name, or the image file standing in for one (the commands
    the TUI shows for a demo lab without root name the lab's files)."""
    if is_image_file(path):
        return file_disk(path)
    from bootmedia.disks.discover import find_disk

    return find_disk(path)


def attached_loops(path: str | Path) -> list[str]:
    """The loop devices backed by this file (read from sysfs, so any user can ask). Writing the
    file under an attached loop device would change a disk the kernel may have mounted."""
    real = os.path.realpath(path)
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        try:
            name = backing.read_text().strip()
        except OSError:
            continue
        if name == real:
            found.append(f"/dev/{backing.parent.parent.name}")
    return found


def file_refusal(path: str | Path) -> str | None:
    """Why an image file must not be written or captured as a disk right now, or None."""
    loops = attached_loops(path)
    if loops:
        return (
            f"{Path(path).name}: is attached as {loops[0]}; use {loops[0]} instead, "
            "or detach it (losetup -d) first"
        )
    return None
