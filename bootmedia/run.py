"""The one way bootmedia runs an external program."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from typing import IO

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
    session: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (a list, never a shell string) with LANG=C; raise ToolError on failure.

    stdin is /dev/null unless input is given, so a tool that wants to prompt fails instead of
    hanging a batch job forever.

    daemon: the program leaves a child running in the background that keeps its stdout and
    stderr (sshfs, whose ssh session outlives it). They are captured in temporary files instead
    of pipes, so waiting for the program does not wait for the child's end.
    session: the program (a technician's script) runs in a session of its own, and whatever it
    left running in the background ('daemon &') is killed when it ends: such a child would hold
    its output open and keep a restored filesystem busy. Its stdout and stderr go to one file,
    interleaved as written, returned as stdout; a timeout's ToolError ends with their tail.
    env: variables added to the environment (never secrets themselves: the log names them).
    """
    log.info("+ %s%s", "".join(f"{k}={v} " for k, v in (env or {}).items()), " ".join(argv))
    _refuse_in_unit_tests(argv)
    try:
        if daemon:
            proc = _run_daemon(argv, input, timeout, _env(env))
        elif session:
            proc = _run_session(argv, input, timeout, _env(env))
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


def _run_session(
    argv: list[str], input: bytes | None, timeout: float | None, env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        rc: int | None = None
        try:
            if input is not None:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(input)
                proc.stdin.close()
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # its background children too, however we leave (Ctrl-C, SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.seek(0)
        output = out.read()
    if rc is None:
        raise ToolError(
            argv, -1, output.decode(errors="replace") + f"\ntimed out after {timeout} s"
        )
    return subprocess.CompletedProcess(argv, rc, output, b"")


def run_cleanup(argv: list[str], timeout: float | None = 60) -> bool:
    """One step of a cleanup that must go on when it fails (detaching a loop device, a lazy
    unmount of what may be gone already): the failure does not stop the cleanup, but it is
    logged as a warning with the command, its exit status and its stderr, never swallowed.
    True when it succeeded."""
    try:
        run(argv, timeout=timeout)
    except ToolError as exc:
        log.warning("cleanup step failed: %s", exc)
        return False
    except BootmediaError as exc:  # not installed
        log.warning("cleanup step not run: %s", exc)
        return False
    return True


def run_pipe(producer: list[str], consumer: list[str]) -> None:
    """Run `producer | consumer` (lists, never a shell); both must succeed. A consumer that
    exits 0 on an empty stream (xfsrestore does) must not hide a producer that failed, so each
    one's status is checked and the failing one's stderr reported."""
    log.info("+ %s | %s", " ".join(producer), " ".join(consumer))
    _refuse_in_unit_tests(producer)
    with tempfile.TemporaryFile() as err_a, tempfile.TemporaryFile() as err_b:
        try:
            a = subprocess.Popen(
                producer, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_a,
                env=_env(),
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise BootmediaError(f"{producer[0]} is not installed") from exc
        try:
            b = subprocess.Popen(
                consumer, stdin=a.stdout, stdout=subprocess.DEVNULL, stderr=err_b, env=_env()
            )
        except FileNotFoundError as exc:
            a.kill()
            a.wait()
            raise BootmediaError(f"{consumer[0]} is not installed") from exc
        finally:
            assert a.stdout is not None
            a.stdout.close()  # the consumer holds the pipe now; a dead consumer stops a (SIGPIPE)
        try:
            b.wait()
            a.wait()
        except BaseException:  # Ctrl-C, SIGTERM: stop both, then unwind
            for p in (a, b):
                p.kill()
                p.wait()
            raise
        for proc, argv, err in ((a, producer, err_a), (b, consumer, err_b)):
            if proc.returncode != 0:
                err.seek(0)
                raise ToolError(argv, proc.returncode, err.read().decode(errors="replace"))


def spawn(
    argv: list[str], output: IO[bytes], *, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start argv (a list, with LANG=C) in the background: a server whose life the caller
    manages (waits for, signals, stops). stdin is /dev/null; stdout and stderr go to `output`.
    own_session: a Ctrl-C on the job's terminal does not reach it."""
    log.info("+ %s &", " ".join(argv))
    _refuse_in_unit_tests(argv)
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            env=_env(),
            start_new_session=own_session,
        )
    except FileNotFoundError as exc:
        raise BootmediaError(f"{argv[0]} is not installed") from exc


def run_text(argv: list[str], **kwargs: object) -> str:
    return run(argv, **kwargs).stdout.decode(errors="replace")  # type: ignore[arg-type]


class Streaming:
    """A program that runs while the caller feeds its stdin or reads its stdout as a stream
    (udp-sender, udp-receiver), made by stream(). A thread reads its stderr line by line (a
    pipe nobody reads would stall the program once full): each line goes to the log and to
    on_line, and the last ones are kept for the error. finish() waits for the end and raises
    ToolError, with the command and the tail of stderr, like run().
    """

    def __init__(
        self,
        argv: list[str],
        proc: subprocess.Popen[bytes],
        on_line: Callable[[str], None] | None,
        ignore: re.Pattern[str] | None,
    ) -> None:
        self.argv = argv
        self.proc = proc
        self._on_line = on_line
        self._ignore = ignore
        self._lines: collections.deque[str] = collections.deque(maxlen=50)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None, "stream(stdin=True) gives a stdin"
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None, "stream(stdout=True) gives a stdout"
        return self.proc.stdout

    @property
    def lines(self) -> list[str]:
        """stderr's last lines (without the ignored ones), oldest first."""
        return list(self._lines)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        name = os.path.basename(self.argv[0])
        for raw in self.proc.stderr:
            # Progress counters end in \r, not \n: one read may hold many of them.
            for line in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                line = line.strip()
                if not line or (self._ignore is not None and self._ignore.search(line)):
                    continue
                self._lines.append(line)
                log.info("%s: %s", name, line)
                if self._on_line is not None:
                    self._on_line(line)

    def finish(self, timeout: float | None = 30, check: Callable[[int], bool] | bool = True) -> int:
        """Close our ends of its pipes (end of input for a stdin, "stop" for a stdout), wait up to
        timeout seconds for its end (then kill it), and return its exit status. A status other
        than 0 raises ToolError, unless check is False or check(status) says it is expected."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # BrokenPipeError: it has ended already
                    pipe.close()
        killed = False
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            killed = True
        self._reader.join(10)
        if killed:
            raise ToolError(self.argv, rc, self.stderr() + f"\nstill running after {timeout} s")
        expected = check(rc) if callable(check) else not check
        if rc != 0 and not expected:
            raise ToolError(self.argv, rc, self.stderr())
        if rc != 0:
            log.debug("exit %d: %s", rc, " | ".join(self.lines[-3:]))
        return rc

    def kill(self) -> None:
        """End it now (the caller failed): no error of its own is raised."""
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self.proc.wait()
        self._reader.join(10)

    def stderr(self) -> str:
        return "\n".join(self._lines)


def stream(
    argv: list[str],
    *,
    stdin: bool = False,
    stdout: bool = False,
    on_line: Callable[[str], None] | None = None,
    ignore: re.Pattern[str] | None = None,
    env: dict[str, str] | None = None,
) -> Streaming:
    """Start argv (a list, with LANG=C) with its stdin and/or stdout as pipes the caller
    streams through; stdin is /dev/null otherwise, stdout discarded. Lines of stderr matching
    ignore (progress counters) are neither logged nor kept. End it with finish() or kill()."""
    log.info("+ %s%s", "".join(f"{k}={v} " for k, v in (env or {}).items()), " ".join(argv))
    _refuse_in_unit_tests(argv)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_env(env),
        )
    except FileNotFoundError as exc:
        raise BootmediaError(f"{argv[0]} is not installed") from exc
    return Streaming(argv, proc, on_line, ignore)
