"""Turn udev-style property dumps into Disk objects, and find the disks of this machine.

There is ONE pure function from properties to the model, build_disks(). Its input is a mapping
from device node to udev properties plus sysfs attributes under "attrs", in the format probert
records (size in bytes, every other attribute as sysfs prints it). Two sources produce that
format (sources.py): pyudev where udev keeps a database, sysfs plus `blkid -p` where it does not
(this build machine, chroots, containers). Recorded dumps of real machines are the same format,
so tests run the exact code the live system runs.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from bootmedia.disks.model import INCOMPLETE_MARKER, Disk, Partition
from bootmedia.errors import UsageError

Record = Mapping[str, Any]  # udev properties + {"attrs": {...}}

# Block devices that are never a target: optical and floppy drives, RAM disks, and the virtual
# devices (dm, md) that are holders of real disks rather than disks themselves.
_NOT_DISKS = re.compile(
    r"^(sr|fd|ram|zram|dm-|md|nbd|drbd|rbd|mtdblock|bcache|mmcblk\d+(boot|rpmb))"
)
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
# by-id names that carry model+serial read better than the bare WWN or EUI ones.
_TECHNICAL_BY_ID = ("wwn-", "nvme-eui.", "nvme-nvme.", "scsi-", "dm-", "lvm-", "md-uuid-")


def _decode(value: str) -> str:
    """udev's *_ENC values escape unsafe bytes as \\xNN; decode and trim the padding."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), value).strip()


def _prop(props: Record, *keys: str) -> str:
    for key in keys:
        value = props.get(key)
        if value:
            return _decode(str(value)) if key.endswith("_ENC") else str(value).strip()
    return ""


def _attr(props: Record, key: str, default: str = "") -> str:
    value = (props.get("attrs") or {}).get(key)
    return default if value is None else str(value).strip()


def _int_attr(props: Record, key: str, default: int = 0) -> int:
    try:
        return int(_attr(props, key, str(default)))
    except ValueError:
        return default


def kernel_name(node: str, props: Record) -> str:
    return Path(str(props.get("DEVNAME") or node)).name


def _transport(name: str, props: Record) -> str:
    bus = _prop(props, "ID_BUS")
    devpath = str(props.get("DEVPATH", ""))
    if name.startswith("loop"):
        return "loop"
    if name.startswith("nvme") or "/nvme/" in devpath:
        return "nvme"
    if name.startswith("mmcblk") or "/mmc_host/" in devpath:
        return "mmc"
    if bus == "usb" or "/usb" in devpath:
        return "usb"
    if name.startswith("vd") or "/virtio" in devpath:
        return "virtio"
    if name.startswith("xvd"):
        return "xen"
    if bus == "ata" or "/ata" in devpath:
        return "sata"
    return bus or ("scsi" if name.startswith("sd") else "")


def _by_id(props: Record) -> tuple[str, ...]:
    links = str(props.get("DEVLINKS", "")).split()
    names = [link for link in links if link.startswith("/dev/disk/by-id/")]
    return tuple(sorted(names, key=lambda n: (Path(n).name.startswith(_TECHNICAL_BY_ID), n)))


def _by_path(props: Record) -> str:
    links = str(props.get("DEVLINKS", "")).split()
    return next((link for link in links if link.startswith("/dev/disk/by-path/")), "")


def _serial(props: Record) -> str:
    serial = _prop(props, "ID_SERIAL_SHORT") or _attr(props, "serial")
    return serial.strip() or lab_serial(_attr(props, "loop/backing_file"))


# The demo lab (bootmedia/demo.py) gives its virtual disks serials, the way real disks have
# them, in LAB_SERIALS beside its disks/ folder. A loop device backed by one of those files
# carries that serial here, so the CLI and the TUI confirm a lab disk the same way, by its
# serial, and never by a loop number that changes between runs.
LAB_SERIALS = "serials.json"


