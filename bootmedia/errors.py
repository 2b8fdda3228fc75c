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


class Stopped(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGINT reached a job that asked for it (`stop_on_signals`). Raised in
    the main thread like Ctrl-C's KeyboardInterrupt, so every cleanup on the way out runs (image
    views unmounted, loop devices detached) and the job can say what state the target is in."""

    def __init__(self, signame: str) -> None:
        super().__init__(signame)
        self.signame = signame


def stop_on_signals() -> None:
    """From now on SIGTERM, SIGHUP and SIGINT raise Stopped in the main thread, once: further
    signals are ignored, so the cleanup they started is not cut short."""
    import signal

    def handler(signum: int, frame: object) -> None:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        raise Stopped(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, handler)


def stopped(exc: KeyboardInterrupt, state: str) -> Cancelled:
    """The one-line error for a job stopped by a signal or Ctrl-C, naming the target's state."""
    why = exc.signame if isinstance(exc, Stopped) else "Ctrl-C"
    return Cancelled(f"stopped by {why}; {state}")
