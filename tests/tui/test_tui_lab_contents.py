"""Issue 13 items 1 and 3 on the real lab: the Contents column never says "empty" about data,
and the lab follows its own files, never loop numbers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import (
    async_test,
    needs_loop,
    screen_text,
    wait_for,
    wait_for_plan,
    wait_for_screen,
)

from bootmedia import lab
from bootmedia.disks import INCOMPLETE_MARKER

pytestmark = needs_loop
MiB = 1 << 20


@async_test
async def test_data_without_a_table_and_an_incomplete_restore_are_not_empty(
    demo_lab: Any, make_app: Any
) -> None:
    with open(demo_lab.loops["newpc-2.img"], "r+b") as f:  # a raw copy: no table, no signature
        f.seek(300 * MiB)
        f.write(os.urandom(48 * MiB))
    with open(demo_lab.loops["newpc-1.img"], "r+b") as f:  # what a cancelled restore leaves
        f.write(INCOMPLETE_MARKER)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await wait_for_screen(pilot, "HomeScreen")
        await wait_for(pilot, lambda: "INCOMPLETE RESTORE" in screen_text(app), what="home")
        home = screen_text(app)
        assert "no partition table, data present" in home, home
        assert "empty" not in home
        await pilot.press("r")
        await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: "golden" in screen_text(app), what="image list")
        await pilot.press("enter")
        picker = await wait_for_screen(pilot, "DiskPickScreen")
        await wait_for(pilot, lambda: picker.query_one("DiskTable").row_count == 4, what="disks")
        text = screen_text(app)
        assert "INCOMPLETE RESTORE" in text
        assert "no partition table, data present" in text, text
        assert "empty" not in text


def _rebind(dev: str, other: Path) -> bool:
    """Detach dev and bind its number to another file, as a shared machine's `losetup -f`
    does. False when someone else took the number first."""
    subprocess.run(["losetup", "--detach", dev], check=True)
    return subprocess.run(["losetup", dev, str(other)], check=False).returncode == 0


@async_test
async def test_the_lab_follows_its_files_not_loop_numbers(
    demo_lab: Any, make_app: Any, tmp_path: Path
) -> None:
    dev = demo_lab.loops["newpc-2.img"]
    foreign = lab.make_file(tmp_path / "someone-elses.img", 64 * MiB)
    with open(foreign, "r+b") as f:
        f.write(b"NOT THE LAB'S" * 1000)
    if not _rebind(dev, foreign):
        pytest.skip(f"{dev} was taken by another process before the test could rebind it")
    try:
        assert demo_lab.owned("newpc-2.img") is None
        assert all(d.path != dev for d in demo_lab.disks())  # unplugged, not someone's file
        app = make_app(demo_lab)
        async with app.run_test(size=(80, 25)) as pilot:
            await pilot.press("d")
            screen = await wait_for_screen(pilot, "DisksScreen")
            table = screen.query_one("DiskTable")
            await wait_for(pilot, lambda: table.row_count == 3, what="the lab's 3 other disks")
            assert dev not in table.rows_by_key and "newpc-2" not in screen_text(app)
        # A write that was planned before the swap is refused when it starts.
        assert "no longer serves the lab's newpc-2.img" in (demo_lab.write_refusal(dev) or "")
        demo_lab.close()  # teardown leaves someone else's device alone
        backing = Path(f"/sys/block/{Path(dev).name}/loop/backing_file").read_text().strip()
        assert backing == str(foreign)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def test_a_file_recreated_at_the_same_path_is_unplugged(demo_lab: Any) -> None:
    dev = demo_lab.loops["newpc-1.img"]
    path = demo_lab.disk_dir / "newpc-1.img"
    assert demo_lab.owned("newpc-1.img") == dev
    path.rename(path.with_suffix(".old"))
    lab.make_file(path, 1 << 30)  # same name, another inode; the loop still serves the old one
    assert demo_lab.owned("newpc-1.img") is None
    assert all(d.path != dev for d in demo_lab.disks())
    demo_lab.close()  # the old file is still the lab's own (renamed): its device is detached
    backing = Path(f"/sys/block/{Path(dev).name}/loop/backing_file")
    assert not backing.exists() or "newpc-1.old" not in backing.read_text()


def test_teardown_follows_the_files_when_the_lab_is_moved(demo_lab: Any, tmp_path: Path) -> None:
    """pytest renames a test's tmp_path before removing it, and a technician may mv the lab:
    the devices serve the same files (same inodes), so teardown still unmounts and detaches
    every one of them (it used to leave them all attached and the stick mounted)."""
    devs = dict(demo_lab.attached)
    moved = tmp_path / "moved"
    demo_lab.root.rename(moved)
    assert all(demo_lab.owned(name) is None for name in devs)  # not listed at the old path
    demo_lab.close()
    mounts = Path("/proc/self/mounts").read_text()
    assert str(moved / "stick") not in mounts
    for entry in devs.values():
        backing = Path(f"/sys/block/{Path(entry.dev).name}/loop/backing_file")
        assert not backing.exists() or str(moved) not in backing.read_text(), entry.dev


def test_lab_disks_have_serials_and_confirm_by_them(demo_lab: Any, tmp_path: Path) -> None:
    from app import engine
    from app.session import Session

    rows = {
        Path(r.disk.backing_file).name: r
        for r in engine.list_disks(Session(tmp_path / "log", lab=demo_lab))
    }
    serials = {r.serial for r in rows.values()}
    assert all(s.startswith("LB") and len(s) == 8 for s in serials) and len(serials) == 4
    newpc = rows["newpc-1.img"]
    assert newpc.confirm_code == newpc.serial[-4:]
    assert engine.confirm_matches(newpc, newpc.serial[-4:])
    assert not engine.confirm_matches(newpc, newpc.disk.name)  # the loop number never confirms
    # The engine sees the same serial (the CLI confirms a lab disk as the TUI does).
    assert newpc.disk.serial == newpc.serial


@async_test
async def test_the_shown_restore_command_runs_as_shown(demo_lab: Any, make_app: Any) -> None:
    """Issue 13 item 4: the summary's command line, pasted into a shell, does the job: its
    --confirm is the lab disk's serial (never the loop number), and the CLI accepts it."""
    import shlex
    import sys

    target = demo_lab.loops["newpc-2.img"]
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        picker = await wait_for_screen(pilot, "ImagePickScreen")
        await wait_for(pilot, lambda: picker.query_one("ImageTable").row_count == 1, what="golden")
        await pilot.press("enter")
        disks = await wait_for_screen(pilot, "DiskPickScreen")
        table = disks.query_one("DiskTable")
        await wait_for(pilot, lambda: target in table.rows_by_key, what="newpc-2")
        table.move_cursor(row=table.get_row_index(target))
        await pilot.press("enter")
        await wait_for_screen(pilot, "RestoreOptionsScreen")
        await pilot.press("enter")
        summary = await wait_for_plan(pilot, "the plan")
        command = summary.job.command
        serial = summary.job.confirm.serial
        assert serial.startswith("LB") and f"--confirm {serial[-4:]}" in command, command
        assert Path(target).name not in command.split("--confirm", 1)[1], command
        flat = " ".join(
            " ".join(line.strip(" │") for line in screen_text(app).splitlines()).split()
        )
        assert f"--confirm {serial[-4:]}" in flat  # on the screen, whole
    argv = shlex.split(command)
    assert argv[0] == "bootmedia"
    proc = subprocess.run(
        [sys.executable, "-m", "bootmedia", *argv[1:], "-q"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, (command, proc.stderr)
    lab.run(["partx", "-u", target], check=False)
    assert lab.file_checksums(f"{target}p2", "ext4") == lab.file_checksums(
        f"{demo_lab.loops['reference.img']}p2", "ext4"
    )
