"""The image manifest: what an image is, written last and atomically. See docs/FORMAT.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3

from bootmedia.errors import ImageError

IMAGE_FORMAT = "bootmedia-image"
IMAGE_VERSION = 1

# Area modes: how an area's bytes were captured.
USED = "used"  # only the blocks the filesystem uses (partclone's domain map)
RAW = "raw"  # every byte, runs of zeros recorded as zero extents
SWAP = "swap"  # nothing stored; mkswap with the same uuid/label at apply
SKIP = "skip"  # nothing stored (an extended partition's container)


@dataclass(frozen=True)
class SourceDisk:
    path: str
    model: str
    serial: str
    size: int
    logical_sector_size: int
    physical_sector_size: int


@dataclass(frozen=True)
class TablePartition:
    number: int
    start: int  # sectors of the table's sector size
    size: int
    type: str
    uuid: str = ""
    name: str = ""
    attrs: str = ""
    bootable: bool = False


@dataclass(frozen=True)
class Table:
    label: str  # "gpt" or "dos"
    id: str
    sector_size: int
    first_lba: int
    last_lba: int
    partitions: tuple[TablePartition, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        parts = tuple(TablePartition(**p) for p in d["partitions"])
        return cls(**{**d, "partitions": parts})


@dataclass(frozen=True)
class Area:
    """A byte range of the source disk with an extent map: a partition, the whole disk, or a
    boot area ("head": MBR boot code + post-MBR gap; "gpt-backup": the last sectors)."""

    name: str
    offset: int  # bytes from the start of the disk
    size: int
    mode: str
    number: int = 0  # partition number, 0 for boot areas and a whole disk
    fstype: str = ""
    uuid: str = ""
    label: str = ""
    used: int | None = None  # bytes the filesystem uses, where known
    min_size: int | None = None  # smallest size the filesystem can shrink to, where known
    block_size: int | None = None  # the filesystem's sector/block size, where known
    map: str = ""  # extent map file name inside the image directory
    map_hash: str = ""
    data_bytes: int = 0  # bytes covered by stored (non-zero) extents


@dataclass(frozen=True)
class Stats:
    data_bytes: int = 0  # bytes read and stored (before compression)
    stored_bytes: int = 0  # compressed size of every distinct chunk this image uses
    new_bytes: int = 0  # compressed bytes this capture added to the repository
    chunks: int = 0
    new_chunks: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Manifest:
    name: str
    description: str
    created: str  # ISO 8601, UTC
    tool: str
    chunk_size: int
    source: SourceDisk
    table: Table | None
    areas: tuple[Area, ...]
    stats: Stats = field(default_factory=Stats)
    digest: str = ""  # whole-image digest, see image_digest()

    @property
    def partitions(self) -> tuple[Area, ...]:
        return tuple(a for a in self.areas if a.number or a.name == "disk")

    def area(self, name: str) -> Area | None:
        return next((a for a in self.areas if a.name == name), None)

    @property
    def required_size(self) -> int:
        """Bytes a target must have: the end of the last partition plus the GPT backup."""
        if self.table is None:
            return self.source.size
        ss = self.table.sector_size
        end = max((p.start + p.size for p in self.table.partitions), default=0) * ss
        backup = 33 * 512 if self.table.label == "gpt" and ss == 512 else 6 * ss
        return end + (backup if self.table.label == "gpt" else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        try:
            return cls(
                name=d["name"],
                description=d.get("description", ""),
                created=d["created"],
                tool=d["tool"],
                chunk_size=int(d["chunk_size"]),
                source=SourceDisk(**d["source"]),
                table=Table.from_dict(d["table"]) if d.get("table") else None,
                areas=tuple(Area(**a) for a in d["areas"]),
                stats=Stats(**d.get("stats", {})),
                digest=d.get("digest", ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ImageError(f"image {d.get('name', '?')}: malformed manifest ({exc})") from None


def image_digest(table: Table | None, areas: tuple[Area, ...]) -> str:
    """One digest for the whole image: the table plus every area's map hash. Maps name every
    chunk by its content hash, so equal digests mean equal content."""
    h = blake3.blake3()
    h.update(_canonical(asdict(table) if table else None))
    for a in areas:
        h.update(_canonical([a.name, a.offset, a.size, a.mode, a.map_hash]))
    return h.hexdigest()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def dump_manifest(m: Manifest) -> bytes:
    body = m.to_dict()
    envelope = {
        "format": IMAGE_FORMAT,
        "version": IMAGE_VERSION,
        "manifest": body,
        "blake3": blake3.blake3(_canonical(body)).hexdigest(),
    }
    return json.dumps(envelope, indent=1, sort_keys=True).encode() + b"\n"


def load_manifest(path: Path) -> Manifest:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image {path.parent.name}: manifest is missing") from None
    return parse_manifest(data, path.parent.name)


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest from its bytes (read through a Storage); `where` names the image."""
    try:
        envelope = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ImageError(f"image {where}: manifest is corrupt (not valid JSON)") from None
    if not isinstance(envelope, dict) or envelope.get("format") != IMAGE_FORMAT:
        raise ImageError(f"image {where}: not a bootmedia manifest")
    if envelope.get("version") != IMAGE_VERSION:
        raise ImageError(
            f"image {where}: unknown format version {envelope.get('version')!r} "
            f"(this bootmedia reads version {IMAGE_VERSION})"
        )
    body = envelope.get("manifest")
    if blake3.blake3(_canonical(body)).hexdigest() != envelope.get("blake3"):
        raise ImageError(f"image {where}: manifest is corrupt (checksum mismatch)")
    assert isinstance(body, dict)
    return Manifest.from_dict(body)
