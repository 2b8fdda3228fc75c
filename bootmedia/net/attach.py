"""The command line's side of network repositories: every REPO argument may be a URL."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from collections.abc import Iterator
from pathlib import Path

from bootmedia.errors import UsageError
from bootmedia.net.mount import attach
from bootmedia.net.url import RepoURL, is_url, parse_url

REPO_ARGS = ("repo", "fallback")  # argparse dests that name a repository
DIR_ARGS = ("results", "report")  # ... and directories for results, on a share or not


def tty_prompt(url: RepoURL, what: str) -> str | None:
    """Ask on the terminal (never echoed, never logged); None when there is no terminal."""
    if not sys.stdin.isatty():
        return None
    return getpass.getpass(f"{url.key}: {what}: ")


@contextlib.contextmanager
def network_repos(args: argparse.Namespace) -> Iterator[None]:
    """Mount the shares the command's repository arguments name, for the command's life."""
    creds = Path(args.credentials) if getattr(args, "credentials", None) else None
    with contextlib.ExitStack() as stack:
        for dest in REPO_ARGS + DIR_ARGS:
            value = getattr(args, dest, None)
            if isinstance(value, str) and is_url(value):
                if dest in DIR_ARGS and not parse_url(value).mounted:
                    raise UsageError(f"--{dest} {value}: results need a writable share or dir")
                local = stack.enter_context(
                    attach(value, credentials_file=creds, prompt=tty_prompt)
                )
                setattr(args, dest, local)
                setattr(args, f"{dest}_label", value)  # what the technician named
        yield
