"""Partition tables: read with `sfdisk -J`, rendered back as an sfdisk script, written by sfdisk."""

from __future__ import annotations

import json
from dataclasses import replace

from bootmedia.blockdev import rescan
from bootmedia.errors import BootmediaError, ImageError
from bootmedia.repo.manifest import Table, TablePartition
from bootmedia.run import run

# Partition types that hold no filesystem of their own (an MBR extended container).
EXTENDED_TYPES = {"5", "f", "85"}
SWAP_TYPES = {"82", "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"}
BIOS_GRUB = "21686148-6449-6E6F-744E-656564454649"


def read_table(device: str) -> Table | None:
    """The device's partition table, or None when it has none."""
    proc = run(["sfdisk", "-J", device], check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        if "does not contain a recognized partition table" in err or not err.strip():
            return None
        raise BootmediaError(f"sfdisk -J {device} failed: {err.strip().splitlines()[-1]}")
    data = json.loads(proc.stdout)["partitiontable"]
    parts = []
    for p in data.get("partitions", []):
        node = p["node"]
        number = int(node[len(node.rstrip("0123456789")) :])
        parts.append(
            TablePartition(
                number=number,
                start=int(p["start"]),
                size=int(p["size"]),
                type=str(p["type"]),
                uuid=p.get("uuid", ""),
                name=p.get("name", ""),
                attrs=p.get("attrs", ""),
                bootable=bool(p.get("bootable", False)),
            )
        )
    return Table(
        label=data["label"],
        id=data.get("id", ""),
        sector_size=int(data.get("sectorsize", 512)),
        first_lba=int(data.get("firstlba", 0)),
        last_lba=int(data.get("lastlba", 0)),
        partitions=tuple(parts),
    )


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
    usable space, and the GPT backup lands at the end of the (larger) target disk.
    """
    lines = [f"label: {table.label}"]
    if table.id:
        lines.append(f"label-id: {table.id}")
    lines.append("unit: sectors")
    if table.label == "gpt" and table.first_lba:
        lines.append(f"first-lba: {table.first_lba}")
    lines.append("")
    for p in sorted(table.partitions, key=lambda p: p.number):
        fields = [f"start={p.start}"]
        if p.number != grow:
            fields.append(f"size={p.size}")
        fields.append(f"type={p.type}")
        if p.uuid:
            fields.append(f"uuid={p.uuid}")
        if p.name:
            fields.append('name="{}"'.format(p.name.replace('"', "")))
        if p.attrs:
            fields.append(f'attrs="{p.attrs}"')
        if p.bootable:
            fields.append("bootable")
        # sfdisk reads only the number at the end of the name before ':'; naming each
        # partition keeps gaps in the numbering (a deleted partition 2 stays absent).
        lines.append(f"part{p.number} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


def write_table(device: str, script: str) -> None:
    """Write the table. sfdisk tells the kernel; partx catches what it could not (a loop
    device without udev); `udevadm settle` waits for the nodes where udev runs."""
    run(["sfdisk", "--no-reread", "-q", "--wipe", "never", device], input=script.encode())
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
            if isinstance(vx, str):
                vx, vy = vx.lower(), str(vy).lower()
            if vx != vy:
                diffs.append(f"partition {n} {attr}: {getattr(x, attr)} != {getattr(y, attr)}")
    return diffs
