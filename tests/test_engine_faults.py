"""Damage, interruption and bad input: each must end in a clear error, never in success."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.disks import find_disk
from bootmedia.errors import BootmediaError, ImageError
from bootmedia.repo.store import Repository
from bootmedia.verify import verify_repo
from tests import sample
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only


@pytest.fixture(scope="module")
def captured_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A sample disk (as a file) and the repository it was captured into, made once: four
    tests damage a repository, each its own copy of this one (building and capturing the disk
    took 10-25 s per test on a loaded machine, copying it takes a fraction of that)."""
    if not lab.can_use_loop()[0]:
        pytest.skip(lab.can_use_loop()[1])
    root = tmp_path_factory.mktemp("faults-template")
    image = lab.make_file(root / "src.img", 256 * MiB)
    with lab.loop_disk(image) as src:
        sample.build(src, "gpt")
        capture_image(plan_capture(src, root / "repo", "img"))
    return image, root / "repo"


@pytest.fixture
def captured(captured_template, loopdev, tmp_path: Path) -> tuple[str, Path]:
    """The template's disk attached from a copy, and a copy of its repository: this test's own."""
    image, template_repo = captured_template
    copy = tmp_path / "src.img"
    lab.run(["cp", "--sparse=always", str(image), str(copy)])
    repo = tmp_path / "repo"
    lab.run(["cp", "-a", str(template_repo), str(repo)])
    return loopdev(copy), repo


def _packs(repo: Path) -> list[Path]:
    return sorted((repo / "packs").glob("pack-*.bmp"))


def _marked_incomplete(dev: str) -> bool:
    return find_disk(dev).incomplete_restore


def test_flipped_byte_is_caught_by_verify_and_apply(captured, loopdev) -> None:
    _, repo = captured
    pack = _packs(repo)[0]
    with Repository.open(repo) as r:
        m = r.image("img")
        area = next(a for a in m.areas if a.map and a.data_bytes > 1 * MiB)
        digest = [e.hash for e in r.extents(m, area.name) if not e.is_zero][20]
        found = r.locate(digest)
        assert found is not None
        pack = repo / "packs" / found.pack
        loc = (found.offset, found.stored_len)
    with open(pack, "r+b") as f:
        f.seek(loc[0] + loc[1] // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))
    result = verify_repo(repo)
    assert not result.ok
    assert result.damaged[0].image == "img" and result.damaged[0].offset is not None
    cli = sample.bootmedia("verify", str(repo))
    assert cli.returncode == 4 and "DAMAGED image img: p" in cli.stderr

    dst = loopdev(256 * MiB)
    with pytest.raises(ImageError, match="damaged"):
        apply_image(plan_apply(repo, "img", dst))
    assert _marked_incomplete(dst), "a failed restore must leave the target marked incomplete"
    proc = sample.bootmedia("apply", str(repo), "img", dst, "--confirm", Path(dst).name)
    assert proc.returncode != 0 and "restored" not in proc.stdout
    assert proc.stderr.count("\n") >= 1 and "Traceback" not in proc.stderr


def test_truncated_pack_is_refused_before_writing(captured, loopdev) -> None:
    _, repo = captured
    pack = _packs(repo)[0]
    os.truncate(pack, pack.stat().st_size // 2)
    dst = loopdev(256 * MiB)
    junk = os.urandom(4096)
    fd = os.open(dst, os.O_RDWR)
    os.pwrite(fd, junk, 0)
    os.close(fd)
    proc = sample.bootmedia("apply", str(repo), "img", dst, "--confirm", Path(dst).name)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    assert sample.read(dst, 0, 4096) == junk, "nothing may be written when the image is damaged"
    assert not verify_repo(repo).ok


def test_killed_capture_lists_nothing_and_retry_reuses_chunks(loopdev, tmp_path: Path) -> None:
    src = loopdev(512 * MiB)
    lab.populate_sample_disk(src, fill=0.8)
    repo = tmp_path / "repo"
    env = dict(os.environ, BOOTMEDIA_LOG_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bootmedia",
            "capture",
            src,
            str(repo),
            "--name",
            "img",
            "-q",
            "--threads",
            "1",
            "--level",
            "12",
        ],
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until some chunks are on disk, then kill it
        if (
            sum(p.stat().st_size for p in _packs(repo)) > 40 * MiB
            if (repo / "packs").exists()
            else False
        ):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored_before = sum(p.stat().st_size for p in _packs(repo))
    assert stored_before > 0
    with Repository.open(repo) as r:
        assert r.images() == []
    result = capture_image(plan_capture(src, repo, "img"))
    assert result.new_bytes < result.stored_bytes * 0.9, "the retry should reuse stored chunks"
    assert verify_repo(repo).ok
    assert not list((repo / "tmp").iterdir()), "the dead capture's scratch files are cleaned up"


def test_full_destination_fails_cleanly(loopdev, tmp_path: Path) -> None:
    src = loopdev(256 * MiB)
    sample.build(src, "gpt")
    small = loopdev(24 * MiB)
    lab.run(["mkfs.ext4", "-q", small])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lab.run(["mount", small, str(mnt)])
    try:
        proc = sample.bootmedia("capture", src, str(mnt / "repo"), "--name", "img", "-q")
        assert proc.returncode != 0
        assert "destination full" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert not (mnt / "repo" / "images" / "img").exists()
        with Repository.open(mnt / "repo") as r:
            assert r.images() == []
    finally:
        lab.run(["umount", str(mnt)])


def test_bad_input_gets_one_line(captured, loopdev, tmp_path: Path) -> None:
    src, repo = captured
    cases = []
    cases.append(sample.bootmedia("capture", "/dev/does-not-exist", str(repo), "--name", "x"))
    cases.append(
        sample.bootmedia("apply", str(repo), "img", "/dev/does-not-exist", "--confirm", "x")
    )
    cases.append(sample.bootmedia("apply", str(repo), "nope", src, "--confirm", "x"))
    small = loopdev(64 * MiB)
    cases.append(sample.bootmedia("apply", str(repo), "img", small, "--confirm", Path(small).name))
    assert "too small" in cases[-1].stderr
    # mounted target
    dst = loopdev(256 * MiB)
    sample.build(dst, "gpt", seed=5)
    mnt = tmp_path / "m"
    mnt.mkdir()
    lab.run(["mount", f"{dst}p2", str(mnt)])
    try:
        cases.append(sample.bootmedia("apply", str(repo), "img", dst, "--confirm", Path(dst).name))
        assert "mounted" in cases[-1].stderr
    finally:
        lab.run(["umount", str(mnt)])
    # capture from a disk mounted read-write names the mountpoint
    lab.run(["mount", f"{src}p2", str(mnt)])
    try:
        cases.append(sample.bootmedia("capture", src, str(repo), "--name", "again"))
        assert str(mnt) in cases[-1].stderr
    finally:
        lab.run(["umount", str(mnt)])
    # unknown format version, corrupt manifest
    manifest = repo / "images" / "img" / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "version": 99}))
    cases.append(sample.bootmedia("info", str(repo), "img"))
    assert "unknown format version 99" in cases[-1].stderr
    manifest.write_text(json.dumps(data).replace('"ext4"', '"ext3"'))
    cases.append(sample.bootmedia("apply", str(repo), "img", dst, "--confirm", Path(dst).name))
    assert "checksum mismatch" in cases[-1].stderr
    for proc in cases:
        assert proc.returncode != 0, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bootmedia: error:"), proc.stderr
        assert "success" not in proc.stdout and "restored" not in proc.stdout


