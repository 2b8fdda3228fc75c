"""bootmedia partition DISK --layout L [--fs FS] --confirm SERIAL: lay out a disk."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bootmedia.commands.wipe import print_progress
from bootmedia.disks import check_confirm, check_writable
from bootmedia.disks.files import find_disk_or_file
from bootmedia.partition import BUILTIN, apply_partition, plan_partition
from bootmedia.progress import Reporter


def register(sub: Any) -> None:
    p = sub.add_parser(
        "partition",
        help="write a partition layout and make the filesystems",
        description="Write a new partition table and filesystems. Built-in layouts: uefi (ESP + "
        "ext4 root), windows (ESP, MSR, NTFS), bios (MBR, one ext4 or NTFS), data (GPT, one "
        "exFAT, NTFS or ext4); or a TOML layout file. --dry-run prints the sfdisk script and "
        "mkfs commands.",
    )
    p.add_argument("disk", help="/dev/sdX, /dev/disk/by-id/... or loopN")
    p.add_argument("--layout", "-l", required=True, help=f"{', '.join(BUILTIN)} or FILE.toml")
    p.add_argument(
        "--fs",
        help="filesystem of the main partition (uefi: ext4/xfs/btrfs; "
        "bios: ext4/ntfs; data: exfat/ntfs/ext4)",
    )
    p.add_argument(
        "--confirm",
        metavar="ID",
        help="the disk's serial, its last 4 characters or a by-id name (the kernel name, e.g. "
        "loop3, only for a disk without a serial; an image file's name)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--repo", help="refuse the disk that holds this image repository")
    p.add_argument("--json", action="store_true", help="print the plan or the result as JSON")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    disk = find_disk_or_file(args.disk)
    plan = plan_partition(disk, args.layout, fs=args.fs)
    if args.dry_run:
        print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.render())
        return 0
    check_writable(disk, repo_path=args.repo)
    check_confirm(disk, args.confirm, "repartition")
    print(plan.render(), file=sys.stderr)
    result = apply_partition(plan, Reporter(print_progress()), repo_path=args.repo)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
    return 0
