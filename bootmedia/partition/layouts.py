"""Partition layouts: the built-in ones a technician picks by name, and TOML layout files."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia.errors import UsageError

MiB = 1 << 20

# Partition type aliases -> (GPT type GUID, MBR type byte).
TYPES: dict[str, tuple[str, str]] = {
    "esp": ("C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "ef"),
    "msr": ("E3C9E316-0B5C-4DB8-817D-F92DF00215AE", ""),
    "basic-data": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "7"),  # NTFS, exFAT, FAT for Windows
    "windows-recovery": ("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC", "27"),
    "linux": ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", "83"),
    "linux-root-x86-64": ("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", "83"),
    "swap": ("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", "82"),
    "bios-boot": ("21686148-6449-6E6F-744E-656564454649", ""),
    "fat32": ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "c"),
}
FILESYSTEMS = ("vfat", "ext4", "ntfs", "exfat", "xfs", "btrfs", "swap", "none")
# The type a partition gets from its filesystem when a layout file does not say.
FS_TYPE = {"vfat": "fat32", "ntfs": "basic-data", "exfat": "basic-data", "swap": "swap"}


@dataclass(frozen=True)
class PartSpec:
    size: int | None  # bytes; None = the rest of the disk (last partition only)
    type: str  # an alias from TYPES, a GPT GUID, or an MBR hex byte
    fs: str = "none"
    label: str = ""  # filesystem label
    name: str = ""  # GPT partition name
    bootable: bool = False  # MBR active flag (BIOS boot)


@dataclass(frozen=True)
class Layout:
    name: str
    table: str  # "gpt" or "dos"
    parts: tuple[PartSpec, ...]
    description: str = ""


def _uefi(fs: str) -> Layout:
    _choose(fs, ("ext4", "xfs", "btrfs"), "uefi")
    return Layout(
        "uefi",
        "gpt",
        (
            PartSpec(512 * MiB, "esp", "vfat", "ESP", "EFI system partition"),
            PartSpec(None, "linux", fs, "root", "root"),
        ),
        f"GPT: ESP 512 MiB FAT32, {fs} root on the rest",
    )


def _windows(fs: str) -> Layout:
    _choose(fs, ("ntfs",), "windows")
    # 260 MiB, not 100: FAT32 needs 65525 clusters, which on a 4Kn disk is about 256 MiB.
    return Layout(
        "windows",
        "gpt",
        (
            PartSpec(260 * MiB, "esp", "vfat", "SYSTEM", "EFI system partition"),
            PartSpec(16 * MiB, "msr", "none", "", "Microsoft reserved partition"),
            PartSpec(None, "basic-data", "ntfs", "Windows", "Basic data partition"),
        ),
        "GPT: ESP 260 MiB FAT32, MSR 16 MiB, NTFS on the rest",
    )


def _bios(fs: str) -> Layout:
    _choose(fs, ("ext4", "ntfs"), "bios")
    kind = "basic-data" if fs == "ntfs" else "linux"
    return Layout(
        "bios",
        "dos",
        (PartSpec(None, kind, fs, "system" if fs == "ext4" else "System", "", bootable=True),),
        f"MBR: one bootable {fs} partition",
    )


def _data(fs: str) -> Layout:
    _choose(fs, ("exfat", "ntfs", "ext4"), "data")
    kind = "linux" if fs == "ext4" else "basic-data"
    return Layout(
        "data", "gpt", (PartSpec(None, kind, fs, "data", "data"),), f"GPT: one {fs} partition"
    )


BUILTIN = {
    "uefi": (_uefi, "ext4"),
    "windows": (_windows, "ntfs"),
    "bios": (_bios, "ext4"),
    "data": (_data, "exfat"),
}


# name -> what it makes, for pickers (the TUI) and --help.
LAYOUTS = {
    "uefi": "GPT: ESP 512 MiB FAT32 + Linux root (ext4, xfs or btrfs) on the rest",
    "windows": "GPT: ESP 260 MiB FAT32, MSR 16 MiB, NTFS on the rest",
    "bios": "MBR: one bootable partition, ext4 or NTFS",
    "data": "GPT: one exFAT, NTFS or ext4 partition",
}


def _choose(fs: str, allowed: tuple[str, ...], layout: str) -> None:
    if fs not in allowed:
        raise UsageError(f"layout {layout!r} takes --fs {' or '.join(allowed)}, not {fs!r}")


def parse_size(value: Any, where: str) -> int | None:
    """512MiB, 1GiB, 2TB, 1048576 (bytes), or "rest"."""
    if isinstance(value, int) and value > 0:
        return value
    text = str(value).strip().replace(" ", "")
    if text.lower() == "rest":
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?B?)?", text, re.IGNORECASE)
    if not match:
        raise UsageError(f"{where}: size {value!r}: write it like 512MiB, 20GiB or rest")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper().rstrip("B")
    powers = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
    binary = {"KI": 1 << 10, "MI": 1 << 20, "GI": 1 << 30, "TI": 1 << 40}
    scale = binary[unit] if unit in binary else powers[unit]
    return int(number * scale)


_PART_KEYS = {"size", "type", "fs", "label", "name", "bootable"}


MAX_LAYOUT_FILE = 64 << 10  # a layout of 128 partitions is a few KiB


def _read_layout_file(path: Path) -> str:
    """A layout file's text: a regular file of bounded size (`--layout /dev/zero` is refused at
    once, not read forever; a FIFO does not block the open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such layout file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the layout file ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{path}: a layout must be a regular file (a .toml file)")
        data = f.read(MAX_LAYOUT_FILE + 1)
    if len(data) > MAX_LAYOUT_FILE:
        raise UsageError(f"{path}: too big for a layout file (at most {MAX_LAYOUT_FILE} bytes)")
    return data.decode("utf-8")


