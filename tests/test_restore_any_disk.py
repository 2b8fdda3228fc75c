"""Restore onto a disk that is not the image's size (issue 10), on real loop devices."""

from __future__ import annotations

import contextlib
import os
import shlex
import stat
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.apply import apply_image, plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.clone import clone_disk, plan_clone
from bootmedia.errors import BootmediaError, UsageError
from bootmedia.image.view import ImageArea
from bootmedia.layout.refile import prepare_refile
from bootmedia.repo.store import Repository
from bootmedia.table import read_table
from tests import disklayouts as D

MiB = 1 << 20
GiB = 1 << 30
pytestmark = pytest.mark.root


class Source:
    def __init__(self, dev: str, repo: Path, parts: tuple[D.Part, ...]) -> None:
        self.dev, self.repo, self.parts = dev, repo, parts
        self.sums = {
            p.number: D.sums(f"{dev}p{p.number}", p.fstype)
            for p in parts
            if p.fstype not in ("", "msr", "swap")
        }
        self.ids = D.ids(dev)
        capture_image(plan_capture(dev, repo, "img"))


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    ok, why = lab.can_use_loop()
    if not ok:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("win")
    dev = lab.attach(lab.make_file(tmp / "src.img", 4 * GiB))
    try:
        D.build(dev, "gpt", D.WINDOWS)
        yield Source(dev, tmp / "repo", D.WINDOWS)
    finally:
        lab.detach(dev)


def _check_restored(src: Source, dst: str) -> None:
    for p in src.parts:
        if p.number in src.sums:
            node = f"{dst}p{p.number}"
            assert D.check(node, p.fstype) == "", f"{p.fstype} on {node} is not clean"
            assert D.sums(node, p.fstype) == src.sums[p.number], f"files differ on {node}"
    assert D.ids(dst) == src.ids, "disk GUID, partition GUIDs and filesystem ids are kept"


def _hidden_sectors(node: str) -> int:
    with open(node, "rb") as f:
        return int.from_bytes(f.read(512)[0x1C:0x20], "little")


@pytest.mark.parametrize("size", [int(2.5 * GiB), 8 * GiB])
def test_windows_onto_smaller_and_larger(windows: Source, loopdev, size: int) -> None:
    dst = loopdev(size)
    plan = plan_apply(windows.repo, "img", dst)
    assert plan.layout is not None and plan.layout.policy == "fit"
    c3, c4 = plan.layout.change(3), plan.layout.change(4)
    assert c3.action == ("shrink" if size < 4 * GiB else "grow")
    assert c4.role == "recovery" and c4.new_size == c4.old_size and c4.moved
    text = "\n".join(plan.summary())
    assert "ntfs shrinks" in text or "ntfs grows" in text
    assert "--layout fit" in shlex.join(plan.command())
    result = apply_image(plan)
    assert result.verified
    got = read_table(dst)
    assert got is not None
    end = max(p.start + p.size for p in got.partitions) * 512
    last = max(got.partitions, key=lambda p: p.start)
    assert last.number == 4 and size - end < 2 * MiB, "recovery sits at the end of the disk"
    p3 = next(p for p in got.partitions if p.number == 3)
    assert abs(p3.size * 512 - c3.new_size) == 0
    _check_restored(windows, dst)
    # The moved recovery partition's boot sector names its new start (Windows needs that).
    assert _hidden_sectors(f"{dst}p4") == c4.new_start // 512
    if size < 4 * GiB:
        (sh,) = result.shrinks
        assert sh.number == 3 and 0 < sh.overlay_used <= sh.overlay_capacity
        print(f"overlay used {sh.overlay_used} of {sh.overlay_capacity}, rss {sh.server_peak_rss}")


def test_too_small_is_refused_before_writing(windows: Source, loopdev) -> None:
    dst = loopdev(1200 * MiB)
    with open(dst, "r+b") as f:
        f.write(b"OLD DATA" * 64)
    with pytest.raises(
        UsageError, match=r"target too small.*short by .*partition 3 \(ntfs\) needs"
    ):
        plan_apply(windows.repo, "img", dst)
    with open(dst, "rb") as f:
        assert f.read(8) == b"OLD DATA", "nothing was written"


def test_keep_refuses_a_smaller_disk(windows: Source, loopdev) -> None:
    dst = loopdev(int(2.5 * GiB))
    with pytest.raises(UsageError, match="short by"):
        plan_apply(windows.repo, "img", dst, layout="keep")
    assert os.path.exists(dst)


