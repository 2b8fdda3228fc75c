"""The bootmedia command line. Each subcommand lives in bootmedia/commands/<name>.py.

Every command module exposes `register(subparsers)`, which adds its parser and sets
`func=<callable taking the parsed args and returning an exit code>`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from bootmedia import __version__
from bootmedia.errors import BootmediaError, Cancelled
from bootmedia.log import setup_logging
from bootmedia.text import printable

log = logging.getLogger("bootmedia.cli")

# Order is the order --help lists them in.
COMMANDS = (
    "capture",
    "apply",
    "customize",
    "verify",
    "clone",
    "images",
    "info",
    "delete",
    "repos",
    "repair",
    "disks",
    "wipe",
    "partition",
    "cast",
    "receive",
    "tui",
    "make_usb",  # the module; the command is make-usb
)


_VALUED = ("--log-dir", "--credentials")  # the global options that take a value


def _named_command(argv: Sequence[str]) -> str | None:
    """The command module argv names, if any, found the way argparse will: the first word
    that is not a global option or its value."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word.startswith("-"):  # argparse takes a prefix of a long option too
            skip = len(word) > 2 and "=" not in word and any(v.startswith(word) for v in _VALUED)
        else:
            module = word.replace("-", "_")
            return module if module in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. With argv naming a command, only that command's module is imported (a
    command's start-up does not pay for every other command's imports); else all of them,
    for --help and for argparse's own message about a command that does not exist."""
    parser = argparse.ArgumentParser(
        prog="bootmedia",
        description="Capture, restore, verify and wipe disks. Images live in a deduplicating "
        "repository (a directory). Run 'bootmedia COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"bootmedia {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log to the screen")
    parser.add_argument("--log-dir", help="where bootmedia.log goes (default /var/log/bootmedia)")
    parser.add_argument(
        "--credentials",
        metavar="FILE",
        help="passwords, keys and CAs for smb://, ssh://, https:// repositories (default: "
        "bootmedia-credentials.toml on the stick; see docs/NETWORK.md)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    named = _named_command(argv) if argv is not None else None
    for name in (named,) if named else COMMANDS:
        try:
            module = importlib.import_module(f"bootmedia.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bootmedia.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    from pathlib import Path

    log_path = setup_logging(args.verbose, Path(args.log_dir) if args.log_dir else None)
    from bootmedia.net.url import redact

    log.info("bootmedia %s: %s", __version__, redact(" ".join(sys.argv)))
    try:
        from bootmedia.net.attach import network_repos

        with network_repos(args):
            return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"\nbootmedia: cancelled: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print(f"\nbootmedia: cancelled ({getattr(exc, 'signame', 'Ctrl-C')})", file=sys.stderr)
        return 130
    except BootmediaError as exc:
        log.error("%s", exc)
        print(f"bootmedia: error: {printable(exc, 2000)}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug: one line on screen, the traceback in the log
        log.exception("internal error")
        print(
            f"bootmedia: internal error: {printable(repr(exc), 500)} (traceback in {log_path})",
            file=sys.stderr,
        )
        return 70
