"""bootmedia.run.stream(), how udp-sender and udp-receiver run: the caller streams through the
program's stdin or stdout while a thread reads its stderr; finish() raises the usual ToolError
naming the command and its stderr."""

from __future__ import annotations

import re
import time

import pytest

from bootmedia.errors import BootmediaError, ToolError
from bootmedia.run import stream

pytestmark = pytest.mark.real_tools


def test_stdin_and_stdout_stream_and_stderr_lines_are_seen() -> None:
    seen: list[str] = []
    script = "echo 'bytes=1\rbytes=2\r' >&2; echo hello >&2; tr a-z A-Z"
    proc = stream(
        ["sh", "-c", script], stdin=True, stdout=True, on_line=seen.append,
        ignore=re.compile(r"^bytes="),
    )  # fmt: skip
    proc.stdin.write(b"abc\n")
    proc.stdin.close()
    assert proc.stdout.read() == b"ABC\n"
    assert proc.finish() == 0
    assert seen == ["hello"] and proc.lines == ["hello"]  # the counters are ignored


def test_a_failure_names_the_command_and_its_stderr() -> None:
    proc = stream(["sh", "-c", "cat >/dev/null; echo broken here >&2; exit 3"], stdin=True)
    proc.stdin.write(b"data")
    with pytest.raises(ToolError) as err:
        proc.finish()
    assert err.value.returncode == 3
    assert str(err.value) == (
        "sh -c cat >/dev/null; echo broken here >&2; exit 3 failed (exit 3): broken here"
    )


def test_an_expected_status_is_returned_and_a_signal_is_a_failure() -> None:
    proc = stream(["sh", "-c", "echo timeout >&2; exit 1"])
    assert proc.finish(check=lambda rc: rc == 1) == 1
    proc = stream(["sh", "-c", "kill -9 $$"])
    with pytest.raises(ToolError, match=r"failed \(exit -9\)"):
        proc.finish(check=lambda rc: rc == 1)


def test_a_program_that_does_not_end_is_killed_and_reported() -> None:
    proc = stream(["sh", "-c", "echo waiting >&2; exec sleep 60"], stdout=True)
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"still running after 1 s") as err:
        proc.finish(timeout=1)
    assert time.monotonic() - start < 15
    assert "waiting" in err.value.stderr


def test_a_missing_program_is_one_line() -> None:
    with pytest.raises(BootmediaError, match="udp-nothing is not installed"):
        stream(["udp-nothing"], stdin=True)
