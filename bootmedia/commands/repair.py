from __future__ import annotations

import argparse

from bootmedia.progress import human_bytes
from bootmedia.repo.gc import collect
from bootmedia.repo.store import Repository


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "repair",
        help="rebuild a repository's index from its packs",
        description="Throw away index.sqlite and rebuild it by reading every pack (each chunk "
        "is decompressed and hashed). With --gc, also collect unused chunks.",
    )
    p.add_argument("repo")
    p.add_argument("--gc", action="store_true", help="also collect unused chunks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    index = Path(args.repo) / "index.sqlite"
    with Repository.open(args.repo, write=True) as repo:
        repo._db.close()
        index.unlink(missing_ok=True)
        repo._db = repo._open_index()
        repo.sync_index()
        (count,) = repo._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        print(f"index rebuilt: {count} chunks in {human_bytes(repo.stored_bytes())} of packs")
        if args.gc:
            gc = collect(repo)
            print(f"reclaimed {human_bytes(gc.bytes_freed)}")
    return 0
