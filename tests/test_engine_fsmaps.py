"""bootmedia reads the FAT, NTFS and ext allocation maps itself (50x faster than partclone -D);
they must agree with partclone's, block for block, including holes left by deleted files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.fs import PARTCLONE, _ext_used, _fat_used, _ntfs_used
from tests.conftest import root_only

MiB = 1 << 20
pytestmark = root_only


def _partclone_map(node: str, fstype: str, tmp: Path) -> list[tuple[int, int]]:
    dom = tmp / "map.dom"
    lab.run([PARTCLONE[fstype], "-D", "-q", "-s", node, "-o", str(dom), "-L", "/dev/null"])
    ranges: list[tuple[int, int]] = []
    for line in dom.read_text().splitlines():
        p = line.split()
        if len(p) == 3 and p[2] == "+" and p[0].startswith("0x"):
            s, n = int(p[0], 16), int(p[1], 16)
            if ranges and sum(ranges[-1]) == s:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + n)
            else:
                ranges.append((s, n))
    return ranges


@pytest.mark.parametrize("fstype", ["vfat", "ntfs", "ext4"])
def test_own_map_matches_partclone(loopdev, tmp_path: Path, fstype: str) -> None:
    dev = loopdev(160 * MiB)
    lab.populate_sample_disk(dev, layout=(lab.SamplePart(1, fstype, 0),), fill=0.6)
    node = f"{dev}p1"
    # punch holes: delete every third file
    if fstype == "vfat":
        img = tmp_path / "fat.img"
        lab.run(["dd", f"if={node}", f"of={img}", "bs=1M", "status=none"])
        names = lab.run_text(["mdir", "-/", "-b", "-i", str(img), "::/"]).split()
        files = [n for n in names if n.endswith((".txt", ".bin"))]
        lab.run(["mdel", "-i", str(img), *files[::3]])
        lab.run(["dd", f"if={img}", f"of={node}", "bs=1M", "conv=fsync", "status=none"])
        ours = _fat_used(node)
    else:
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        lab.run(["mount", *(["-t", "ntfs-3g"] if fstype == "ntfs" else []), node, str(mnt)])
        for path in sorted(p for p in mnt.rglob("*") if p.is_file())[::3]:
            path.unlink()
        lab.run(["umount", str(mnt)])
        ours = _ntfs_used(node) if fstype == "ntfs" else _ext_used(node)
    theirs = _partclone_map(node, fstype, tmp_path)
    assert len(theirs) > 3, "deleting files should leave holes"
    if fstype == "ntfs":  # ours also keeps the backup boot sector's cluster at the very end
        assert ours[:-1] == theirs[:-1] and ours[-1][0] == theirs[-1][0]
    else:
        assert ours == theirs
