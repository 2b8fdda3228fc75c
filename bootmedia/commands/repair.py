from __future__ import annotations

import argparse

from bootmedia.errors import ImageError
from bootmedia.progress import human_bytes
from bootmedia.repo.gc import collect
from bootmedia.repo.repair import repair_v1, repair_v2
from bootmedia.repo.store import Repository
from bootmedia.text import printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "repair",
        help="rebuild a repository's index from its packs",
        description="Read every pack (each record decompressed and hashed), rebuild the index "
        "from what is really there, and name every damaged record and the images that lose "
        "data (exit 4 when any). With --gc, also collect unused chunks (a pack with damage "
        "is never collected).",
    )
    p.add_argument("repo")
    p.add_argument("--gc", action="store_true", help="also collect unused chunks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Repository.open(args.repo, write=True, job="repair") as repo:
        report = repair_v2(repo) if repo.version == 2 else repair_v1(repo)
        for line in report.lines():
            print(printable(line))
        ok = report.ok
        if args.gc:
            gc = collect(repo)
            print(f"reclaimed {human_bytes(gc.bytes_freed)}")
    if not ok:
        raise ImageError("repository is damaged: the images named above cannot be fully restored")
    return 0
