from __future__ import annotations

import argparse
import json
from pathlib import Path

from bootmedia.commands._common import reporter
from bootmedia.customize import CustomizeOptions, customize_disk, make_rule, plan_customize
from bootmedia.customize.names import counter_dir_for
from bootmedia.disks import check_confirm
from bootmedia.errors import UsageError


def add_options(p: argparse.ArgumentParser) -> None:
    """The customize flags; `bootmedia apply` takes the same ones."""
    g = p.add_argument_group("customize (after the restore)")
    g.add_argument(
        "--hostname",
        metavar="NAME",
        help="the machine's name, or a pattern with {serial} {mac} {asset} {n} {prefix} "
        "(e.g. 'lab-{n:03}', 'pc-{serial}'); refused, never shortened, when an OS cannot take it",
    )
    g.add_argument("--names-csv", metavar="CSV", help="a CSV mapping serial or MAC to a name")
    g.add_argument("--prefix", default="", help="the value of {prefix} in a pattern")
    g.add_argument(
        "--counter-dir",
        metavar="DIR",
        help="where {n} is counted (default: REPO/counters/<pattern> for apply)",
    )
    g.add_argument(
        "--keep-machine-id",
        dest="reset_machine_id",
        action="store_false",
        help="do not empty /etc/machine-id (default: emptied, systemd makes a new one)",
    )
    g.add_argument(
        "--new-ssh-keys",
        action="store_true",
        help="remove the SSH host keys; new ones are made at first boot",
    )
    g.add_argument(
        "--boot-entry",
        action="store_true",
        help="create the UEFI NVRAM entry for the disk's loader, first in BootOrder",
    )
    g.add_argument(
        "--add-fallback",
        action="store_true",
        help="copy the OS loader to \\EFI\\BOOT\\BOOTX64.EFI when it is missing",
    )
    g.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="SCRIPT",
        help="run SCRIPT last, with BOOTMEDIA_DISK, BOOTMEDIA_PART<N>... set (repeatable)",
    )
    g.add_argument("--root", metavar="PART", help="the Linux root, when the disk holds several")
    g.add_argument(
        "--machines",
        type=int,
        default=1,
        metavar="N",
        help="how many machines get this image (a non-sysprepped Windows warns when > 1)",
    )


def options_from_args(
    args: argparse.Namespace, repo: str | Path | None = None, image: str = ""
) -> CustomizeOptions:
    counter = args.counter_dir
    if counter is None and repo is not None and args.hostname and "{n" in args.hostname:
        if "://" in str(repo):  # an http(s) repository is read-only: no claim files there
            raise UsageError(
                f"{{n}} is counted in the repository, and {repo} is read-only: give --counter-dir"
            )
        counter = str(counter_dir_for(args.hostname, repo))
    rule = make_rule(args.hostname, args.names_csv, args.prefix, counter)
    if args.machines < 1:
        raise UsageError("--machines must be at least 1")
    return CustomizeOptions(
        rule=rule,
        reset_machine_id=args.reset_machine_id,
        remove_ssh_keys=args.new_ssh_keys,
        boot_entry=args.boot_entry,
        add_fallback=args.add_fallback,
        hooks=tuple(args.hook),
        root=args.root,
        machines=args.machines,
        image=image,
    )


def wants_customize(args: argparse.Namespace) -> bool:
    return bool(
        args.hostname
        or args.names_csv
        or args.new_ssh_keys
        or args.boot_entry
        or args.add_fallback
        or args.hook
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "customize",
        help="give a restored disk its own name, machine-id and UEFI entry",
        description="Customize an already-restored DISK: hostname (Linux /etc/hostname and "
        "/etc/hosts, Windows ComputerName in the offline SYSTEM hive), a new machine-id, "
        "optionally new SSH host keys, the UEFI boot entry and hooks. Everything is checked "
        "before the first write and read back after it.",
    )
    p.add_argument("disk", help="the restored disk")
    p.add_argument("--confirm", help="the disk's serial, its last 4 characters or a by-id name")
    p.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    p.add_argument("--json", action="store_true", help="print the plan (dry run) or result as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    plan = plan_customize(args.disk, options)
    if args.dry_run:
        if args.json:
            print(json.dumps(plan.to_dict(), indent=2))
        else:
            print("\n".join(plan.summary()))
            print(f"Command: {plan.command_line()}")
        return 0
    check_confirm(plan.disk, args.confirm, "customize")
    if not args.json:
        print("\n".join(plan.summary()))
    rep, printer = reporter(args.quiet)
    result = customize_disk(plan, rep)
    if printer:
        printer.done()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            print(line)
        print(f"customized {result.disk}: {len(result.changes)} changes, each read back")
    return 0
