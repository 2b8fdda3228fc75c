from __future__ import annotations

import argparse
import sys

from bootmedia.commands._common import reporter
from bootmedia.progress import human_bytes
from bootmedia.verify import plan_verify, verify_image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="check an image (or every image) in a repository",
        description="Decompress and hash every chunk the image uses (every image's, when none is "
        "named). Exit 0 means intact; otherwise each damaged image, partition and offset is "
        "listed.",
    )
    p.add_argument("repo")
    p.add_argument("image", nargs="?", help="one image (default: all)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rep, printer = reporter(args.quiet)
    result = verify_image(plan_verify(args.repo, args.image), rep)
    if printer:
        printer.done()
    names = ", ".join(result.images) or "no images"
    if result.ok:
        print(f"intact: {names} ({result.chunks} chunks, {human_bytes(result.bytes)} checked)")
        return 0
    for d in result.damaged:
        print(f"DAMAGED {d}", file=sys.stderr)
    more = result.damaged_count - len(result.damaged)
    if more > 0:
        print(f"... and {more} more damaged extents", file=sys.stderr)
    print(f"bootmedia: error: {result.damaged_count} damaged extents in {names}", file=sys.stderr)
    return 4
