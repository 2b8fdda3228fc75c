from __future__ import annotations

import argparse
import shlex
import sys

from bootmedia.cast.sender import (
    DEFAULT_PORTBASE,
    DEFAULT_RDV,
    ReceiverState,
    cast_image,
    plan_cast,
)
from bootmedia.commands._common import reporter
from bootmedia.progress import human_bytes, human_duration
from bootmedia.text import plural


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cast",
        help="send an image to many machines at once (multicast)",
        description="Send IMAGE from REPO as one multicast stream (udpcast's udp-sender); each "
        "receiver runs 'bootmedia receive DISK --fallback REPO'. Starts when N receivers joined, "
        "or after --wait seconds with at least one. With --late-join, receivers may join at any "
        "time (udpcast's async streaming mode, no retransmission): it starts after --wait "
        "seconds, and a receiver takes the rest of the stream and fetches what it missed from "
        "its fallback.",
    )
    p.add_argument("repo", help="the repository (directory or URL)")
    p.add_argument("image", help="image name or number")
    p.add_argument("--receivers", type=int, default=1, metavar="N", help="start when N joined")
    p.add_argument("--wait", type=int, default=60, metavar="SECONDS", help="... or after this")
    p.add_argument("--interface", help="network interface (default: udpcast's choice)")
    p.add_argument(
        "--rdv", default=DEFAULT_RDV, help=f"multicast rendezvous (default {DEFAULT_RDV})"
    )
    p.add_argument("--portbase", type=int, default=DEFAULT_PORTBASE, help="UDP ports (even)")
    p.add_argument(
        "--results",
        metavar="DIR",
        help="a directory (or smb/nfs/ssh share) where receivers put their results "
        "(receive --report DIR); they are shown here",
    )
    p.add_argument(
        "--results-wait", type=int, default=600, metavar="SECONDS",
        help="how long to wait for the receivers' results after sending",
    )  # fmt: skip
    p.add_argument(
        "--max-bitrate", metavar="RATE",
        help="cap the stream, e.g. 500m (bits/s; --late-join's default: 500m)",
    )  # fmt: skip
    p.add_argument(
        "--late-join", action="store_true",
        help="let receivers join after the start (no retransmission: what a receiver misses "
        "comes from its fallback); --receivers N is then how many results to wait for",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="show the plan, send nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def _table(rows: list[ReceiverState]) -> list[str]:
    out = [f"  {'#':>3}  {'RECEIVER':<16} {'STATE':<12} DETAIL"]
    for r in rows:
        n = str(r.number) if r.number >= 0 else "-"
        out.append(f"  {n:>3}  {r.address:<16} {r.state:<12} {r.detail}".rstrip())
    return out


def run(args: argparse.Namespace) -> int:
    plan = plan_cast(
        args.repo,
        args.image,
        receivers=args.receivers,
        wait=args.wait,
        interface=args.interface,
        rdv=args.rdv,
        portbase=args.portbase,
        results=args.results,
        repo_label=getattr(args, "repo_label", None),
        max_bitrate=args.max_bitrate,
        late_join=args.late_join,
    )
    print("\n".join(plan.summary()))
    print(f"On each receiver: {plan.receive_command()}")
    if args.dry_run:
        print(f"Command: {shlex.join(plan.command())}")
        return 0
    rep, printer = reporter(args.quiet)
    last: list[str] = []

    def show(rows: list[ReceiverState]) -> None:
        nonlocal last
        lines = _table(rows)
        if lines != last:
            last = lines
            if printer:
                printer._line("\n".join(lines))
            else:
                print("\n".join(lines), file=sys.stderr)

    result = cast_image(plan, rep, show, results_wait=args.results_wait)
    if printer:
        printer.done()
    print(
        f"sent {result.image}: {human_bytes(result.sent_bytes)} once to "
        f"{plural(len(result.receivers), 'receiver')} in {human_duration(result.seconds)} "
        f"(stream {result.stream_seconds:.1f} s, sender CPU {result.cpu_seconds:.1f} s)"
    )
    print("\n".join(_table(result.receivers)))
    bad = [r for r in result.receivers if r.state in ("FAILED", "dropped")]
    waiting = [r for r in result.receivers if r.state not in ("verified", "FAILED")]
    if plan.results and waiting:
        print(f"{plural(len(waiting), 'receiver')} sent no result to {plan.results}")
    short = plan.late_join and bool(plan.results) and len(result.receivers) < plan.receivers
    if short:
        print(f"{len(result.receivers)} of {plural(plan.receivers, 'receiver')} sent a result")
    return 1 if bad or (plan.results and waiting) or short else 0