@pytest.mark.parametrize(
    ("label", "parts", "mib"),
    [
        ("gpt", D.UBUNTU, 1200),
        ("gpt", D.FEDORA, 2000),  # btrfs needs its chunks' room to relocate them
        ("dos", D.MBR_LOGICAL, 1200),
    ],
    ids=["ubuntu", "fedora", "mbr-logical"],
)
def test_linux_layouts_onto_half_the_size(
    loopdev, tmp_path: Path, label: str, parts: tuple[D.Part, ...], mib: int
) -> None:
    src_dev = loopdev(mib * MiB)
    D.build(src_dev, label, parts)
    src = Source(src_dev, tmp_path / "repo", parts)
    dst = loopdev(mib // 2 * MiB)
    plan = plan_apply(src.repo, "img", dst)
    assert plan.layout is not None
    shrunk = {c.number for c in plan.layout.changes if c.action == "shrink"}
    assert shrunk, "\n".join(plan.summary())
    result = apply_image(plan)
    assert result.verified and {s.number for s in result.shrinks} == shrunk
    _check_restored(src, dst)


def test_clone_onto_smaller_disk(windows: Source, loopdev) -> None:
    dst = loopdev(int(2.5 * GiB))
    before = sample_read(windows.dev)
    plan = plan_clone(windows.dev, dst)
    assert plan.layout.change(3).action == "shrink"
    line = shlex.join(plan.command())
    assert line.startswith("bootmedia clone") and "--layout fit" in line
    result = clone_disk(plan)
    assert result.verified and [s.number for s in result.shrinks] == [3]
    _check_restored(windows, dst)
    assert _hidden_sectors(f"{dst}p4") == plan.layout.change(4).new_start // 512
    assert sample_read(windows.dev) == before, "the source is never written"
    with open(dst, "rb") as f, open(windows.dev, "rb") as s:
        assert f.read(440) == s.read(440)


def test_clone_onto_larger_disk(loopdev, tmp_path: Path) -> None:
    src = loopdev(700 * MiB)
    D.build(src, "gpt", D.UBUNTU)
    sums = {p.number: D.sums(f"{src}p{p.number}", p.fstype) for p in D.UBUNTU}
    ids = D.ids(src)
    dst = loopdev(1400 * MiB)
    with pytest.raises(UsageError, match="same disk"):
        plan_clone(src, src)
    plan = plan_clone(src, dst)
    assert plan.layout.change(2).action == "grow"
    clone_disk(plan)
    got = read_table(dst)
    assert got is not None and got.partitions[-1].size * 512 > 1300 * MiB
    for p in D.UBUNTU:
        assert D.check(f"{dst}p{p.number}", p.fstype) == ""
        assert D.sums(f"{dst}p{p.number}", p.fstype) == sums[p.number]
    assert D.ids(dst) == ids


def sample_read(dev: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while block := f.read(16 * MiB):
            h.update(block)
    return h.hexdigest()


def _acl(uid: int) -> bytes:
    """A POSIX ACL xattr (system.posix_acl_access): user::rw-, user:uid:r--, group::r--,
    mask::r--, other::---."""
    entries = [
        (1, 6, 0xFFFFFFFF),
        (2, 4, uid),
        (4, 4, 0xFFFFFFFF),
        (16, 4, 0xFFFFFFFF),
        (32, 0, 0xFFFFFFFF),
    ]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def _special_files(node: str) -> dict[str, object]:
    """What a file copy loses easily, put on the XFS: hard links, a sparse file, xattrs, an
    ACL, a symlink, a device node, a setuid file owned by another user. Returns what to expect."""
    with tempfile.TemporaryDirectory(prefix="bootmedia-mnt-") as mnt:
        D.sh("mount", node, mnt)
        try:
            root = Path(mnt) / "special"
            root.mkdir()
            (root / "a").write_bytes(os.urandom(300_000))
            os.link(root / "a", root / "b")
            with open(root / "sparse", "wb") as f:
                f.truncate(64 * MiB)
                f.seek(40 * MiB)
                f.write(b"island")
            os.setxattr(root / "a", "user.note", b"kept")
            os.setxattr(root / "a", "trusted.secret", b"root only")
            os.setxattr(root / "a", "system.posix_acl_access", _acl(1234))
            os.symlink("a", root / "link")
            os.mknod(root / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
            (root / "suid").write_bytes(b"#!/bin/sh\n")
            os.chown(root / "suid", 1234, 5678)
            os.chmod(root / "suid", 0o4755)
        finally:
            D.umount(mnt)
    return {"acl": _acl(1234)}


def _check_special(node: str, want: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory(prefix="bootmedia-mnt-") as mnt:
        D.sh("mount", "-o", "ro", node, mnt)
        try:
            root = Path(mnt) / "special"
            assert os.stat(root / "a").st_ino == os.stat(root / "b").st_ino, "hard link kept"
            sp = os.stat(root / "sparse")
            assert sp.st_size == 64 * MiB and sp.st_blocks * 512 <= MiB, "the hole is kept"
            with open(root / "sparse", "rb") as f:
                f.seek(40 * MiB)
                assert f.read(6) == b"island"
            assert os.getxattr(root / "a", "user.note") == b"kept"
            assert os.getxattr(root / "a", "trusted.secret") == b"root only"
            assert os.getxattr(root / "a", "system.posix_acl_access") == want["acl"]
            assert os.readlink(root / "link") == "a"
            assert os.stat(root / "null").st_rdev == os.makedev(1, 3)
            st = os.stat(root / "suid")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
        finally:
            D.umount(mnt)


def test_xfs_onto_smaller_disk_is_restored_by_files(loopdev, tmp_path: Path) -> None:
    parts = (D.Part(1, "vfat", D.ESP, 64, 2), D.Part(2, "xfs", D.LINUX, 0, 100))
    src = loopdev(1000 * MiB)
    D.build(src, "gpt", parts)
    want = _special_files(f"{src}p2")
    source = Source(src, tmp_path / "repo", parts)
    dst = loopdev(500 * MiB)
    plan = plan_apply(source.repo, "img", dst)
    assert plan.layout is not None and plan.layout.change(2).action == "shrink"
    assert "xfs shrinks" in "\n".join(plan.summary())
    result = apply_image(plan)
    assert result.verified and [s.fstype for s in result.shrinks] == ["xfs"]
    _check_restored(source, dst)  # xfs_repair -n clean, every file's sha256, UUIDs and label
    _check_special(f"{dst}p2", want)
    assert D.sh("blkid", "-p", "-s", "LABEL", "-o", "value", f"{dst}p2").strip() == "p2"
    # Clone does the same from the source disk.
    dst2 = loopdev(500 * MiB)
    clone_disk(plan_clone(src, dst2))
    _check_restored(source, dst2)
    _check_special(f"{dst2}p2", want)


def test_xfs_whose_files_do_not_fit_is_refused_before_writing(loopdev, tmp_path: Path) -> None:
    parts = (D.Part(1, "vfat", D.ESP, 64, 2), D.Part(2, "xfs", D.LINUX, 0, 300))
    src = loopdev(700 * MiB)
    D.build(src, "gpt", parts)
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    dst = loopdev(500 * MiB)
    before = D.sh("sha256sum", dst)
    with pytest.raises(
        UsageError, match=r"--size 2=314\.6 MB is too small: its xfs needs at least"
    ):
        plan_apply(tmp_path / "repo", "img", dst, sizes={2: 300 * MiB})
    # Past the planner's estimate, the measured need decides, before the first write: a new
    # XFS of 330 MiB has room for less than the 300 MiB of files the image holds.
    with Repository.open(tmp_path / "repo") as r:
        area = r.image("img").area("p2")
    assert area is not None
    with (
        contextlib.ExitStack() as stack,
        pytest.raises(BootmediaError, match=r"do not fit a new xfs of 346\.0 MB"),
    ):
        prepare_refile(
            stack, ImageArea(tmp_path / "repo", "img", "p2"), area, 330 * MiB, tmp_path / "w", 512
        )
    assert D.sh("sha256sum", dst) == before


def test_512_image_onto_4kn_disk_rebuilds_the_esp(loopdev, tmp_path: Path) -> None:
    src = loopdev(700 * MiB)
    D.build(src, "gpt", D.UBUNTU)
    source = Source(src, tmp_path / "repo", D.UBUNTU)
    dst = loopdev(700 * MiB, 4096)
    plan = plan_apply(source.repo, "img", dst)
    assert plan.rebuild == (1,) and plan.sector_size == 4096
    assert any("made anew with 4096-byte sectors" in n for n in plan.notes)
    apply_image(plan)
    got = read_table(dst)
    assert got is not None and got.sector_size == 4096
    with open(f"{dst}p1", "rb") as f:
        assert int.from_bytes(f.read(512)[11:13], "little") == 4096, "the ESP has 4 KiB sectors"
    # The ESP's files (read with mtools), its volume id and label, and ext4's files are the same.
    _check_restored(source, dst)


def _ext4_facts(node: str) -> tuple[str, str]:
    head = D.sh("dumpe2fs", "-h", node)
    get = {k.strip(): v.strip() for k, _, v in (x.partition(":") for x in head.splitlines())}
    return get["Block size"], get["Filesystem features"]


def test_ext4_with_1k_blocks_onto_4kn_is_restored_by_files(loopdev, tmp_path: Path) -> None:
    parts = (D.Part(1, "vfat", D.ESP, 40, 1), D.Part(2, "ext4", D.LINUX, 0, 0))
    src = loopdev(300 * MiB)
    D.build(src, "gpt", parts)
    D.sh("mkfs.ext4", "-q", "-F", "-b", "1024", "-L", "p2", f"{src}p2")
    with tempfile.TemporaryDirectory(prefix="bootmedia-fill-") as tmp:
        D.fill_tree(Path(tmp), 40 * MiB, 3)
        D.put_files(f"{src}p2", "ext4", Path(tmp))
    want = _special_files(f"{src}p2")
    _, features = _ext4_facts(f"{src}p2")
    source = Source(src, tmp_path / "repo", parts)
    dst = loopdev(300 * MiB, 4096)
    plan = plan_apply(source.repo, "img", dst)
    assert plan.refile == (2,) and any("made anew with 4096-byte blocks" in n for n in plan.notes)
    result = apply_image(plan)
    assert result.verified
    _check_restored(source, dst)  # e2fsck -fn clean, every file's sha256, UUIDs
    _check_special(f"{dst}p2", want)
    assert _ext4_facts(f"{dst}p2") == ("4096", features), "4 KiB blocks, the same features"
    assert D.sh("blkid", "-p", "-s", "LABEL", "-o", "value", f"{dst}p2").strip() == "p2"
