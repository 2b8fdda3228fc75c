"""What a user who is not root does with `bootmedia tui --demo`, as one script.

tests/test_demo_nonroot.py runs it as an unprivileged user (runuser) and checks the JSON it
prints: the lab is built from plain image files, the app starts on it and lists them, and
restore, verify, capture, wipe and partition all work on the files.

    python -m tests.demo_as_user LAB_DIR
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any


def checksums(image: Path) -> dict[str, dict[str, str]]:
    from bootmedia import lab
    from bootmedia.disks.files import file_disk

    return {
        str(p.number): lab.file_checksums_at(image, p.start, p.size, p.fstype)
        for p in file_disk(image).partitions
        if p.fstype in ("vfat", "ext4", "ntfs")
    }


async def app_disk_names(the_lab: Any, log: Path) -> list[str]:
    """Start the real app on the lab, open the restore wizard's target picker, read the rows."""
    from app.app import BootmediaApp
    from app.session import Session
    from app.widgets.tables import DiskTable, ImageTable

    app = BootmediaApp(Session(log_path=log, lab=the_lab))
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        for _ in range(400):
            table = app.screen.query(ImageTable)
            if table and table.first().row_count:
                break
            await pilot.pause(0.05)
        await pilot.press("enter")
        for _ in range(400):
            disks = app.screen.query(DiskTable)
            if disks and disks.first().row_count:
                return [row.disk.name for row in disks.first().rows_by_key.values()]
            await pilot.pause(0.05)
    return []


def main(root: Path) -> dict[str, Any]:
    from bootmedia.apply import apply_image, plan_apply
    from bootmedia.capture import capture_image, plan_capture
    from bootmedia.demo import create_lab
    from bootmedia.disks.files import file_disk
    from bootmedia.partition import apply_partition, plan_partition
    from bootmedia.progress import Reporter
    from bootmedia.repo.store import Repository
    from bootmedia.verify import verify_repo
    from bootmedia.wipe import plan_wipe, wipe_disk

    out: dict[str, Any] = {"euid": os.geteuid()}
    the_lab = create_lab(root, say=None)  # no files=...: it decides by itself, as the CLI does
    try:
        out["use_loops"] = the_lab.use_loops
        disks = the_lab.disk_dir
        out["app_disks"] = asyncio.run(app_disk_names(the_lab, root / "bootmedia.log"))
        repo = the_lab.repo_path
        apply_image(plan_apply(repo, "golden", str(disks / "newpc-1.img")))
        want = checksums(disks / "reference.img")
        out["files"] = sum(len(v) for v in want.values())
        out["restored_same_files"] = checksums(disks / "newpc-1.img") == want
        out["verify_ok"] = verify_repo(repo, "golden").ok
        capture_image(plan_capture(str(disks / "newpc-1.img"), repo, "copy"))
        with Repository.open(repo) as r:
            # The copy sits on a bigger disk (its GPT backup moved): compare the partitions.
            copy, golden = (
                {a.name: (a.mode, a.map_hash) for a in r.image(n).partitions}
                for n in ("copy", "golden")
            )
        out["capture_same_partitions"] = copy == golden
        report = wipe_disk(plan_wipe(file_disk(disks / "newpc-1.img"), "zero"), Reporter())
        out["wipe"] = report.status
        apply_partition(plan_partition(file_disk(disks / "newpc-2.img"), "windows"), Reporter())
        out["partitioned"] = [p.fstype for p in file_disk(disks / "newpc-2.img").partitions]
    finally:
        the_lab.close()
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
