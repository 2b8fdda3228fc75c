"""Errors a user sees as one line. Anything else is a bug and goes to the log with a traceback."""

from __future__ import annotations


class BootmediaError(Exception):
    """A failure with a message fit to show a technician as-is."""

    exit_code = 1


class UsageError(BootmediaError):
    """Bad input on the command line (missing disk, wrong --confirm, unknown layout...)."""

    exit_code = 2


class Refused(BootmediaError):
    """A safety rule refused a write: the message says which rule and why."""

    exit_code = 3


class ImageError(BootmediaError):
    """The repository or an image in it is damaged, incomplete or of an unknown version."""

    exit_code = 4


class Cancelled(BootmediaError):
    """The user cancelled the job; the target was left in the job's documented state."""

    exit_code = 130


class ToolError(BootmediaError):
    """An external program failed. Carries the command, exit status and the tail of stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:] if line.strip())
        cmd = " ".join(argv)
        super().__init__(f"{cmd} failed (exit {returncode}){': ' + tail if tail else ''}")
