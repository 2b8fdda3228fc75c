from __future__ import annotations

import argparse
import socket
from pathlib import Path

from bootmedia.cast.receiver import ReceiveResult, receive, write_report
from bootmedia.cast.sender import DEFAULT_PORTBASE, DEFAULT_RDV
from bootmedia.commands._common import reporter
from bootmedia.disks import check_confirm, find_disk
from bootmedia.disks.files import file_disk
from bootmedia.errors import BootmediaError
from bootmedia.progress import human_bytes, human_duration


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "receive",
        help="join a multicast session (bootmedia cast) and restore DISK from it",
        description="Restore DISK from the multicast stream of 'bootmedia cast'. Chunks the "
        "stream missed (losses, a late start) come from --fallback REPO; everything written is "
        "read back and checked. Everything on DISK is overwritten.",
    )
    p.add_argument("disk", help="the target disk, or an image file")
    p.add_argument("--fallback", metavar="REPO", help="repository for missing chunks (URL or dir)")
    p.add_argument("--image", help="the image expected (needed to restore from the fallback alone)")
    p.add_argument(
        "--confirm",
        help="the target's serial, its last 4 characters or by-id name (an image file: its name)",
    )
    p.add_argument("--interface", help="network interface (default: udpcast's choice)")
    p.add_argument(
        "--rdv", default=DEFAULT_RDV, help=f"multicast rendezvous (default {DEFAULT_RDV})"
    )
    p.add_argument("--portbase", type=int, default=DEFAULT_PORTBASE, help="UDP ports (even)")
    p.add_argument("--start-timeout", type=int, default=600, metavar="S", help="wait for a session")
    p.add_argument("--receive-timeout", type=int, default=30, metavar="S", help="silence = lost")
    p.add_argument("--report", metavar="DIR", help="also write the result here (cast --results)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Every write to something that exists is confirmed alike: a disk by its serial, an
    # image file by its name (as apply does).
    target = Path(args.disk)
    disk = None
    if target.is_file():
        disk = file_disk(target)
    elif target.exists():
        disk = find_disk(args.disk)
    if disk is not None:
        check_confirm(disk, args.confirm, "overwrite")
    rep, printer = reporter(args.quiet)
    report = Path(args.report) if args.report else None
    if report is not None and not report.is_dir():
        raise BootmediaError(f"--report {args.report}: not a directory")
    try:
        result = receive(
            args.disk,
            fallback=args.fallback,
            fallback_label=getattr(args, "fallback_label", None),
            image=args.image,
            interface=args.interface,
            rdv=args.rdv,
            portbase=args.portbase,
            start_timeout=args.start_timeout,
            receive_timeout=args.receive_timeout,
            reporter=rep,
        )
    except BootmediaError as exc:
        if report is not None:
            failed = ReceiveResult(
                image=getattr(exc, "image", "") or args.image or "",
                target=args.disk,
                address=getattr(exc, "address", "") or socket.gethostname(),
                ok=False,
                detail=str(exc),
            )
            write_report(report, failed, args.disk)
        raise
    finally:
        if printer:
            printer.done()
    if report is not None:
        write_report(report, result, args.disk)
    print(
        f"received {result.image} onto {result.target}: {human_bytes(result.written)} in "
        f"{human_duration(result.seconds)}; {result.detail}"
    )
    for note in result.notes:
        print(f"note: {note}")
    return 0