def load_layout_file(path: str | Path) -> Layout:
    """A TOML layout:

    table = "gpt"                 # or "dos"
    [[partition]]
    size = "512MiB"
    type = "esp"                  # alias, GPT GUID or MBR hex byte
    fs = "vfat"
    label = "ESP"
    [[partition]]
    size = "rest"
    fs = "ext4"
    """
    path = Path(path)
    try:
        data = tomllib.loads(_read_layout_file(path))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a valid TOML layout: {exc}") from None
    unknown = set(data) - {"table", "partition", "description"}
    if unknown:
        raise UsageError(
            f"{path}: unknown key {sorted(unknown)[0]!r} (table, partition, description)"
        )
    table = {"mbr": "dos", "msdos": "dos"}.get(
        str(data.get("table", "gpt")), str(data.get("table", "gpt"))
    )
    if table not in ("gpt", "dos"):
        raise UsageError(f"{path}: table must be gpt or dos, not {table!r}")
    raw = data.get("partition")
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"{path}: no [[partition]] entries")
    parts = []
    for i, entry in enumerate(raw, 1):
        where = f"{path}: partition {i}"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: not a table")
        bad = set(entry) - _PART_KEYS
        if bad:
            raise UsageError(
                f"{where}: unknown key {sorted(bad)[0]!r} ({', '.join(sorted(_PART_KEYS))})"
            )
        fs = str(entry.get("fs", "none"))
        if fs not in FILESYSTEMS:
            raise UsageError(f"{where}: fs {fs!r} is not one of {', '.join(FILESYSTEMS)}")
        kind = str(entry.get("type", FS_TYPE.get(fs, "linux")))
        parts.append(
            PartSpec(
                size=parse_size(entry.get("size", "rest"), where),
                type=kind,
                fs=fs,
                label=str(entry.get("label", "")),
                name=str(entry.get("name", "")),
                bootable=bool(entry.get("bootable", False)),
            )
        )
    return Layout(
        path.stem, table, tuple(parts), str(data.get("description", f"layout file {path}"))
    )


def get_layout(name: str, fs: str | None = None) -> Layout:
    """A built-in layout by name, or a .toml layout file by path."""
    if name in BUILTIN:
        build, default = BUILTIN[name]
        return build(fs or default)
    if name.endswith(".toml") or "/" in name:
        if fs:
            raise UsageError(
                "--fs applies to built-in layouts; a layout file names its filesystems"
            )
        return load_layout_file(name)
    raise UsageError(f"unknown layout {name!r}: choose {', '.join(BUILTIN)} or a .toml layout file")
