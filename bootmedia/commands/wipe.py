"""bootmedia wipe DISK --method M --confirm SERIAL: erase a disk, read it back, write a report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bootmedia.disks import check_confirm, check_writable
from bootmedia.disks.files import find_disk_or_file
from bootmedia.errors import UsageError
from bootmedia.log import default_log_dir
from bootmedia.progress import Progress, Reporter, human_bytes, human_duration
from bootmedia.wipe import METHODS, available_methods, plan_wipe, wipe_disk


def register(sub: Any) -> None:
    p = sub.add_parser(
        "wipe",
        help="erase a disk and keep a report",
        description="Erase a disk with a method the device supports, read a sample back to "
        "verify, and write a report (JSON and text). Methods: " + ", ".join(METHODS) + ".",
    )
    p.add_argument("disk", help="/dev/sdX, /dev/disk/by-id/... or loopN")
    p.add_argument("--method", "-m", metavar="METHOD", help="one of: " + ", ".join(METHODS))
    p.add_argument(
        "--list-methods",
        action="store_true",
        help="show which methods this disk supports and why not",
    )
    p.add_argument("--secure", action="store_true", help="discard: secure discard (eMMC/SD)")
    p.add_argument(
        "--confirm",
        metavar="ID",
        help="the disk's serial, its last 4 characters or a by-id name (the kernel name, e.g. "
        "loop3, only for a disk without a serial; an image file's name)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--report-dir", help="where reports go (default: the log directory)")
    p.add_argument("--samples", type=int, default=256, help="random blocks read back (default 256)")
    p.add_argument("--repo", help="refuse the disk that holds this image repository")
    p.add_argument("--json", action="store_true", help="print the plan or the report as JSON")
    p.set_defaults(func=main)


def print_progress(stream: Any = None) -> Any:
    """A Progress callback for the terminal: one updating line, the step trail as it changes."""
    stream = stream or sys.stderr  # looked up now: sys.stderr may have been replaced since import
    last_step = [""]

    def show(p: Progress) -> None:
        if p.step != last_step[0] and p.step:
            stream.write(f"\r\033[K{p.step}\n" if stream.isatty() else f"{p.step}\n")
            last_step[0] = p.step
        if p.message and not stream.isatty():
            stream.write(f"  {p.message}\n")
        if stream.isatty():
            line = f"  {p.message}" if p.message else ""
            if p.total:
                line = (
                    f"  {p.fraction:6.1%}  {human_bytes(p.done)} of {human_bytes(p.total)}  "
                    f"{human_bytes(p.rate)}/s  ETA {human_duration(p.eta)}"
                )
            stream.write(f"\r\033[K{line}")
        stream.flush()

    return show


def main(args: argparse.Namespace) -> int:
    disk = find_disk_or_file(args.disk)
    if args.list_methods:
        infos = available_methods(disk)
        if args.json:
            print(
                json.dumps(
                    {"disk": disk.to_dict(), "methods": [i.to_dict() for i in infos]}, indent=2
                )
            )
            return 0
        print(disk.label())
        for info in infos:
            state = "available  " if info.available else "unavailable"
            print(f"  {info.name:17} {state}  {info.reason or info.description}")
        return 0
    if not args.method:
        raise UsageError("choose a wipe method with --method (see --list-methods)")
    plan = plan_wipe(disk, args.method, secure=args.secure, samples=args.samples)
    if args.dry_run:
        print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.render())
        return 0
    check_writable(disk, repo_path=args.repo)  # a refused disk says so before asking to confirm
    check_confirm(disk, args.confirm, "erase")
    print(plan.render(), file=sys.stderr)
    report = wipe_disk(plan, Reporter(print_progress()), repo_path=args.repo)
    sys.stderr.write("\n")
    directory = Path(args.report_dir or args.log_dir or default_log_dir())
    json_path, text_path = report.write(directory)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    print(f"report: {text_path} and {json_path}", file=sys.stderr)
    if not report.ok:
        why = report.error or report.verification.get("summary", "")
        print(f"bootmedia: error: wipe {report.status}: {why}", file=sys.stderr)
        return 1
    return 0
