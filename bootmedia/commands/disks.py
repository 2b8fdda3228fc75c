"""bootmedia disks: what a technician needs to tell the machine's drives apart."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bootmedia.disks import Disk, find_disk, find_disks, load_machine
from bootmedia.disks.contents import Sample, contents_summary
from bootmedia.disks.safety import snapshot_refusal
from bootmedia.progress import human_size
from bootmedia.text import printable


def register(sub: Any) -> None:
    p = sub.add_parser(
        "disks",
        help="list the disks with model, serial, size and bus",
        description="List the machine's disks: identity (model, serial, WWN, by-id names), bus, "
        "size, sector sizes, partitions, mounts, and whether bootmedia may write to each.",
    )
    p.add_argument("disk", nargs="?", help="show only this disk (/dev/sdX, by-id name, loopN)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--include-loop", action="store_true", help="also list loop devices")
    p.add_argument("--repo", help="also refuse the disk holding this image repository")
    p.add_argument(
        "--machine", metavar="FILE", help="show a recorded machine (probert JSON) instead"
    )
    p.set_defaults(func=main)


def describe(disk: Disk, refusal: str | None, contents: str = "") -> list[str]:
    """The text block `bootmedia disks` prints for one disk (contents: contents_summary)."""
    lines = [f"{disk.path}  {disk.label()}"]
    if contents:
        lines.append(f"    contents: {contents}")
    facts = [f"{disk.logical_sector_size}/{disk.physical_sector_size}-byte sectors"]
    facts.append("HDD" if disk.rotational and disk.transport not in ("loop", "virtio") else "")
    facts += ["removable" if disk.removable else "", "READ-ONLY" if disk.read_only else ""]
    facts.append(disk.partition_table or disk.fstype or "no partition table")
    lines.append("    " + " · ".join(f for f in facts if f))
    if disk.wwn:
        lines.append(f"    wwn {disk.wwn}")
    for link in disk.by_id[:3]:
        lines.append(f"    {link}")
    if disk.incomplete_restore:
        lines.append("    !! incomplete restore: a restore to this disk started and never finished")
    for part in disk.partitions:
        used = f"{human_size(part.used)} used" if part.used is not None else ""
        where = ", ".join(part.mountpoints) or ("[swap]" if part.swap else "")
        cols = [part.name, part.fstype or "-", part.label, human_size(part.size), used, where]
        lines.append("    " + "  ".join(c for c in cols if c))
    lines.append(f"    bootmedia will not write here: {refusal}" if refusal else "    writable")
    return lines


def _recorded_refusal(disk: Disk) -> str | None:
    # A recorded machine has no live mounts to ask about: only what the recording says.
    if disk.read_only:
        return f"{disk.ident}: is read-only"
    if disk.all_mountpoints or disk.all_holders:
        return f"{disk.ident}: in use ({', '.join(disk.all_mountpoints + disk.all_holders)})"
    return None


def main(args: argparse.Namespace) -> int:
    if args.machine:
        disks = load_machine(args.machine, include_loop=args.include_loop)
        disks = [d for d in disks if not args.disk or args.disk in (d.name, d.path)]
        refusals = {d.name: _recorded_refusal(d) for d in disks}
    else:
        disks = [find_disk(args.disk)] if args.disk else find_disks(include_loop=args.include_loop)
        refusals = {d.name: snapshot_refusal(d, repo_path=args.repo) for d in disks}
    # A recording holds no bytes: its disks are never read (they are not this machine's).
    unread = Sample(None, "a recorded machine") if args.machine else None
    contents = {d.name: contents_summary(d, unread) for d in disks}
    if args.json:
        data = [
            {**d.to_dict(), "refusal": refusals[d.name], "contents": contents[d.name]}
            for d in disks
        ]
        json.dump({"disks": data}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not disks:
        print("no disks found" + ("" if args.include_loop else " (loop devices: --include-loop)"))
        return 0
    for disk in disks:
        lines = describe(disk, refusals[disk.name], contents[disk.name])
        print("\n".join(printable(line) for line in lines))
    return 0
