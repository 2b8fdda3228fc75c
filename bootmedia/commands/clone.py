from __future__ import annotations

import argparse
import shlex

from bootmedia.clone import clone_disk, plan_clone
from bootmedia.commands._common import reporter
from bootmedia.disks import check_confirm
from bootmedia.errors import stop_on_signals
from bootmedia.layout import parse_size
from bootmedia.progress import human_bytes, human_duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clone",
        help="copy one disk onto another (smaller or larger), no repository",
        description="Copy the used blocks of SOURCE onto TARGET, partition by partition, "
        "with the same layouts as apply: on a smaller or larger TARGET the data partitions "
        "shrink or grow (each filesystem with its own tool, in a view of the source: SOURCE "
        "is never written; an XFS, which cannot shrink, is copied by files into a new one). Everything on TARGET is overwritten; written data is read back "
        "and checked unless --no-verify.",
    )
    p.add_argument("source", help="the disk to copy")
    p.add_argument("target", help="the disk to overwrite")
    p.add_argument(
        "--confirm",
        help="the target's serial, its last 4 characters or a by-id "
        "name (the kernel name, e.g. loop3, only for disks without a serial)",
    )
    p.add_argument(
        "--layout",
        choices=("keep", "fit"),
        help="keep: the source's table as it is; fit: system partitions keep their size, "
        "data partitions take the rest (default: fit when the sizes differ)",
    )
    p.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="N=SIZE",
        help="partition N's new size (e.g. 3=40G), or N=rest; repeatable",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the read-back check (success is then NOT checked)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan, write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    plan = plan_clone(
        args.source,
        args.target,
        layout=args.layout,
        sizes=dict(parse_size(s) for s in args.size),
        verify=args.verify,
    )
    if args.dry_run:
        print("\n".join(plan.summary()))
        print(f"Command: {shlex.join(plan.command())}")
        return 0
    check_confirm(plan.target_disk, args.confirm, "overwrite")
    rep, printer = reporter(args.quiet)
    stop_on_signals()  # SIGTERM/SIGHUP unwind the job like Ctrl-C: views unmounted, state said
    result = clone_disk(plan, rep)
    if printer:
        printer.done()
    state = (
        "verified: every written byte read back and matched"
        if result.verified
        else "written but NOT verified (--no-verify)"
    )
    print(
        f"cloned {result.source} to {result.target}: {human_bytes(result.written)} in "
        f"{human_duration(result.seconds)}; {state}"
    )
    for sh in result.shrinks:
        print(
            f"shrunk partition {sh.number} ({sh.fstype}) to {human_bytes(sh.new_size)}: overlay "
            f"used {human_bytes(sh.overlay_used)} of {human_bytes(sh.overlay_capacity)}"
        )
    return 0
