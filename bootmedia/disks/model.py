"""What bootmedia knows about a disk: frozen snapshots built by discover.build_disk()."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from bootmedia.progress import human_size
from bootmedia.text import printable

# The lead's apply writes this ASCII marker at byte 0 of a disk when a restore starts and removes
# it when the restore completes, so a disk that still carries it holds a half-written image.
INCOMPLETE_MARKER = b"BOOTMEDIA-INCOMPLETE"


def unfinished_refusal(path: str) -> str | None:
    """Why a disk (or image file) cannot be a source: its boot code carries INCOMPLETE_MARKER,
    so a restore or clone to it was interrupted and it holds no whole disk. None otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(INCOMPLETE_MARKER))
    except OSError:
        return None  # unreadable: the caller's own open says why
    if head != INCOMPLETE_MARKER:
        return None
    return (
        f"{path}: its boot code carries {INCOMPLETE_MARKER.decode()}: a restore or clone to it "
        "started and never finished, so it holds no whole disk; restore or clone it again first"
    )


@dataclass(frozen=True)
class Partition:
    name: str  # kernel name: "sda1", "nvme0n1p2", "loop3p1"
    path: str  # "/dev/sda1"
    number: int
    size: int  # bytes
    start: int = 0  # bytes from the start of the disk
    fstype: str = ""  # "ext4", "vfat", "ntfs", "swap", "crypto_LUKS", "" when unknown
    label: str = ""
    uuid: str = ""
    part_type: str = ""  # GPT type GUID or MBR type ("0x83")
    part_uuid: str = ""
    part_name: str = ""  # the GPT partition name
    used: int | None = None  # bytes in use, where known (mounted filesystems)
    mountpoints: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()  # dm-0, md127... built on top of this partition
    swap: bool = False  # in use as swap right now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Disk:
    name: str  # kernel name: "sda", "nvme0n1", "loop3"; changes between boots, never an identity
    path: str  # "/dev/sda"
    size: int  # bytes
    model: str = ""
    vendor: str = ""
    serial: str = ""
    wwn: str = ""
    by_id: tuple[str, ...] = ()  # /dev/disk/by-id/... names, the stable ones first
    by_path: str = ""
    transport: str = ""  # usb, sata, nvme, mmc, virtio, loop, scsi, ...
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    rotational: bool = False
    removable: bool = False
    read_only: bool = False
    devnum: str = ""  # "8:0", how mountinfo and st_dev refer to it
    partition_table: str = ""  # "gpt", "dos", "" when none
    fstype: str = ""  # a filesystem (or RAID/LVM signature) on the whole disk
    partitions: tuple[Partition, ...] = ()
    mountpoints: tuple[str, ...] = ()  # mounts of the whole-disk device itself
    holders: tuple[str, ...] = ()  # of the disk itself; partitions carry their own
    swap: bool = False
    backing_file: str = ""  # loop devices only
    incomplete_restore: bool = False  # sector 0 carries INCOMPLETE_MARKER
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def all_mountpoints(self) -> tuple[str, ...]:
        return self.mountpoints + tuple(m for p in self.partitions for m in p.mountpoints)

    @property
    def all_holders(self) -> tuple[str, ...]:
        return self.holders + tuple(h for p in self.partitions for h in p.holders)

    @property
    def in_swap(self) -> bool:
        return self.swap or any(p.swap for p in self.partitions)

    @property
    def title(self) -> str:
        """Vendor and model the way a technician reads them off the label."""
        model = printable(self.model, 64).replace("_", " ").strip()
        vendor = printable(self.vendor, 32).replace("_", " ").strip()
        if vendor and model and not model.lower().startswith(vendor.lower()):
            model = f"{vendor} {model}"
        if self.transport == "loop":
            return f"loop device ({self.backing_file})" if self.backing_file else "loop device"
        return model or f"{self.transport or 'unknown'} disk"

    def label(self) -> str:
        """One line that tells disks apart: model · serial · size · bus (never only sdX)."""
        # Without a serial, a by-id name or the bus path (stable across boots, unlike sdX).
        links = [*self.by_id, self.by_path] if self.by_path else list(self.by_id)
        serial = printable(self.serial, 64)
        ident = serial or (links[0].rsplit("/", 1)[-1] if links else "no serial")
        parts = [self.title, ident, human_size(self.size), self.transport or "?", self.name]
        return " · ".join(parts)

    def __str__(self) -> str:
        return self.label()

    @property
    def ident(self) -> str:
        """Short identity for messages: the serial where there is one, else the kernel name."""
        return f"{self.name} ({printable(self.serial, 64)})" if self.serial else self.name

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["label"] = self.label()
        data.pop("extra")
        return data