def test_boot_stick_holding_the_repository_is_refused(loopdev, tmp_path: Path) -> None:
    """The disk that holds the repository can never be a restore target."""
    src = loopdev(256 * MiB)
    sample.build(src, "gpt")
    stick = loopdev(300 * MiB)
    lab.run(["sfdisk", "-q", stick], input=b"label: gpt\ntype=L\n")
    lab.rescan(stick)
    lab.run(["mkfs.ext4", "-q", f"{stick}p1"])
    mnt = tmp_path / "stick"
    mnt.mkdir()
    lab.run(["mount", f"{stick}p1", str(mnt)])
    try:
        capture_image(plan_capture(src, mnt / "repo", "img"))
        with pytest.raises(BootmediaError, match=r"repository|mounted"):
            plan_apply(mnt / "repo", "img", stick)
    finally:
        lab.run(["umount", str(mnt)])


def test_partition_mode_refuses_mounted_or_whole_disk(captured, loopdev, tmp_path: Path) -> None:
    _, repo = captured
    dst = loopdev(256 * MiB)
    sample.build(dst, "gpt", seed=3)
    with pytest.raises(BootmediaError, match="whole disk"):
        plan_apply(repo, "img", dst, partition=2)
    mnt = tmp_path / "m"
    mnt.mkdir()
    lab.run(["mount", f"{dst}p2", str(mnt)])
    try:
        with pytest.raises(BootmediaError, match="mounted"):
            plan_apply(repo, "img", f"{dst}p2", partition=2)
    finally:
        lab.run(["umount", str(mnt)])
    with pytest.raises(BootmediaError, match="too small"):
        plan_apply(repo, "img", f"{dst}p5", partition=2)
