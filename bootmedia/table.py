"""Partition tables: read with `sfdisk -J`, rendered back as an sfdisk script, written by sfdisk."""

from __future__ import annotations

from dataclasses import replace

from bootmedia.blockdev import rescan
from bootmedia.errors import BootmediaError, ImageError
from bootmedia.repo.manifest import Table, TablePartition
from bootmedia.tools import gpt, sfdisk

# Partition types that hold no filesystem of their own (an MBR extended container).
EXTENDED_TYPES = {"5", "f", "85"}
SWAP_TYPES = {"82", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"}
BIOS_GRUB = "21686148-6449-6E6F-744E-656564454649"


def read_table(device: str) -> Table | None:
    """The device's partition table, or None when it has none."""
    data = sfdisk.read(device)
    if data is None:
        return None
    try:
        parts = tuple(
            TablePartition(
                number=sfdisk.partition_number(p["node"]),
                start=int(p["start"]),
                size=int(p["size"]),
                type=str(p["type"]),
                uuid=p.get("uuid", ""),
                name=p.get("name", ""),
                attrs=p.get("attrs", ""),
                bootable=bool(p.get("bootable", False)),
            )
            for p in data.get("partitions", [])
        )
        return Table(
            label=data["label"],
            id=data.get("id", ""),
            sector_size=int(data.get("sectorsize", 512)),
            first_lba=int(data.get("firstlba", 0)),
            last_lba=int(data.get("lastlba", 0)),
            partitions=parts,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BootmediaError(f"sfdisk -J {device}: unexpected table ({exc})") from None


def is_extended(p: TablePartition, table: Table) -> bool:
    return table.label == "dos" and p.type.lower() in EXTENDED_TYPES


def translate(table: Table, sector_size: int) -> Table:
    """The same table in another logical sector size, when every boundary converts exactly
    (512-byte sectors at 4 KiB-aligned offsets do; anything else would move data)."""
    if sector_size == table.sector_size:
        return table
    old = table.sector_size
    parts = []
    for p in table.partitions:
        if (p.start * old) % sector_size or (p.size * old) % sector_size:
            raise ImageError(
                f"partition {p.number} is not aligned to {sector_size}-byte sectors: this image "
                f"({old}-byte sectors) cannot be restored exactly to a {sector_size}-byte-sector disk"
            )
        parts.append(
            replace(p, start=p.start * old // sector_size, size=p.size * old // sector_size)
        )
    # first/last LBA depend on the sector size; let sfdisk choose them for the new geometry.
    return replace(table, sector_size=sector_size, first_lba=0, last_lba=0, partitions=tuple(parts))


def last_partition(table: Table) -> TablePartition | None:
    """The partition that ends last, the only one that can grow without moving another."""
    candidates = [p for p in table.partitions if not is_extended(p, table)]
    if table.label == "dos" and any(p.number > 4 for p in candidates):
        return None  # growing a logical partition would mean growing its container too
    return max(candidates, key=lambda p: p.start + p.size, default=None)


def render_sfdisk(table: Table, grow: int | None = None) -> str:
    """An sfdisk script that recreates the table: same label id, uuids, names and types.

    With grow=N, partition N gets no size, which tells sfdisk to extend it to the end of the
    usable space, and the GPT backup lands at the end of the (larger) target disk. Every value
    comes from an image, so each is checked or escaped (bootmedia.tools.sfdisk); a name sfdisk
    cannot write is left to write_table, which puts every name into the GPT itself.
    """
    lines = [f"label: {table.label}"]
    if table.id:
        lines.append(f"label-id: {sfdisk.check_id('label-id', table.id)}")
    lines.append("unit: sectors")
    if table.label == "gpt" and table.first_lba:
        lines.append(f"first-lba: {int(table.first_lba)}")
    lines.append("")
    for p in sorted(table.partitions, key=lambda p: p.number):
        fields = [f"start={int(p.start)}"]
        if p.number != grow:
            fields.append(f"size={int(p.size)}")
        fields.append(f"type={sfdisk.check_id('type', p.type)}")
        if p.uuid:
            fields.append(f"uuid={sfdisk.check_id('uuid', p.uuid)}")
        if p.name and sfdisk.sfdisk_can_name(p.name):
            fields.append(f"name={sfdisk.quote_name(p.name)}")
        if p.attrs:
            fields.append(f'attrs="{sfdisk.check_attrs(p.attrs)}"')
        if p.bootable:
            fields.append("bootable")
        # sfdisk reads only the number at the end of the name before ':'; naming each
        # partition keeps gaps in the numbering (a deleted partition 2 stays absent).
        lines.append(f"part{int(p.number)} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


def check_names(table: Table) -> None:
    """Every name fits a GPT entry (36 UTF-16 units); raises ImageError naming the one that
    does not. Called before the first write."""
    for p in table.partitions:
        if p.name:
            gpt.encode_name(p.name)


def write_table(device: str, script: str, table: Table | None = None) -> None:
    """Write the table (sfdisk, then the kernel told). Given the Table the script came from,
    a GPT's names are then written into both entry arrays exactly (bootmedia.tools.gpt)."""
    sfdisk.write(device, script)
    if table is not None and table.label == "gpt":
        names = {p.number: p.name for p in table.partitions if p.name}
        if names:
            gpt.set_names(device, names, table.sector_size)
            rescan(device)


def same_layout(a: Table, b: Table) -> list[str]:
    """Differences between two tables that matter (empty when the target matches the plan)."""
    diffs = []
    if a.label != b.label:
        diffs.append(f"label {a.label} != {b.label}")
    if a.id.lower() != b.id.lower():
        diffs.append(f"disk id {a.id} != {b.id}")
    pa = {p.number: p for p in a.partitions}
    pb = {p.number: p for p in b.partitions}
    if pa.keys() != pb.keys():
        diffs.append(f"partitions {sorted(pa)} != {sorted(pb)}")
    for n in pa.keys() & pb.keys():
        x, y = pa[n], pb[n]
        for attr in ("start", "size", "type", "uuid", "name", "attrs", "bootable"):
            vx, vy = getattr(x, attr), getattr(y, attr)
            if isinstance(vx, str) and attr != "name":  # hex ids in either case; names exact
                vx, vy = vx.lower(), str(vy).lower()
            if vx != vy:
                diffs.append(f"partition {n} {attr}: {getattr(x, attr)} != {getattr(y, attr)}")
    return diffs
