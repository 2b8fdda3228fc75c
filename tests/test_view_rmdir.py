"""The view's cleanup of a job's scratch (image/view.py _rmdir_temp, whole=True) never deletes
through a filesystem still mounted in it (a real tmpfs)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from bootmedia.image import view
from tests.conftest import root_only

pytestmark = root_only


def test_a_scratch_with_a_mount_inside_is_left_whole() -> None:
    d = Path(tempfile.mkdtemp(prefix="bootmedia-viewtest-"))
    inner = d / "mnt"
    inner.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(inner)], check=True)
    try:
        (inner / "keep").write_text("mounted\n")
        view._rmdir_temp(d, whole=True)
        assert (inner / "keep").read_text() == "mounted\n"
    finally:
        subprocess.run(["umount", str(inner)], check=True)
    view._rmdir_temp(d, whole=True)  # nothing mounted now: it goes
    assert not d.exists()
