from __future__ import annotations

import argparse

from bootmedia.repo.discover import delete_image


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
    print("\n".join(delete_image(args.repo, args.image).lines()))
    return 0
