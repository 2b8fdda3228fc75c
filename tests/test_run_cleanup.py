"""Best-effort cleanup steps (bootmedia.run.run_cleanup) go on when they fail, but their failure is
logged as a warning with the command and its stderr: before, a busy view's unmount, a loop device
that would not detach, or the view server's own cleanup after its job died failed in silence."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import pytest

from bootmedia.capture import capture_image, plan_capture
from bootmedia.image.view import ImageArea, mounted_view
from bootmedia.run import run_cleanup
from tests import disklayouts as D

MiB = 1 << 20


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.root
def test_a_failed_step_is_logged_with_its_command_and_stderr(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "bootmedia")
    gone = tmp_path / "never-mounted"
    gone.mkdir()
    assert run_cleanup(["umount", "-l", str(gone)]) is False
    said = _warnings(caplog)
    assert len(said) == 1, said
    assert said[0].startswith(f"cleanup step failed: umount -l {gone} failed (exit 32): "), said
    assert "not mounted" in said[0], said
    assert run_cleanup(["true"]) is True and len(_warnings(caplog)) == 1


@pytest.mark.real_tools
def test_a_missing_tool_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert run_cleanup([str(tmp_path / "no-such-tool"), "-d"]) is False
    assert _warnings(caplog) == [
        f"cleanup step not run: {tmp_path / 'no-such-tool'} is not installed"
    ]


@pytest.mark.root
def test_a_busy_view_is_let_go_lazily_and_the_refusal_is_logged(
    loopdev, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file held open on the view as it closes: `fusermount -u` refuses (busy), which is now
    a warning with its stderr, and the lazy unmount after it lets the view go."""
    caplog.set_level(logging.INFO, "bootmedia")
    src = loopdev(64 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, fill_mib=4),))
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    fd = -1
    closer = None
    with mounted_view(ImageArea(repo, "img", "p1"), tmp_path / "w", 4 * MiB) as view:
        fd = os.open(view.path, os.O_RDONLY)
        server, mount = view.proc, view.mount
        # Let go of it soon after the view starts closing: the lazy unmount then completes.
        closer = threading.Timer(1.5, os.close, (fd,))
        closer.start()
    closer.join()
    said = [w for w in _warnings(caplog) if " -u " in w]
    assert len(said) == 1, _warnings(caplog)
    assert f"-u {mount} failed (exit 1): " in said[0] and "busy" in said[0], said
    assert server.poll() is not None, "the view server is gone"
    assert not os.path.ismount(mount)
    deadline = time.monotonic() + 5
    while (tmp_path / "w").exists() and list((tmp_path / "w").glob("overlay-*")):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_helpers_log_file_that_cannot_be_opened_is_no_failure(tmp_path: Path) -> None:
    """The view server logs into its job's file; a job whose log directory is gone (a test's
    tmp_path, an unplugged stick) still gets its view (the server died at start before)."""
    from bootmedia.log import log_to_file

    root = logging.getLogger("bootmedia")
    before = list(root.handlers)
    assert log_to_file(str(tmp_path / "gone" / "bootmedia.log")) is False
    assert root.handlers == before
    assert log_to_file(str(tmp_path / "bootmedia.log")) is True
    try:
        logging.getLogger("bootmedia.view").warning("cleanup step failed: x")
        assert "cleanup step failed: x" in (tmp_path / "bootmedia.log").read_text()
    finally:
        for handler in set(root.handlers) - set(before):
            root.removeHandler(handler)
            handler.close()
