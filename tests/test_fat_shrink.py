"""FAT onto a smaller partition (issue 10): rebuilt by file (mkfs.vfat + mtools, same volume id
and label), its files read back and compared before the first write; on real loop devices."""

from __future__ import annotations

import pytest

from bootmedia.apply import apply_image, plan_apply
from bootmedia.clone import clone_disk, plan_clone
from bootmedia.errors import UsageError
from tests import disklayouts as D
from tests.test_restore_any_disk import Source, _check_restored

MiB = 1 << 20
pytestmark = pytest.mark.root

PARTS = (D.Part(1, "vfat", D.ESP, 100, 4), D.Part(2, "vfat", D.BASIC, 0, 60))


def test_fat_partitions_onto_a_smaller_disk(loopdev, tmp_path) -> None:
    src_dev = loopdev(600 * MiB)
    D.build(src_dev, "gpt", PARTS)
    src = Source(src_dev, tmp_path / "repo", PARTS)

    # The ESP cut to 40 MiB by --size, the data FAT32 shrunk by the fit layout.
    dst = loopdev(300 * MiB)
    plan = plan_apply(src.repo, "img", dst, layout="fit", sizes={1: 40 * MiB})
    assert plan.layout is not None
    assert {c.number for c in plan.layout.changes if c.action == "shrink"} == {1, 2}
    result = apply_image(plan)
    assert result.verified and {s.number for s in result.shrinks} == {1, 2}
    _check_restored(src, dst)  # fsck.vfat clean, every file's sha256, volume ids and labels

    # The same from the disk itself.
    dst2 = loopdev(300 * MiB)
    cloned = clone_disk(plan_clone(src_dev, dst2, layout="fit", sizes={1: 40 * MiB}))
    assert cloned.verified and {s.number for s in cloned.shrinks} == {1, 2}
    _check_restored(src, dst2)


def test_fat_smaller_than_its_files_is_refused_before_writing(loopdev, tmp_path) -> None:
    src_dev = loopdev(600 * MiB)
    D.build(src_dev, "gpt", PARTS)
    src = Source(src_dev, tmp_path / "repo", PARTS)
    dst = loopdev(300 * MiB)
    with open(dst, "r+b") as f:
        f.write(b"OLD DATA" * 64)
    with pytest.raises(UsageError, match=r"--size 2=31.5 MB is too small: its vfat needs at least"):
        plan_apply(src.repo, "img", dst, layout="fit", sizes={2: 30 * MiB})
    with open(dst, "rb") as f:
        assert f.read(8) == b"OLD DATA", "nothing was written"
