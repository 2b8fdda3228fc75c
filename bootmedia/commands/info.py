from __future__ import annotations

import argparse
import json

from bootmedia.progress import human_bytes
from bootmedia.repo.store import Repository
from bootmedia.text import printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show one image's details",
        description="Show an image's source disk, partition table and partitions.",
    )
    p.add_argument("repo")
    p.add_argument("image", help="image name or number")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with Repository.open(args.repo) as repo:
        m = repo.image(args.image)
    if args.json:
        print(json.dumps(m.to_dict(), indent=1))
        return 0
    s = m.source
    print(f"Image:       {m.name}")
    print(f"Description: {printable(m.description, 200) or '-'}")
    print(f"Created:     {printable(m.created, 40)} by {printable(m.tool, 60)}")
    print(
        f"Source:      {printable(s.model, 64) or '?'} serial {printable(s.serial, 64) or '-'}, "
        f"{human_bytes(s.size)}, "
        f"{s.logical_sector_size}/{s.physical_sector_size}-byte sectors"
    )
    print(f"Table:       {printable(m.table.label + ' ' + m.table.id, 80) if m.table else 'none'}")
    print(f"Needs:       a disk of at least {human_bytes(m.required_size)}")
    print(
        f"Stored:      {human_bytes(m.stats.data_bytes)} data in "
        f"{human_bytes(m.stats.stored_bytes)} compressed"
    )
    print(f"Digest:      {m.digest}")
    print(f"{'AREA':<11}{'FS':<8}{'SIZE':>10}{'USED':>10}{'MIN':>10}  MODE   UUID / LABEL")
    for a in m.areas:
        print(
            f"{a.name:<11}{printable(a.fstype, 8) or '-':<8}{human_bytes(a.size):>10}"
            f"{human_bytes(a.used) if a.used is not None else '-':>10}"
            f"{human_bytes(a.min_size) if a.min_size else '-':>10}  {a.mode:<6} "
            f"{printable(a.uuid, 40)} {printable(a.label, 40)}".rstrip()
        )
    return 0
