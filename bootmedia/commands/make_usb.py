"""bootmedia make-usb: write the live ISO to a stick and add a BOOTMEDIA data partition."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bootmedia import stick
from bootmedia.disks import check_confirm, check_writable, find_disk
from bootmedia.plan import shell
from bootmedia.progress import Progress, Reporter, human_bytes, human_duration


def register(sub: Any) -> None:
    p = sub.add_parser(
        "make-usb",
        help="write the live system to a USB stick, with a data partition for images",
        description="Write a bootmedia hybrid ISO (from build_iso.sh) to a stick, read it back, "
        "then add a partition labelled BOOTMEDIA in the rest of the stick for image "
        f"repositories, logs and reports. The live system mounts it at {stick.DATA_DIR}.",
    )
    p.add_argument("iso", type=Path, help="the hybrid ISO (out/bootmedia.iso)")
    p.add_argument("disk", help="the stick: /dev/sdX or a /dev/disk/by-id name")
    p.add_argument(
        "--data-fs",
        choices=("exfat", "ext4", "none"),
        default="exfat",
        help="filesystem of the data partition: exfat (default: Windows and macOS read it), "
        "ext4, or none for no data partition",
    )
    p.add_argument(
        "--confirm",
        help="the stick's serial, its last 4 characters or a by-id name (the kernel name only "
        "for a stick without a serial)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="show what would be written, write nothing"
    )
    p.set_defaults(func=main)


def _print_progress(p: Progress) -> None:
    if not sys.stderr.isatty():
        return
    pct = f"{100 * p.fraction:5.1f}%"
    rate = f"{human_bytes(p.rate)}/s" if p.rate else ""
    sys.stderr.write(f"\r{p.step[:40]:40} {pct} {rate:>12} ETA {human_duration(p.eta)}  ")
    sys.stderr.flush()


def main(args: argparse.Namespace) -> int:
    iso = stick.inspect_iso(args.iso)
    disk = find_disk(args.disk)
    plan = stick.plan_stick(iso, disk, args.data_fs)
    print("\n".join(plan.summary()))
    if args.dry_run:
        print(f"(dry run: nothing written)\n{shell(plan)}")
        return 0
    check_confirm(disk, args.confirm, action="erase")
    check_writable(disk)
    result = stick.make_stick(plan, Reporter(callback=_print_progress))
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print("\n".join(result.lines))
    print(
        "Done. Boot a machine from the stick (BIOS or UEFI); the data partition mounts at "
        f"{stick.DATA_DIR}."
    )
    return 0
