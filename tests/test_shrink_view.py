"""The image view (FUSE + overlay) and shrinking through it, on real loop devices and real tools."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture
from bootmedia.image.view import BLOCK, ImageArea, Overlay, mounted_view
from bootmedia.layout.shrink import Shrunk, copy_prepared, prepare_shrink
from bootmedia.progress import Reporter
from bootmedia.repo.store import Repository
from tests import disklayouts as D

MiB = 1 << 20
pytestmark = pytest.mark.root


def test_overlay_is_bounded(tmp_path: Path) -> None:
    ov = Overlay(tmp_path / "ov", 64 * BLOCK, 2 * BLOCK)
    ov.write(3, b"a" * BLOCK)
    ov.write(3, b"b" * BLOCK)  # rewriting a block it holds costs nothing more
    ov.write(9, b"c" * BLOCK)
    assert ov.used == 2 * BLOCK and ov.read(3) == b"b" * BLOCK
    with pytest.raises(OSError) as exc:
        ov.write(10, b"d" * BLOCK)
    assert exc.value.errno == errno.ENOSPC
    ov.close()
    assert not (tmp_path / "ov").exists()


@pytest.fixture
def captured(loopdev, tmp_path: Path):
    src = loopdev(1024 * MiB)
    parts = (D.Part(1, "ext4", D.LINUX, 500, 150), D.Part(2, "ntfs", D.BASIC, 0, 150))
    D.build(src, "gpt", parts)
    before = {p.number: D.sums(f"{src}p{p.number}", p.fstype) for p in parts}
    repo = tmp_path / "repo"
    capture_image(plan_capture(src, repo, "img"))
    return src, repo, before


def test_view_reads_the_image_and_keeps_it_untouched(captured, tmp_path: Path) -> None:
    src, repo, _ = captured
    with Repository.open(repo) as r:
        area = r.image("img").area("p1")
    assert area is not None
    with open(f"{src}p1", "rb") as f:
        head = f.read(4 * MiB)
    with mounted_view(ImageArea(repo, "img", "p1"), tmp_path / "w", 8 * MiB) as view:
        assert os.path.getsize(view.path) == area.size
        with open(view.path, "r+b", buffering=0) as f:
            assert f.read(4 * MiB) == head, "the view reads the captured bytes"
            f.seek(MiB + 100)
            f.write(b"written to the overlay")
            f.seek(MiB)
            assert f.read(200)[100:122] == b"written to the overlay"
            f.seek(100 * MiB)
            with pytest.raises(OSError) as exc:  # 8 MiB of overlay, no more
                for _ in range(16):
                    f.write(os.urandom(MiB))
                    os.fsync(f.fileno())
            assert exc.value.errno == errno.ENOSPC
        used = view.stats().overlay_used
        assert 0 < used <= 8 * MiB
    with (
        mounted_view(ImageArea(repo, "img", "p1"), tmp_path / "w", 8 * MiB) as view,
        open(view.path, "rb") as f,
    ):
        assert f.read(4 * MiB) == head, "a new view starts from the image again"
    assert not list((tmp_path / "w").glob("overlay-*")), "overlays are removed"


@pytest.mark.parametrize(("name", "fstype", "new_mib"), [("p1", "ext4", 320), ("p2", "ntfs", 250)])
def test_shrink_through_the_view(
    captured,
    loopdev,
    tmp_path: Path,
    name: str,
    fstype: str,
    new_mib: int,
) -> None:
    _, repo, before = captured
    with Repository.open(repo) as r:
        area = r.image("img").area(name)
    assert area is not None and area.fstype == fstype
    out = lab.make_file(tmp_path / "out.img", new_mib * MiB)
    fd = os.open(out, os.O_RDWR)
    try:
        with contextlib.ExitStack() as stack:
            prepared = prepare_shrink(
                stack, ImageArea(repo, "img", name), area, new_mib * MiB, tmp_path / "w"
            )
            assert isinstance(prepared, Shrunk) and prepared.fs_size <= new_mib * MiB
            stats = copy_prepared(prepared, fd, 0, Reporter())
    finally:
        os.close(fd)
    # Bounded and reported: the overlay never exceeds what was fixed up front, and the server's
    # memory does not grow with the partition (the chunk cache is 32 MiB).
    assert 0 < stats.overlay_used <= stats.overlay_capacity < area.size
    assert stats.server_peak_rss < 200 * MiB
    dev = loopdev(out)
    assert D.check(dev, fstype) == ""
    assert D.sums(dev, fstype) == before[area.number]
    blk = lab.run(["blkid", "-p", "-o", "value", "-s", "UUID", dev]).stdout.decode().strip()
    assert blk == area.uuid, "the filesystem keeps its UUID (NTFS: its serial)"


def _running(pid: int) -> bool:
    """Alive and not a zombie (here the orphans' new parent may reap them late)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_job_leaves_no_overlay(captured, tmp_path: Path) -> None:
    """SIGKILL the job while its view is mounted: the view's server follows it (it asked for
    SIGTERM on its parent's death), and its overlay is removed."""
    import signal
    import subprocess
    import sys
    import time

    _, repo, _ = captured
    work = tmp_path / "w"
    runtime = tmp_path / "run"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from bootmedia.image.view import ImageArea, mounted_view\n"
        f"with mounted_view(ImageArea({str(repo)!r}, 'img', 'p1'), Path({str(work)!r}), 1 << 20) as v:\n"
        "    print(v.proc.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    job = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
        env={**os.environ, "BOOTMEDIA_RUNTIME_DIR": str(runtime)},
    )
    assert job.stdout is not None
    server = int(job.stdout.readline())
    assert list(work.glob("overlay-*"))
    job.send_signal(signal.SIGKILL)
    job.wait()
    for _ in range(100):
        if not _running(server):
            break
        time.sleep(0.1)
    try:
        assert not _running(server), "the view server outlived its job"
        assert not list(work.glob("overlay-*")), "the overlay is removed"
    finally:
        for mnt in runtime.glob("*-p1-*"):
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)