def lab_serial(backing_file: str) -> str:
    """The lab's serial for a loop device's backing file, or "" for any other file."""
    path = Path(backing_file.removesuffix(" (deleted)"))
    if not backing_file or path.parent.name != "disks":
        return ""
    try:
        known = json.loads((path.parent.parent / LAB_SERIALS).read_text())
    except (OSError, ValueError):
        return ""
    serial = known.get(path.name) if isinstance(known, dict) else None
    return serial.strip() if isinstance(serial, str) and serial.isalnum() else ""


def _wwn(props: Record) -> str:
    return _prop(props, "ID_WWN_WITH_EXTENSION", "ID_WWN") or _attr(props, "wwid")


def _vendor(props: Record) -> str:
    vendor = _prop(props, "ID_VENDOR_ENC", "ID_VENDOR")
    # SATA disks behind libata all report the vendor "ATA", which tells a technician nothing.
    return "" if vendor.upper() == "ATA" else vendor


def _partition(node: str, props: Record, state: SystemFacts) -> Partition:
    name = kernel_name(node, props)
    number = _prop(props, "PARTN", "ID_PART_ENTRY_NUMBER") or _attr(props, "partition", "0")
    return Partition(
        name=name,
        path=f"/dev/{name}",
        number=int(number) if number.isdigit() else 0,
        size=_int_attr(props, "size"),
        start=_int_attr(props, "start") * 512,  # sysfs counts 512-byte units, whatever the disk
        fstype=_prop(props, "ID_FS_TYPE"),
        label=_prop(props, "ID_FS_LABEL_ENC", "ID_FS_LABEL"),
        uuid=_prop(props, "ID_FS_UUID"),
        part_type=_prop(props, "ID_PART_ENTRY_TYPE"),
        part_uuid=_prop(props, "ID_PART_ENTRY_UUID"),
        part_name=_prop(props, "ID_PART_ENTRY_NAME"),
        used=state.used.get(name),
        mountpoints=tuple(state.mounts.get(name, ())),
        holders=tuple(state.holders.get(name, ())),
        swap=name in state.swaps,
    )


class SystemFacts:
    """What the running system does with each device, keyed by kernel name. Empty for fixtures."""

    def __init__(
        self,
        mounts: Mapping[str, Collection[str]] | None = None,
        holders: Mapping[str, Collection[str]] | None = None,
        swaps: Collection[str] = (),
        used: Mapping[str, int] | None = None,
        sector0: Mapping[str, bytes] | None = None,
    ) -> None:
        self.mounts = mounts or {}
        self.holders = holders or {}
        self.swaps = set(swaps)
        self.used = used or {}
        self.sector0 = sector0 or {}


def is_candidate(name: str, props: Record, include_loop: bool = False) -> bool:
    """Whether a whole-disk device is a disk a technician could image, wipe or partition."""
    if props.get("DEVTYPE", "disk") != "disk" or _NOT_DISKS.match(name):
        return False
    if props.get("ID_CDROM") == "1" or props.get("ID_TYPE") == "cd":
        return False
    if name.startswith("loop") and not include_loop:
        return False
    # A card reader with no card, or a loop device with nothing attached.
    return _int_attr(props, "size") > 0


def build_disk(
    node: str, props: Record, parts: Collection[tuple[str, Record]], state: SystemFacts
) -> Disk:
    name = kernel_name(node, props)
    partitions = sorted(
        (_partition(pnode, pprops, state) for pnode, pprops in parts), key=lambda p: p.number
    )
    logical = _int_attr(props, "queue/logical_block_size", 512)
    extra = {k: str(v) for k, v in props.items() if k in ("ID_PATH", "ID_REVISION", "ID_MODEL_ID")}
    return Disk(
        name=name,
        path=f"/dev/{name}",
        size=_int_attr(props, "size"),
        model=_prop(props, "ID_MODEL_ENC", "ID_MODEL") or _attr(props, "device/model"),
        vendor=_vendor(props),
        serial=_serial(props),
        wwn=_wwn(props),
        by_id=_by_id(props),
        by_path=_by_path(props),
        transport=_transport(name, props),
        logical_sector_size=logical,
        physical_sector_size=_int_attr(props, "queue/physical_block_size", logical),
        rotational=_attr(props, "queue/rotational") == "1",
        removable=_attr(props, "removable") == "1",
        read_only=_attr(props, "ro") == "1",
        devnum=_prop(props, "MAJOR") + ":" + _prop(props, "MINOR") if props.get("MAJOR") else "",
        partition_table=_prop(props, "ID_PART_TABLE_TYPE"),
        fstype=_prop(props, "ID_FS_TYPE"),
        partitions=tuple(partitions),
        mountpoints=tuple(state.mounts.get(name, ())),
        holders=tuple(state.holders.get(name, ())),
        swap=name in state.swaps,
        backing_file=_attr(props, "loop/backing_file"),
        incomplete_restore=INCOMPLETE_MARKER in state.sector0.get(name, b""),
        extra=extra,
    )


