"""Read this machine's block devices into probert-style records for discover.build_disks().

Two sources, one format. Where udev keeps a database (/run/udev/data: the live system, any
normal install) pyudev gives the same properties udev rules computed: by-id links, serials
through USB bridges, filesystem labels. Where it does not (chroots, containers, this build
machine) the same fields come from sysfs and `blkid -p`, which reads the signatures itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bootmedia.disks import system
from bootmedia.disks.discover import SystemFacts
from bootmedia.run import which
from bootmedia.tools import blkid

log = logging.getLogger("bootmedia.disks")

UDEV_DB = Path("/run/udev/data")
BY_ID = Path("/dev/disk/by-id")

# Sysfs attributes worth recording, relative to /sys/class/block/NAME.
_ATTRS = (
    "ro",
    "removable",
    "start",
    "partition",
    "queue/logical_block_size",
    "queue/physical_block_size",
    "queue/rotational",
    "queue/discard_max_bytes",
    "queue/discard_granularity",
    "loop/backing_file",
    "wwid",
    "serial",  # virtio-blk
    "device/wwid",
    "device/serial",  # nvme, mmc
    "device/model",
    "device/vendor",
    "device/name",  # mmc
)

# blkid -p's keys, renamed to the properties udev's blkid builtin gives them.
_BLKID_KEYS = {
    "TYPE": "ID_FS_TYPE",
    "LABEL": "ID_FS_LABEL",
    "UUID": "ID_FS_UUID",
    "VERSION": "ID_FS_VERSION",
    "USAGE": "ID_FS_USAGE",
    "PTTYPE": "ID_PART_TABLE_TYPE",
    "PTUUID": "ID_PART_TABLE_UUID",
}


def udev_available() -> bool:
    try:
        return UDEV_DB.is_dir() and any(UDEV_DB.iterdir())
    except OSError:
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def sysfs_attrs(name: str) -> dict[str, str | None]:
    sysdir = system.SYS_BLOCK / name
    attrs: dict[str, str | None] = {key: _read(sysdir / key) for key in _ATTRS}
    sectors = _read(sysdir / "size")
    # probert's format (the fixtures) records size in bytes; sysfs always counts 512-byte units.
    attrs["size"] = str(int(sectors) * 512) if sectors and sectors.isdigit() else "0"
    return {k: v for k, v in attrs.items() if v is not None}


def _uevent(name: str) -> dict[str, str]:
    text = _read(system.SYS_BLOCK / name / "uevent") or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _vpd_serial(sysdir: Path) -> str:
    # SCSI VPD page 0x80 (unit serial number): libata answers it for SATA disks, so this is
    # the serial printed on the label even without udev's ata_id.
    try:
        page = (sysdir / "device" / "vpd_pg80").read_bytes()
    except OSError:
        return ""
    return page[4 : 4 + page[3]].decode("ascii", "replace").strip() if len(page) > 4 else ""


def _usb_serial(sysdir: Path) -> str:
    # A USB stick's serial lives on the USB device, a few directories above the block device.
    for parent in sysdir.resolve().parents:
        if (parent / "idVendor").exists():
            return _read(parent / "serial") or ""
    return ""


def _by_id_links() -> dict[str, list[str]]:
    links: dict[str, list[str]] = {}
    try:
        entries = list(BY_ID.iterdir())
    except OSError:
        return links
    for link in entries:
        links.setdefault(Path(os.path.realpath(link)).name, []).append(str(link))
    return links


def _sysfs_props(name: str, attrs: dict[str, str | None]) -> dict[str, Any]:
    sysdir = system.SYS_BLOCK / name
    uevent = _uevent(name)
    props: dict[str, Any] = {k: v for k, v in uevent.items() if k in ("MAJOR", "MINOR", "PARTN")}
    props["DEVNAME"] = f"/dev/{name}"
    props["DEVTYPE"] = uevent.get("DEVTYPE", "disk")
    props["DEVPATH"] = str(sysdir.resolve())[len("/sys") :]
    if uevent.get("PARTNAME"):
        props["ID_PART_ENTRY_NAME"] = uevent["PARTNAME"]
    if props["DEVTYPE"] != "disk":
        return props
    model = attrs.get("device/model") or attrs.get("device/name") or ""
    vendor = attrs.get("device/vendor") or ""
    if vendor.startswith("0x"):
        vendor = ""  # virtio's PCI vendor id, not a name
    serial = attrs.get("device/serial") or attrs.get("serial") or _vpd_serial(sysdir)
    if not serial and "/usb" in props["DEVPATH"]:
        serial = _usb_serial(sysdir)
    wwid = attrs.get("wwid") or attrs.get("device/wwid") or ""
    if wwid.startswith("naa."):
        props["ID_WWN"] = "0x" + wwid[4:]
    elif wwid.startswith(("eui.", "nvme.")):
        props["ID_WWN"] = wwid
    props.update(ID_MODEL=model, ID_VENDOR=vendor, ID_SERIAL_SHORT=serial.strip())
    return props


def _blkid(names: list[str]) -> dict[str, dict[str, str]]:
    """Low-level probe (-p: bypass the cache, read the device) of every readable node.

    One call per device: given several, `blkid -p` stops at the first one it cannot open.
    """
    if which("blkid") is None:
        return {}
    found: dict[str, dict[str, str]] = {}
    for name in names:
        if not os.access(f"/dev/{name}", os.R_OK):
            continue
        found[name] = blkid.probe(f"/dev/{name}", strict=False)
    return found


def _blkid_props(probe: dict[str, str]) -> dict[str, str]:
    props = {_BLKID_KEYS[k]: v for k, v in probe.items() if k in _BLKID_KEYS}
    for key, value in probe.items():
        if key.startswith("PART_ENTRY_"):
            props["ID_" + key] = value
    return props


def _select(names: list[str], wanted: Callable[[str], bool]) -> list[str]:
    """Wanted whole disks plus their partitions."""
    keep = []
    for name in names:
        sysdir = system.SYS_BLOCK / name
        owner = sysdir.resolve().parent.name if (sysdir / "partition").exists() else name
        if wanted(owner):
            keep.append(name)
    return keep


def read_sysfs(wanted: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
    names = _select(sorted(p.name for p in system.SYS_BLOCK.iterdir()), wanted)
    links = _by_id_links()
    records: dict[str, dict[str, Any]] = {}
    for name in names:
        attrs = sysfs_attrs(name)
        props = _sysfs_props(name, attrs)
        if links.get(name):
            props["DEVLINKS"] = " ".join(sorted(links[name]))
        records[f"/dev/{name}"] = {**props, "attrs": attrs}
    probes = _blkid([n for n in names if records[f"/dev/{n}"]["attrs"].get("size") != "0"])
    for name, probe in probes.items():
        records[f"/dev/{name}"].update(_blkid_props(probe))
    return records


def read_udev(wanted: Callable[[str], bool]) -> dict[str, dict[str, Any]]:
    import pyudev

    context = pyudev.Context()
    devices = {d.sys_name: d for d in context.list_devices(subsystem="block")}
    records: dict[str, dict[str, Any]] = {}
    for name in _select(sorted(devices), wanted):
        props: dict[str, Any] = dict(devices[name].properties)
        attrs = sysfs_attrs(name)
        if not props.get("ID_SERIAL_SHORT") and props.get("DEVTYPE") == "disk":
            # virtio disks and some NVMe firmware leave the serial to sysfs.
            fallback = _sysfs_props(name, attrs)
            props["ID_SERIAL_SHORT"] = fallback.get("ID_SERIAL_SHORT", "")
        records[f"/dev/{name}"] = {**props, "attrs": attrs}
    return records


def read_blockdev(
    wanted: Callable[[str], bool], source: str | None = None
) -> dict[str, dict[str, Any]]:
    """Records for the wanted disks and their partitions; source "udev" or "sysfs" forces one."""
    source = source or ("udev" if udev_available() else "sysfs")
    log.debug("reading block devices from %s", source)
    return read_udev(wanted) if source == "udev" else read_sysfs(wanted)


def _read_sector0(name: str, size: int = 4096) -> bytes:
    try:
        fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return b""
    try:
        return os.pread(fd, size, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


def system_facts(
    blockdev: dict[str, dict[str, Any]],
    mountinfo: str | Path | None = None,
    swaps: str | Path | None = None,
) -> SystemFacts:
    """Mounts, swap, holders, used space and sector 0 of the devices in blockdev."""
    names = {Path(node).name for node in blockdev}
    mounts: dict[str, list[str]] = {}
    for mount in system.read_mounts(mountinfo):
        name = system.mount_device_name(mount)
        if name in names:
            mounts.setdefault(name, []).append(mount.mountpoint)
    swap_names = {system.name_of_path(p) for p in system.read_swaps(swaps)}
    used: dict[str, int] = {}
    for name, points in mounts.items():
        with contextlib.suppress(OSError):
            used[name] = psutil.disk_usage(points[0]).used
    holders = {name: system.holders_of(name) for name in names}
    sector0 = {
        Path(node).name: _read_sector0(Path(node).name)
        for node, rec in blockdev.items()
        if rec.get("DEVTYPE") == "disk" and rec["attrs"].get("size", "0") != "0"
    }
    return SystemFacts(
        mounts=mounts,
        holders=holders,
        swaps={n for n in swap_names if n},
        used=used,
        sector0=sector0,
    )
