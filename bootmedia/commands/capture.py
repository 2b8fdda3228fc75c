from __future__ import annotations

import argparse

from bootmedia.capture import capture_image, plan_capture
from bootmedia.capture.plan import DEFAULT_LEVEL
from bootmedia.commands._common import reporter
from bootmedia.layout.choose import parse_numbers
from bootmedia.progress import human_bytes, human_duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "capture",
        help="capture a disk into an image repository",
        description="Capture DISK into the repository REPO (created if missing) as image NAME. "
        "Only used filesystem blocks are read; data already in the repository is not stored again.",
    )
    p.add_argument("disk", help="the source disk, e.g. /dev/disk/by-id/... or /dev/sda")
    p.add_argument(
        "repo",
        help="the repository: a directory, or an smb://, nfs:// or ssh:// URL (docs/NETWORK.md)",
    )
    p.add_argument("--name", required=True, help="image name (letters, digits, . _ + -)")
    p.add_argument("--description", default="", help="free text shown in listings")
    p.add_argument(
        "--level",
        type=int,
        default=DEFAULT_LEVEL,
        help=f"zstd level 1-19 (default {DEFAULT_LEVEL}; 3 makes the image about 4%% smaller "
        "for a third more CPU)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="how many cores to plan for (default: all); capture runs twice as many worker "
        "threads, so that one reads while another compresses",
    )
    p.add_argument(
        "--partitions",
        metavar="N,M",
        help="capture only these partitions (e.g. 1,3); the table is kept whole",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan, read nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = plan_capture(
        args.disk,
        args.repo,
        args.name,
        args.description,
        args.level,
        args.threads,
        partitions=parse_numbers(args.partitions) if args.partitions else None,
    )
    if args.dry_run:
        print("\n".join(plan.summary()))
        return 0
    rep, printer = reporter(args.quiet)
    result = capture_image(plan, rep)
    if printer:
        printer.done()
    saved = result.data_bytes - result.new_bytes
    print(
        f"captured {result.name}: {human_bytes(result.data_bytes)} read in "
        f"{human_duration(result.seconds)} ({human_bytes(result.rate)}/s), "
        f"{human_bytes(result.new_bytes)} added to the repository "
        f"({human_bytes(saved)} saved by compression and dedup)"
    )
    return 0
