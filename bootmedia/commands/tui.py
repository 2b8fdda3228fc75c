"""bootmedia tui: the full-screen terminal UI (what the live system starts on its consoles)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tui",
        help="the full-screen terminal UI",
        description="Restore, capture, clone, wipe, partition and verify disks, and make a live "
        "stick, from a full-screen menu.",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="a lab of virtual disks and a sample repository; the machine's disks are never shown",
    )
    p.add_argument(
        "--demo-dir",
        type=Path,
        help="where the demo lab lives (default ~/.cache/bootmedia/demo-lab)",
    )
    p.add_argument("--reset", action="store_true", help="with --demo: rebuild the lab from scratch")
    p.add_argument(
        "--repo", type=Path, action="append", default=[], help="also offer this repository"
    )
    p.set_defaults(func=run_tui)


def run_tui(args: argparse.Namespace) -> int:
    # Textual is imported here, never at import time: bootmedia's core works without it.
    from app.app import BootmediaApp
    from app.session import Session

    log_path = _log_path()
    lab = None
    if args.demo:
        from bootmedia.demo import create_lab

        lab = create_lab(args.demo_dir, fresh=args.reset)
    session = Session(
        log_path=log_path,
        lab=lab,
        extra_repos=list(args.repo),
        # Only the live system runs unattended jobs; a developer's machine never does.
        check_unattended=lab is None and os.environ.get("BOOTMEDIA_LIVE") == "1",
    )
    app = BootmediaApp(session)  # it leaves on SIGTERM the way it does on Ctrl+Q
    try:
        app.run()
    finally:
        if lab is not None:
            lab.close()
    return app.return_code or 0


def _log_path() -> Path:
    for handler in logging.getLogger("bootmedia").handlers:
        name = getattr(handler, "baseFilename", None)
        if name:
            return Path(name)
    return Path("bootmedia.log")
