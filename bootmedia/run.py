"""The one way bootmedia runs an external program."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile

from bootmedia.errors import BootmediaError, ToolError

log = logging.getLogger("bootmedia.run")

# sbin is not always on a user's PATH, but every disk tool lives there.
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env["LANG"] = env["LC_ALL"] = "C"
    path = env.get("PATH", "").split(":")
    env["PATH"] = ":".join(path + [p for p in _EXTRA_PATH if p not in path])
    return env


def which(tool: str) -> str | None:
    return shutil.which(tool, path=_env()["PATH"])


def require_tools(*tools: str) -> None:
    """Check every tool a job needs before its first write, so a job never stops half-way."""
    missing = [t for t in tools if which(t) is None]
    if missing:
        raise BootmediaError(f"missing tools: {', '.join(missing)} (install them and try again)")


class ToolsDisabledError(RuntimeError):
    """Not a BootmediaError on purpose: no job may catch it and carry on."""


def _refuse_in_unit_tests(argv: list[str]) -> None:
    # The test suite's guard (tests/conftest.py) sets this for tests that did not ask for real
    # tools, so a bootmedia started in a child process by such a test cannot run them either.
    test = os.environ.get("BOOTMEDIA_NO_TOOLS")
    if test:
        raise ToolsDisabledError(f"{argv[0]}: external tools are disabled in this test ({test})")


def run(
    argv: list[str],
    *,
    input: bytes | None = None,
    check: bool = True,
    timeout: float | None = None,
    daemon: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (a list, never a shell string) with LANG=C; raise ToolError on failure.

    stdin is /dev/null unless input is given, so a tool that wants to prompt fails instead of
    hanging a batch job forever.

    daemon: the program leaves a child running in the background that keeps its stdout and
    stderr (sshfs, whose ssh session outlives it). They are captured in temporary files instead
    of pipes, so waiting for the program does not wait for the child's end.
    env: variables added to the environment (never secrets themselves: the log names them).
    """
    log.info("+ %s%s", "".join(f"{k}={v} " for k, v in (env or {}).items()), " ".join(argv))
    _refuse_in_unit_tests(argv)
    try:
        if daemon:
            proc = _run_daemon(argv, input, timeout, _env(env))
        else:
            proc = subprocess.run(
                argv,
                input=input,
                stdin=None if input is not None else subprocess.DEVNULL,
                capture_output=True,
                env=_env(env),
                timeout=timeout,
                check=False,
            )
    except FileNotFoundError as exc:
        raise BootmediaError(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(argv, -1, f"timed out after {timeout} s") from exc
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")
        if check:
            raise ToolError(argv, proc.returncode, stderr or proc.stdout.decode(errors="replace"))
        log.debug("exit %d: %s", proc.returncode, stderr.strip())
    return proc


def _run_daemon(
    argv: list[str], input: bytes | None, timeout: float | None, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            timeout=timeout,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, done.returncode, out.read(), err.read())


def run_text(argv: list[str], **kwargs: object) -> str:
    return run(argv, **kwargs).stdout.decode(errors="replace")  # type: ignore[arg-type]
