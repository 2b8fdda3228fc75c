"""File-backed virtual disks: the demo lab, the test suite and the benchmark all build on these."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import string
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bootmedia.blockdev import rescan
from bootmedia.run import run, run_cleanup, run_text

__all__ = ["attach", "detach", "loop_disk", "make_file", "rescan", "run"]


def can_use_loop() -> tuple[bool, str]:
    """Whether loop devices can be attached here, and why not."""
    if os.geteuid() != 0:
        return False, "needs root to attach loop devices"
    if not Path("/dev/loop-control").exists():
        return False, "no /dev/loop-control"
    return True, ""


def attach(image: str | Path, sector_size: int = 512, read_only: bool = False) -> str:
    """losetup a file as a disk with partitions scanned; returns /dev/loopN."""
    argv = ["losetup", "--find", "--show", "--partscan", "--sector-size", str(sector_size)]
    if read_only:
        argv.append("--read-only")
    dev = run_text([*argv, str(image)]).strip()
    rescan(dev)
    return dev


def detach(dev: str) -> None:
    run_cleanup(["losetup", "--detach", dev])


@contextlib.contextmanager
def loop_disk(image: str | Path, sector_size: int = 512, read_only: bool = False) -> Iterator[str]:
    dev = attach(image, sector_size, read_only)
    try:
        yield dev
    finally:
        detach(dev)


def make_file(path: str | Path, size: int) -> Path:
    path = Path(path)
    with open(path, "wb") as f:
        f.truncate(size)
    return path


# ---- sample disks -----------------------------------------------------------------------------

MiB = 1 << 20


@dataclass(frozen=True)
class SamplePart:
    number: int
    fstype: str  # "vfat", "ext4", "ntfs", "swap", "raw"
    size_mib: int  # 0 = the rest of the disk


DEFAULT_LAYOUT = (
    SamplePart(1, "vfat", 40),
    SamplePart(2, "ext4", 0),
    SamplePart(3, "ntfs", 48),
    SamplePart(4, "swap", 16),
    SamplePart(5, "raw", 8),
)

_TYPES = {
    "gpt": {
        "vfat": "U",
        "ext4": "L",
        "ntfs": "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
        "swap": "S",
        "raw": "L",
    },
    "dos": {"vfat": "ef", "ext4": "83", "ntfs": "7", "swap": "82", "raw": "da"},
}


def _sample_files(root: Path, rng: random.Random, total: int, prefix: str) -> None:
    """A mix that compresses like a real system: text, repetitive logs and random blobs."""
    words = [
        ("".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 9))))
        for _ in range(2000)
    ]
    written, i = 0, 0
    while written < total:
        kind = i % 4
        size = rng.randint(4 << 10, 1 << 20)
        if kind == 3:
            data = rng.randbytes(size)
        else:
            data = (" ".join(rng.choices(words, k=size // 5)) + "\n").encode()[:size]
        sub = root / f"{prefix}{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"file{i:04d}.{'bin' if kind == 3 else 'txt'}").write_bytes(data)
        written += len(data)
        i += 1


def populate_sample_disk(
    dev: str,
    label: str = "gpt",
    layout: tuple[SamplePart, ...] = DEFAULT_LAYOUT,
    seed: int = 1,
    fill: float = 0.5,
    stale: bool = False,
) -> None:
    """Partition an attached loop disk and fill each partition with real filesystems and files.

    fill is the fraction of each filesystem to fill; stale=True first writes random data over the
    whole disk, so free space holds old junk the way a used disk does (the benchmark wants it).
    """
    rng = random.Random(seed)
    if stale:
        with open(dev, "r+b") as f:
            size = f.seek(0, 2)
            f.seek(0)
            for _ in range(0, size, 4 * MiB):
                f.write(rng.randbytes(4 * MiB))
    disk_mib = int(Path(f"/sys/class/block/{Path(dev).name}/size").read_text()) * 512 // MiB
    rest = disk_mib - 2 - sum(p.size_mib for p in layout)  # 1 MiB head, GPT backup
    lines = [f"label: {label}", ""]
    for p in layout:
        lines.append(f"size={p.size_mib or rest}MiB, type={_TYPES[label][p.fstype]}")
    run(["sfdisk", "-q", "--wipe", "always", dev], input="\n".join(lines).encode())
    rescan(dev)
    for p in layout:
        node = f"{dev}p{p.number}"
        run(["wipefs", "-a", "-q", node])
        size = int(Path(f"/sys/class/block/{Path(node).name}/size").read_text()) * 512
        budget = int(size * fill)
        with tempfile.TemporaryDirectory(prefix="bootmedia-lab-") as tmp:
            src = Path(tmp) / "src"
            if p.fstype in ("ext4", "vfat", "ntfs"):
                _sample_files(src, rng, budget, f"{p.fstype}-dir")
            if p.fstype == "ext4":
                run(
                    [
                        "mkfs.ext4",
                        "-q",
                        "-F",
                        "-b",
                        "4096",
                        "-L",
                        "sample-root",
                        "-d",
                        str(src),
                        node,
                    ]
                )
            elif p.fstype == "vfat":
                # mtools asks a block device for its geometry and fails on 4Kn loop devices,
                # so the filesystem is built in a file and copied onto the partition.
                ss = int(
                    Path(f"/sys/class/block/{Path(dev).name}/queue/logical_block_size").read_text()
                )
                img = make_file(Path(tmp) / "fat.img", size)
                fat32 = ["-F", "32"] if ss == 512 else []
                run(["mkfs.vfat", *fat32, "-S", str(ss), "-n", "SAMPLE-ESP", str(img)])
                run(["mcopy", "-s", "-i", str(img), *(str(x) for x in src.iterdir()), "::/"])
                run(["dd", f"if={img}", f"of={node}", "bs=1M", "conv=fsync", "status=none"])
            elif p.fstype == "ntfs":
                run(["mkntfs", "-Q", "-F", "-L", "sample-data", node])
                mnt = Path(tmp) / "mnt"
                mnt.mkdir()
                run(["mount", "-t", "ntfs-3g", node, str(mnt)])
                try:
                    for x in src.iterdir():
                        shutil.copytree(x, mnt / x.name)
                finally:
                    run(["umount", str(mnt)])
            elif p.fstype == "swap":
                run(["mkswap", "-L", "sample-swap", node])
            elif p.fstype == "raw":
                with open(node, "r+b") as f:
                    f.write(rng.randbytes(size // 2))


def populate_sample_file(
    image: str | Path,
    label: str = "gpt",
    layout: tuple[SamplePart, ...] = DEFAULT_LAYOUT,
    seed: int = 1,
    fill: float = 0.5,
) -> None:
    """populate_sample_disk for a plain image file, without root: nothing is attached or
    mounted. Each filesystem is made in a scratch file (mkfs -d, mcopy, ntfscp) and copied into
    the image at its partition's offset. NTFS gets its files in its root (ntfscp makes no
    directories)."""
    from bootmedia.disks.files import write_at
    from bootmedia.table import read_table

    rng = random.Random(seed)
    image = str(image)
    disk_mib = Path(image).stat().st_size // MiB
    rest = disk_mib - 2 - sum(p.size_mib for p in layout)  # 1 MiB head, GPT backup
    lines = [f"label: {label}", ""]
    for p in layout:
        lines.append(f"size={p.size_mib or rest}MiB, type={_TYPES[label][p.fstype]}")
    run(["sfdisk", "-q", "--wipe", "always", image], input="\n".join(lines).encode())
    table = read_table(image)
    assert table is not None
    ss = table.sector_size
    starts = {p.number: (p.start * ss, p.size * ss) for p in table.partitions}
    for p in layout:
        offset, size = starts[p.number]
        budget = int(size * fill)
        with tempfile.TemporaryDirectory(prefix="bootmedia-lab-") as tmp:
            src, img = Path(tmp) / "src", make_file(Path(tmp) / "part.img", size)
            if p.fstype in ("ext4", "vfat", "ntfs"):
                _sample_files(src, rng, budget, f"{p.fstype}-dir")
            if p.fstype == "ext4":
                mkfs = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "sample-root"]
                run([*mkfs, "-d", str(src), str(img)])
            elif p.fstype == "vfat":
                run(["mkfs.vfat", "-F", "32", "-S", str(ss), "-n", "SAMPLE-ESP", str(img)])
                run(["mcopy", "-s", "-i", str(img), *(str(x) for x in src.iterdir()), "::/"])
            elif p.fstype == "ntfs":
                geometry = ["-s", str(ss), "-p", str(offset // ss), "-H", "255", "-S", "63"]
                run(["mkntfs", "-Q", "-F", "-q", "-L", "sample-data", *geometry, str(img)])
                for f in sorted(src.rglob("*")):
                    if f.is_file():
                        run(["ntfscp", "-q", str(img), str(f), f"{f.parent.name}-{f.name}"])
            elif p.fstype == "swap":
                run(["mkswap", "-L", "sample-swap", str(img)])
            elif p.fstype == "raw":
                with open(img, "r+b") as raw:
                    raw.write(rng.randbytes(size // 2))
            write_at(img, image, offset, size)


def file_checksums_at(image: str | Path, offset: int, size: int, fstype: str) -> dict[str, str]:
    """file_checksums for a partition inside an image file, read without mounting anything:
    mtools for FAT, debugfs rdump for ext2/3/4, ntfsls + ntfscat for NTFS."""
    from bootmedia.disks.files import extract

    sums: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bootmedia-sum-") as tmp:
        part = str(extract(image, offset, size, Path(tmp) / "part.img"))
        out = Path(tmp) / "out"
        out.mkdir()
        if fstype == "vfat":
            run(["mcopy", "-s", "-n", "-i", part, "::/*", str(out)])
        elif fstype in ("ext2", "ext3", "ext4"):
            run(["debugfs", "-R", f"rdump / {out}", part])
        elif fstype == "ntfs":
            names = run_text(["ntfsls", "-f", part]).splitlines()
            for name in names:
                if name and not name.startswith("$") and name not in (".", ".."):
                    (out / name).write_bytes(run(["ntfscat", "-f", part, name]).stdout)
        else:
            raise ValueError(f"no file checksums for {fstype}")
        _hash_tree(out, sums)
    return sums


def file_checksums(node: str, fstype: str) -> dict[str, str]:
    """sha256 of every file on a filesystem, read through the filesystem itself."""
    sums: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bootmedia-sum-") as tmp:
        if fstype == "vfat":
            out = Path(tmp) / "out"
            out.mkdir()
            img = Path(tmp) / "fat.img"  # see populate_sample_disk: mtools wants a file
            run(["dd", f"if={node}", f"of={img}", "bs=1M", "status=none"])
            run(["mcopy", "-s", "-n", "-i", str(img), "::/*", str(out)])
            root = out
            _hash_tree(root, sums)
            return sums
        mnt = Path(tmp)
        argv = ["mount", "-o", "ro"] + (["-t", "ntfs-3g"] if fstype == "ntfs" else []) + [node, tmp]
        run(argv)
        try:
            _hash_tree(mnt, sums)
        finally:
            run(["umount", tmp])
    return sums


def _hash_tree(root: Path, sums: dict[str, str]) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and "lost+found" not in path.parts:
            sums[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
