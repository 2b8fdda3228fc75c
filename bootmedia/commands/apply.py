from __future__ import annotations

import argparse
import shlex

from bootmedia.apply import apply_image, check_confirmed, plan_apply
from bootmedia.commands._common import reporter
from bootmedia.commands.customize import add_options, options_from_args, wants_customize
from bootmedia.customize import customize_disk, plan_customize, precheck
from bootmedia.disks import check_confirm
from bootmedia.errors import stop_on_signals
from bootmedia.layout import parse_size
from bootmedia.layout.choose import apply_partitions, parse_numbers, plan_partitions
from bootmedia.progress import human_bytes, human_duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="restore an image onto a disk",
        description="Restore IMAGE (name or number from 'bootmedia images') from REPO onto DISK. "
        "Everything on DISK is overwritten; written data is read back and checked unless "
        "--no-verify. With --partition N --to PART, restore one partition onto an existing one.",
    )
    p.add_argument(
        "repo",
        help="the repository: a directory, or an smb://, nfs://, ssh://, http:// or https:// URL "
        "(docs/NETWORK.md)",
    )
    p.add_argument("image", help="image name or number")
    p.add_argument("disk", nargs="?", help="the target disk (not needed with --to)")
    p.add_argument(
        "--confirm",
        help="the target's serial, its last 4 characters or a by-id "
        "name (the kernel name, e.g. loop3, only for disks without a serial; an image file's "
        "name; with --to, the disk the partition is on)",
    )
    p.add_argument("--grow", action="store_true", help="grow the last partition to fill the disk")
    p.add_argument(
        "--grow-partition", type=int, metavar="N", help="grow partition N (must be last)"
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the read-back check (success is then NOT checked)",
    )
    p.add_argument("--discard", action="store_true", help="discard (TRIM) the whole target first")
    p.add_argument(
        "--check-first",
        action="store_true",
        help="decompress and hash every chunk the image needs before touching the target "
        "(a damaged image then leaves the target as it was)",
    )
    p.add_argument("--partition", type=int, metavar="N", help="restore only partition N ...")
    p.add_argument("--to", metavar="PART", help="... onto this existing partition")
    p.add_argument(
        "--layout",
        choices=("keep", "fit"),
        help="keep: the image's partition table as it is; fit: system partitions (ESP, MSR, "
        "recovery, swap) keep their size, data partitions shrink or grow to fill the target, "
        "recovery stays at the end (default: fit when the target's size differs)",
    )
    p.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="N=SIZE",
        help="partition N's new size (e.g. 3=40G), or N=rest for all the room left; repeatable",
    )
    p.add_argument(
        "--partitions",
        metavar="N,M",
        help="restore only these partitions (e.g. 2,3) onto DISK, whose partition table must "
        "already match the image's; nothing else on DISK is written",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan, write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bootmedia.errors import UsageError

    if (args.partition is None) != (args.to is None):
        raise UsageError("--partition and --to go together")
    target = args.to if args.partition is not None else args.disk
    if not target:
        raise UsageError("give the target DISK")
    if args.partitions:
        if wants_customize(args):
            raise UsageError("customize options need a whole-disk restore, not --partitions")
        return _run_partitions(args, target)
    plan = plan_apply(
        args.repo,
        args.image,
        target,
        grow=args.grow,
        grow_partition=args.grow_partition,
        verify=args.verify,
        discard=args.discard,
        partition=args.partition,
        layout=args.layout,
        sizes=dict(parse_size(s) for s in args.size),
        check_first=args.check_first,
    )
    custom = wants_customize(args)
    options = options_from_args(args, repo=args.repo, image=plan.image.name)
    if custom:
        if args.partition is not None or plan.disk is None:
            raise UsageError("customize options need a whole disk as the target")
        if not args.verify:
            raise UsageError("customize runs after a verified restore: leave out --no-verify")
        name = precheck({a.fstype for a in plan.image.areas if a.fstype}, options)
    if args.dry_run:
        print("\n".join(plan.summary()))
        if custom:
            print(
                "Then customize: " + (f"name '{name}'; " if name else "") + "see "
                "'bootmedia customize --dry-run' after the restore for every change"
            )
        print(f"Command: {shlex.join(plan.command() + (options.argv() if custom else []))}")
        return 0
    check_confirmed(plan, args.confirm)
    rep, printer = reporter(args.quiet)
    stop_on_signals()  # SIGTERM/SIGHUP unwind the job like Ctrl-C: views unmounted, state said
    result = apply_image(plan, rep)
    if printer:
        printer.done()
    state = (
        "verified: every written byte read back and matched"
        if result.verified
        else ("written but NOT verified (--no-verify)")
    )
    who = f" (serial {result.serial})" if result.serial else ""
    print(
        f"restored {result.image} to {result.target}{who}: {human_bytes(result.written)} in "
        f"{human_duration(result.seconds)}; {state}"
    )
    for note in result.notes:
        print(f"note: {note}")
    for sh in result.shrinks:
        print(
            f"shrunk partition {sh.number} ({sh.fstype}) from {human_bytes(sh.old_size)} to "
            f"{human_bytes(sh.new_size)} in {human_duration(sh.seconds)}: overlay used "
            f"{human_bytes(sh.overlay_used)} of {human_bytes(sh.overlay_capacity)} "
            f"({sh.overlay_dir}), view server peak memory {human_bytes(sh.server_peak_rss)}"
        )
    if custom:
        cplan = plan_customize(plan.target, options)
        print("\n".join(cplan.summary()))
        rep, printer = reporter(args.quiet)
        cres = customize_disk(cplan, rep)
        if printer:
            printer.done()
        for line in cres.lines():
            print(line)
        print(f"customized {cres.disk}: {len(cres.changes)} changes, each read back")
    return 0


def _run_partitions(args: argparse.Namespace, target: str) -> int:
    from bootmedia.errors import UsageError
    from bootmedia.repo.store import Repository

    if args.partition is not None or args.layout or args.size or args.grow or args.grow_partition:
        raise UsageError("--partitions restores onto the disk's own table: no other layout option")
    with Repository.open(args.repo) as r:
        image = r.image(args.image)
    plan = plan_partitions(args.repo, image, target, parse_numbers(args.partitions), args.verify)
    if args.dry_run:
        print("\n".join(plan.summary()))
        print(f"Command: {shlex.join(plan.command())}")
        return 0
    check_confirm(plan.disk, args.confirm, "overwrite partitions of")
    rep, printer = reporter(args.quiet)
    results = apply_partitions(plan, rep)
    if printer:
        printer.done()
    for res in results:
        print(
            f"restored {res.image} onto {res.target}: {human_bytes(res.written)}; "
            + ("verified" if res.verified else "NOT verified (--no-verify)")
        )
    print(f"untouched: {', '.join(plan.untouched) or 'nothing else'}")
    return 0