def _parent_name(props: Record) -> str:
    # DEVPATH is .../block/sda/sda1 (or .../nvme0n1/nvme0n1p1): the parent is the directory above.
    parts = str(props.get("DEVPATH", "")).rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def build_disks(
    blockdev: Mapping[str, Record],
    state: SystemFacts | None = None,
    *,
    include_loop: bool = False,
) -> list[Disk]:
    """The pure function: every candidate disk in a property dump, sorted by kernel name."""
    state = state or SystemFacts()
    children: dict[str, list[tuple[str, Record]]] = {}
    for node, props in blockdev.items():
        if props.get("DEVTYPE") == "partition":
            children.setdefault(_parent_name(props), []).append((node, props))
    disks = [
        build_disk(node, props, children.get(kernel_name(node, props), []), state)
        for node, props in blockdev.items()
        if is_candidate(kernel_name(node, props), props, include_loop)
    ]
    return sorted(disks, key=lambda d: _natural_key(d.name))


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def load_machine(path: str | Path, *, include_loop: bool = False) -> list[Disk]:
    """The disks of a recorded machine (probert's JSON, e.g. tests/fixtures/machines/*.json):
    `bootmedia disks --machine FILE` and the UI's dry runs show a machine without touching it."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such machine file") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not a recorded machine: {exc}") from None
    blockdev = data.get("blockdev") if isinstance(data, dict) else None
    if not isinstance(blockdev, dict):
        raise UsageError(f'{path}: not a recorded machine (no "blockdev" section)')
    return build_disks(blockdev, include_loop=include_loop)


# --- this machine -----------------------------------------------------------------------------


def find_disks(include_loop: bool = False, *, mountinfo: str | Path | None = None) -> list[Disk]:
    """The disks of this machine, from udev's database where there is one, else sysfs + blkid."""
    from bootmedia.disks import sources

    blockdev = sources.read_blockdev(lambda name: _wanted(name, include_loop))
    return build_disks(
        blockdev, sources.system_facts(blockdev, mountinfo), include_loop=include_loop
    )


def _wanted(name: str, include_loop: bool) -> bool:
    return not _NOT_DISKS.match(name) and (include_loop or not name.startswith("loop"))


def find_disk(path: str | Path, *, mountinfo: str | Path | None = None) -> Disk:
    """The disk at /dev/sdX, /dev/disk/by-id/..., /dev/loopN or a bare kernel name."""
    from bootmedia.disks import sources, system

    text = str(path)
    node = text if "/" in text else f"/dev/{text}"
    name = system.name_of_path(node)
    if name is None:
        if os.path.exists(node):
            raise UsageError(f"{text}: not a disk (not a block device)")
        raise UsageError(f"{text}: no such disk")
    if (system.SYS_BLOCK / name / "partition").exists():
        parent = (system.SYS_BLOCK / name).resolve().parent.name
        raise UsageError(f"{text} is a partition: give the whole disk, /dev/{parent}")
    if _NOT_DISKS.match(name):
        raise UsageError(f"{text} ({name}) is not a disk bootmedia can write to")
    blockdev = sources.read_blockdev(lambda n: n == name)
    facts = sources.system_facts(blockdev, mountinfo)
    disks = build_disks(blockdev, facts, include_loop=True)
    if not disks:
        raise UsageError(f"{text}: no such disk (no medium, or size 0)")
    return disks[0]
