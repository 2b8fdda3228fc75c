"""Source disks for the restore-onto-any-disk tests (issue 10): the layouts technicians meet,
built on attached loop devices with real mkfs and real files."""

from __future__ import annotations

import hashlib
import random
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bootmedia import lab
from bootmedia.blockdev import rescan

MiB = 1 << 20
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC = "EBD0A0A2-B9E5-4433-87C0-68B6B7C7EB99"
RECOVERY = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
LINUX = "0FC63DAF-8483-4772-8E79-3D69E4C7D8E4"


@dataclass(frozen=True)
class Part:
    number: int
    fstype: str  # vfat, ntfs, ext4, btrfs, xfs, swap, msr (nothing), "" for a container
    type: str
    size_mib: int  # 0 = the rest
    fill_mib: int = 0
    name: str = ""


def sh(*argv: str, input: bytes | None = None) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout.decode(errors="replace")


def sector_of(dev: str) -> int:
    return int(Path(f"/sys/class/block/{Path(dev).name}/queue/logical_block_size").read_text())


def fill_tree(root: Path, total: int, seed: int) -> None:
    """Files that compress like a real system (text, logs, random blobs), some hard-linked."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(800)
    ]
    written = i = 0
    while written < total:
        size = rng.randint(64 << 10, 4 * MiB)
        if i % 3 == 2:
            data = rng.randbytes(size)
        else:
            data = (" ".join(rng.choices(words, k=size // 5)) + "\n").encode()[:size]
        sub = root / f"dir{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:05d}.dat").write_bytes(data)
        written += len(data)
        i += 1


def build(dev: str, label: str, parts: tuple[Part, ...], seed: int = 7) -> None:
    """Partition dev as given (GPT starts 1 MiB-aligned) and make each filesystem with files."""
    lines = [f"label: {label}", ""]
    disk_mib = int(Path(f"/sys/class/block/{Path(dev).name}/size").read_text()) * 512 // MiB
    # The rest of the disk goes to the partition of size 0: on MBR that is the extended
    # container, and the logical partitions (5, 6, ...) go inside it.
    rest = disk_mib - 2 - sum(p.size_mib for p in parts if p.number <= 4)
    for p in parts:
        size = f"size={p.size_mib or rest}MiB, "
        name = f', name="{p.name}"' if p.name and label == "gpt" else ""
        lines.append(f"part{p.number} : {size}type={p.type}{name}")
    sh("sfdisk", "-q", "--wipe", "always", dev, input="\n".join(lines).encode())
    rescan(dev)
    ss = sector_of(dev)
    for p in parts:
        node = f"{dev}p{p.number}"
        if p.fstype in ("", "msr"):
            continue
        sh("wipefs", "-a", "-q", node)
        make_fs(node, p.fstype, ss, f"p{p.number}")
        if p.fill_mib:
            with tempfile.TemporaryDirectory(prefix="bootmedia-fill-") as tmp:
                src = Path(tmp) / "src"
                fill_tree(src, p.fill_mib * MiB, seed + p.number)
                put_files(node, p.fstype, src)


def make_fs(node: str, fstype: str, ss: int, label: str) -> None:
    if fstype == "vfat":
        size = int(Path(f"/sys/class/block/{Path(node).name}/size").read_text()) * 512
        with tempfile.TemporaryDirectory() as tmp:  # mtools wants a file on 4Kn disks
            img = lab.make_file(Path(tmp) / "fat.img", size)
            sh("mkfs.vfat", "-F", "32", "-S", str(ss), "-n", label.upper(), str(img))
            sh("dd", f"if={img}", f"of={node}", "bs=1M", "conv=fsync", "status=none")
    elif fstype == "ntfs":
        sh("mkntfs", "-Q", "-F", "-L", label, node)
    elif fstype == "ext4":
        sh("mkfs.ext4", "-q", "-F", "-L", label, node)
    elif fstype == "btrfs":
        sh("mkfs.btrfs", "-q", "-f", "-L", label, node)
    elif fstype == "xfs":
        sh("mkfs.xfs", "-q", "-f", "-L", label, node)
    elif fstype == "swap":
        sh("mkswap", "-L", label, node)
    else:
        raise ValueError(fstype)


def put_files(node: str, fstype: str, src: Path) -> None:
    if fstype == "vfat":
        with tempfile.TemporaryDirectory() as tmp:
            img = Path(tmp) / "fat.img"
            sh("dd", f"if={node}", f"of={img}", "bs=1M", "status=none")
            sh("mcopy", "-s", "-i", str(img), *(str(x) for x in src.iterdir()), "::/")
            sh("dd", f"if={img}", f"of={node}", "bs=1M", "conv=fsync,notrunc", "status=none")
        return
    with tempfile.TemporaryDirectory(prefix="bootmedia-mnt-") as mnt:
        sh("mount", *(["-t", "ntfs-3g"] if fstype == "ntfs" else []), node, mnt)
        try:
            root = Path(mnt)
            if fstype == "btrfs":  # Fedora's layout: subvolumes root and home
                sh("btrfs", "subvolume", "create", f"{mnt}/root")
                sh("btrfs", "subvolume", "create", f"{mnt}/home")
                root = Path(mnt) / "root"
            sh("cp", "-a", *(str(x) for x in src.iterdir()), str(root))
            first = next(root.rglob("*.dat"), None)
            link = first.parent / "hardlink.dat" if first else None
            if first and link and not link.exists():
                link.hardlink_to(first)
        finally:
            umount(mnt)


def umount(mnt: str) -> None:
    """umount, retried: right after writing through ntfs-3g (FUSE) the mount can be busy for
    a moment while the kernel still holds the last requests."""

    for _ in range(50):
        if subprocess.run(["umount", mnt], capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    sh("umount", mnt)


def sums(node: str, fstype: str) -> dict[str, str]:
    """sha256 of every file, read through the filesystem (mtools for FAT)."""
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bootmedia-sum-") as tmp:
        if fstype == "vfat":
            img = Path(tmp) / "fat.img"
            sh("dd", f"if={node}", f"of={img}", "bs=1M", "status=none")
            root = Path(tmp) / "out"
            root.mkdir()
            sh("mcopy", "-s", "-n", "-i", str(img), "::/*", str(root))
            _hash(root, out)
            return out
        opts = ["-t", "ntfs-3g", "-o", "ro"] if fstype == "ntfs" else ["-o", "ro"]
        sh("mount", *opts, node, tmp)
        try:
            _hash(Path(tmp), out)
        finally:
            umount(tmp)
    return out


def _hash(root: Path, out: dict[str, str]) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and "lost+found" not in path.parts:
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()


def check(node: str, fstype: str) -> str:
    """The filesystem's own checker, changing nothing; "" when clean, else its output."""
    argv = {
        "ext4": ["e2fsck", "-f", "-n", node],
        "ntfs": ["ntfsfix", "-n", node],
        "btrfs": ["btrfs", "check", "--readonly", node],
        "xfs": ["xfs_repair", "-n", node],
    }.get(fstype)
    if fstype == "vfat":
        with tempfile.TemporaryDirectory() as tmp:
            img = Path(tmp) / "fat.img"
            sh("dd", f"if={node}", f"of={img}", "bs=1M", "status=none")
            proc = subprocess.run(["fsck.vfat", "-n", str(img)], capture_output=True, text=True)
            return "" if proc.returncode == 0 else proc.stdout + proc.stderr
    if argv is None:
        return ""
    proc = subprocess.run(argv, capture_output=True, text=True)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def ids(dev: str) -> dict[str, str]:
    """Everything boot-relevant that must not change: disk id, partition uuids, fs uuids and
    the NTFS serial (blkid's UUID of an NTFS is its serial)."""
    out: dict[str, str] = {}
    for line in sh("sfdisk", "-d", dev).splitlines():
        if line.startswith("label-id:"):
            out["disk"] = line.split(":", 1)[1].strip()
        if "uuid=" in line:
            n = line.split(":")[0].strip().rsplit("p", 1)[-1]
            out[f"p{n}.partuuid"] = line.split("uuid=")[1].split(",")[0].strip()
    for node in sorted(Path("/dev").glob(Path(dev).name + "p*")):
        proc = subprocess.run(
            ["blkid", "-p", "-o", "export", str(node)], capture_output=True, text=True
        )
        for line in proc.stdout.splitlines():
            if line.startswith("UUID="):
                out[f"{node.name.rsplit('p', 1)[-1]}.uuid"] = line.split("=", 1)[1]
    return out


WINDOWS = (
    Part(1, "vfat", ESP, 100, 8, "EFI system partition"),
    Part(2, "msr", MSR, 16, 0, "Microsoft reserved partition"),
    Part(3, "ntfs", BASIC, 0, 1024, "Basic data partition"),
    Part(4, "ntfs", RECOVERY, 520, 40),
)
UBUNTU = (Part(1, "vfat", ESP, 64, 4), Part(2, "ext4", LINUX, 0, 300))
FEDORA = (
    Part(1, "vfat", ESP, 64, 4),
    Part(2, "ext4", LINUX, 300, 60),
    Part(3, "btrfs", LINUX, 0, 150),
)
MBR_LOGICAL = (
    Part(1, "ext4", "83", 200, 40),
    Part(2, "", "5", 0),
    Part(5, "ext4", "83", 600, 200),
    Part(6, "swap", "82", 64),
)
