"""bootmedia repos: the repositories the TUI would offer, found the same way."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bootmedia.errors import BootmediaError
from bootmedia.repo.discover import find_repositories
from bootmedia.repo.store import Repository


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "repos",
        help="list the image repositories on mounted filesystems",
        description="Look for repositories on every mounted filesystem (the stick's data "
        "partition first; at its root or in bootmedia/, images/, bootmedia/images/), as the "
        "TUI does, plus any PATH given.",
    )
    p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="also look here")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows: list[dict[str, object]] = []
    for path in find_repositories(args.paths):
        try:
            with Repository.open(path) as repo:
                images, unreadable = repo.scan_images()
            row = {"path": str(path), "images": [m.name for m in images], "error": ""}
            rows.append({**row, "unreadable": len(unreadable)})
        except BootmediaError as exc:
            rows.append({"path": str(path), "images": [], "error": str(exc), "unreadable": 0})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no repositories found")
    for r in rows:
        names = r["images"]
        assert isinstance(names, list)
        state = f"error: {r['error']}" if r["error"] else f"{len(names)} images"
        print(f"{r['path']}  ({state})")
    return 0
