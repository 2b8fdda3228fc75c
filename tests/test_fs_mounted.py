"""fs.mounted(): an umount that fails leaves the mount point, never deletes through it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bootmedia import fs
from bootmedia.errors import BootmediaError
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only


def test_a_failed_umount_leaves_the_filesystems_files(loopdev, tmp_path: Path) -> None:
    dev = loopdev(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True)
    with fs.mounted(dev) as mnt:
        (Path(mnt) / "keep.txt").write_text("precious\n")
    busy = None
    where = ""
    with pytest.raises(BootmediaError, match="umount"), fs.mounted(dev) as mnt:
        where = mnt
        busy = open(Path(mnt) / "keep.txt")  # noqa: SIM115 - held open: umount fails (busy)
    try:
        assert Path(where, "keep.txt").read_text() == "precious\n", "deleted through the mount"
    finally:
        assert busy is not None
        busy.close()
        subprocess.run(["umount", where], check=True)
        shutil.rmtree(where)  # its lock file is still in it
    with fs.mounted(dev, read_only=True) as mnt:
        assert (Path(mnt) / "keep.txt").read_text() == "precious\n"
