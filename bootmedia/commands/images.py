from __future__ import annotations

import argparse
import json
import sys

from bootmedia.progress import human_bytes
from bootmedia.repo.store import Repository
from bootmedia.text import printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "images",
        help="list the images in a repository",
        description="List images with their sizes and what dedup saved.",
    )
    p.add_argument("repo")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Repository.open(args.repo) as repo:
        images, unreadable = repo.scan_images()
        on_disk = repo.stored_bytes()
    stored_sum = sum(m.stats.stored_bytes for m in images)
    if args.json:
        out = {
            "repository": args.repo,
            "stored_bytes": on_disk,
            "dedup_saved_bytes": max(0, stored_sum - on_disk),
            "images": [
                {
                    "number": i,
                    "name": m.name,
                    "description": m.description,
                    "created": m.created,
                    "source": m.source.__dict__,
                    "logical_bytes": m.source.size,
                    "data_bytes": m.stats.data_bytes,
                    "stored_bytes": m.stats.stored_bytes,
                    "new_bytes": m.stats.new_bytes,
                    "digest": m.digest,
                }
                for i, m in enumerate(images, 1)
            ],
            "unreadable": unreadable,
        }
        print(json.dumps(out, indent=1))
        return 0
    print(f"{'#':>2}  {'NAME':<20} {'CREATED':<20} {'DISK':>9} {'DATA':>9} {'STORED':>9}  SOURCE")
    for i, m in enumerate(images, 1):
        src = " ".join(x for x in (m.source.model, m.source.serial) if x) or m.source.path
        print(
            f"{i:>2}  {m.name:<20} {printable(m.created[:19]):<20} {human_bytes(m.source.size):>9} "
            f"{human_bytes(m.stats.data_bytes):>9} {human_bytes(m.stats.stored_bytes):>9}  {printable(src, 60)}"
        )
    print(
        f"{len(images)} images; repository holds {human_bytes(on_disk)}; "
        f"dedup saved {human_bytes(max(0, stored_sum - on_disk))}"
    )
    for line in unreadable:
        print(f"warning: {printable(line, 500)}", file=sys.stderr)
    return 0
