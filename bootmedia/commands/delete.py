from __future__ import annotations

import argparse

from bootmedia.errors import BootmediaError
from bootmedia.progress import human_bytes
from bootmedia.repo.gc import collect
from bootmedia.repo.store import Repository


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "delete",
        help="delete an image and reclaim its space",
        description="Unlist IMAGE, then collect chunks no other image uses.",
    )
    p.add_argument("repo")
    p.add_argument("image", help="image name or number")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Repository.open(args.repo, write=True) as repo:
        name = repo.image(args.image).name
        repo.delete_image(name)
        print(f"deleted {name}")
        try:
            gc = collect(repo)
        except BootmediaError as exc:
            print(f"note: {exc}")
            return 0
    print(
        f"reclaimed {human_bytes(gc.bytes_freed)} ({gc.packs_deleted} packs removed, "
        f"{gc.packs_rewritten} rewritten)"
    )
    return 0
