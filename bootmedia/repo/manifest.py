"""The image manifest: what an image is, written last and atomically. See docs/FORMAT.md.

Manifests are read with msgspec into these dataclasses with strict types: a field of the wrong
type (`"version": true`), an unknown area mode, a negative size, a map name that is a path, a
file larger than MAX_MANIFEST or nested deeper than any real manifest is refused with one line
naming the field, never coerced and never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import blake3
import msgspec

from bootmedia.errors import ImageError, UsageError
from bootmedia.text import printable

IMAGE_FORMAT = "bootmedia-image"
IMAGE_VERSION = 1
MAX_MANIFEST = 4 << 20  # a manifest of 128 partitions is ~100 KiB
NAME_MAX = 128  # image names, and the longest description line shown is DESCRIPTION_MAX
DESCRIPTION_MAX = 1024
# \Z, not $: "$" also matches before a trailing newline, so "img\n" would pass.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z"
# An extent map is a plain file name inside the image directory: no "/", no "..", not hidden.
MAP_PATTERN = r"^$|^[A-Za-z0-9](?:[A-Za-z0-9_+-]|\.(?!\.)){0,127}$"

U64 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Description = Annotated[str, msgspec.Meta(max_length=DESCRIPTION_MAX)]
MapName = Annotated[str, msgspec.Meta(pattern=MAP_PATTERN)]
Hex = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{0,128}$")]
SECTOR_SIZES = (512, 1024, 2048, 4096)
LABELS = ("gpt", "dos")

# Area modes: how an area's bytes were captured.
USED = "used"  # only the blocks the filesystem uses (partclone's domain map)
RAW = "raw"  # every byte, runs of zeros recorded as zero extents
SWAP = "swap"  # nothing stored; mkswap with the same uuid/label at apply
SKIP = "skip"  # nothing stored (an extended partition's container)
MODES = (USED, RAW, SWAP, SKIP)


@dataclass(frozen=True)
class SourceDisk:
    path: Text
    model: Text
    serial: Text
    size: U64
    logical_sector_size: U64
    physical_sector_size: U64


@dataclass(frozen=True)
class TablePartition:
    number: Annotated[int, msgspec.Meta(ge=1, le=256)]
    start: U64  # sectors of the table's sector size
    size: U64
    type: Text
    uuid: Text = ""
    name: Text = ""
    attrs: Text = ""
    bootable: bool = False


@dataclass(frozen=True)
class Table:
    label: Text  # "gpt" or "dos"
    id: Text
    sector_size: U64
    first_lba: U64
    last_lba: U64
    partitions: Annotated[tuple[TablePartition, ...], msgspec.Meta(max_length=256)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        parts = tuple(TablePartition(**p) for p in d["partitions"])
        return cls(**{**d, "partitions": parts})


@dataclass(frozen=True)
class Area:
    """A byte range of the source disk with an extent map: a partition, the whole disk, or a
    boot area ("head": MBR boot code + post-MBR gap; "gpt-backup": the last sectors)."""

    name: MapName
    offset: U64  # bytes from the start of the disk
    size: U64
    mode: Text
    number: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0  # partition number; 0: boot area, disk
    fstype: Text = ""
    uuid: Text = ""
    label: Text = ""
    used: U64 | None = None  # bytes the filesystem uses, where known
    min_size: U64 | None = None  # smallest size the filesystem can shrink to, where known
    block_size: U64 | None = None  # the filesystem's sector/block size, where known
    map: MapName = ""  # extent map file name inside the image directory
    map_hash: Hex = ""
    data_bytes: U64 = 0  # bytes covered by stored (non-zero) extents


@dataclass(frozen=True)
class Stats:
    data_bytes: U64 = 0  # bytes read and stored (before compression)
    stored_bytes: U64 = 0  # compressed size of every distinct chunk this image uses
    new_bytes: U64 = 0  # compressed bytes this capture added to the repository
    chunks: U64 = 0
    new_chunks: U64 = 0
    seconds: Annotated[float, msgspec.Meta(ge=0)] = 0.0


@dataclass(frozen=True)
class Manifest:
    name: Name
    description: Description
    created: Text  # ISO 8601, UTC
    tool: Text
    chunk_size: Annotated[int, msgspec.Meta(ge=4096, le=1 << 30)]
    source: SourceDisk
    table: Table | None
    areas: Annotated[tuple[Area, ...], msgspec.Meta(max_length=512)]
    stats: Stats = field(default_factory=Stats)
    digest: Hex = ""  # whole-image digest, see image_digest()

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
    def from_dict(cls, d: Any) -> Manifest:
        """A manifest from decoded JSON, with the same strict rules as load_manifest()."""
        try:
            m = msgspec.convert(d, cls, strict=True)
        except msgspec.ValidationError as exc:
            name = d.get("name", "?") if isinstance(d, dict) else "?"
            raise ImageError(f"image {name}: malformed manifest ({exc})") from None
        m.check()
        return m

    def check(self) -> None:
        """The rules types cannot say: known modes, labels and sector sizes."""
        where = f"image {self.name}"
        for a in self.areas:
            if a.mode not in MODES:
                raise ImageError(
                    f"{where}: area {a.name} has unknown mode {a.mode!r} "
                    f"(this bootmedia knows {', '.join(MODES)})"
                )
        if self.source.logical_sector_size not in SECTOR_SIZES:
            raise ImageError(
                f"{where}: unknown source sector size {self.source.logical_sector_size}"
            )
        if self.table is not None:
            if self.table.label not in LABELS:
                raise ImageError(f"{where}: unknown partition table type {self.table.label!r}")
            if self.table.sector_size not in SECTOR_SIZES:
                raise ImageError(f"{where}: unknown table sector size {self.table.sector_size}")


_CONFIG_INTS = ("version", "chunk_size", "pack_size", "block_size", "frame_size")


def check_config_types(config: dict[str, Any], where: str) -> None:
    """bootmedia-repo.json's numbers are integers, never booleans or strings: `"version": true`
    is not version 1 (Python's True == 1 made it so in round 1)."""
    for key in _CONFIG_INTS:
        if key in config and (type(config[key]) is not int or config[key] < 0):
            raise ImageError(
                f"{where}: {key} must be a non-negative integer, not {printable(repr(config[key]), 40)}"
            )
    if key_missing := [k for k in ("version",) if k not in config]:
        raise ImageError(f"{where}: no {key_missing[0]}")


def check_image_name(name: str) -> None:
    """The capture-time rule for names (also what load_manifest accepts)."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise UsageError(
            f"bad image name {printable(name, 60)!r}: use letters, digits, '.', '_', '+' or '-', "
            f"starting with a letter or digit, at most {NAME_MAX} characters"
        )


def check_description(text: str) -> None:
    if len(text) > DESCRIPTION_MAX:
        raise UsageError(
            f"description too long: {len(text)} characters (at most {DESCRIPTION_MAX})"
        )


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


class _Head(msgspec.Struct):
    """What every manifest version has: read first, so a newer version is named as such."""

    format: str
    version: int


class _Envelope(msgspec.Struct):
    format: str
    version: int
    manifest: Manifest
    blake3: Hex


def load_manifest(path: Path) -> Manifest:
    """Read images/NAME/manifest.json from a local directory (a file of bounded size)."""
    return parse_manifest(_read_bounded(path, path.parent.name), path.parent.name)


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest from its bytes (read through a Storage); `where` is its directory's name.

    The image's identity is its directory: a manifest that names another image (a copied or
    renamed directory) is damaged, never taken for that one."""
    if len(data) > MAX_MANIFEST:
        raise ImageError(f"image {where}: manifest is larger than {MAX_MANIFEST} bytes")
    try:
        head = msgspec.json.decode(data, type=_Head, strict=True)
        if head.format != IMAGE_FORMAT:
            raise ImageError(f"image {where}: not a bootmedia manifest")
        if head.version != IMAGE_VERSION:
            raise ImageError(
                f"image {where}: unknown format version {head.version!r} "
                f"(this bootmedia reads version {IMAGE_VERSION})"
            )
        envelope = msgspec.json.decode(data, type=_Envelope, strict=True)
        body = msgspec.json.decode(data)["manifest"]
    except msgspec.ValidationError as exc:
        raise ImageError(f"image {where}: malformed manifest ({exc})") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise ImageError(f"image {where}: manifest is corrupt (not valid JSON)") from None
    except RecursionError:
        raise ImageError(f"image {where}: malformed manifest (nested too deeply)") from None
    if blake3.blake3(_canonical(body)).hexdigest() != envelope.blake3:
        raise ImageError(f"image {where}: manifest is corrupt (checksum mismatch)")
    m = envelope.manifest
    m.check()
    if m.name != where:
        raise ImageError(
            f"image {where}: damaged: its manifest names it {m.name!r} (a copied or renamed "
            f"image directory); it is not used until the directory is named {m.name!r} again"
        )
    return m


def _read_bounded(path: Path, where: str) -> bytes:
    """The manifest's bytes: a regular file (not a symlink, FIFO or device) of bounded size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(f"image {where}: manifest is missing") from None
    except OSError as exc:
        raise ImageError(f"image {where}: manifest cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"image {where}: manifest is not a regular file")
        if st.st_size > MAX_MANIFEST:
            raise ImageError(
                f"image {where}: manifest is {st.st_size} bytes, more than any real manifest "
                f"(limit {MAX_MANIFEST})"
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_MANIFEST + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_MANIFEST:
        raise ImageError(f"image {where}: manifest is larger than {MAX_MANIFEST} bytes")
    return data
