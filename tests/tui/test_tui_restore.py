"""The restore wizard end to end on a real loop-device lab: the files arrive, a wrong
confirmation writes nothing, a refused disk cannot be chosen, a cancel marks the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tui_helpers import async_test, needs_loop, screen_text, type_text, wait_for, wait_for_screen

from bootmedia import lab
from bootmedia.disks import find_disk

pytestmark = needs_loop

FILESYSTEMS = (("p1", "vfat"), ("p2", "ext4"), ("p3", "ntfs"))


def lab_disk(the_lab: Any, backing: str) -> str:
    return the_lab.loops[backing]


def row_index(table: Any, path: str) -> int:
    return list(table.rows_by_key).index(path)


async def pick_target(pilot: Any, path: str) -> None:
    """From the image picker (golden highlighted) to the target picker, cursor on `path`."""
    await wait_for(
        pilot,
        lambda: (
            pilot.app.screen.query("ImageTable")
            and pilot.app.screen.query_one("ImageTable").row_count
        ),
    )
    await pilot.press("enter")
    screen = await wait_for_screen(pilot, "DiskPickScreen")
    await wait_for(pilot, lambda: screen.query_one("DiskTable").row_count > 0, what="disk rows")
    table = screen.query_one("DiskTable")
    table.move_cursor(row=row_index(table, path))
    await pilot.pause()


async def to_summary(pilot: Any, target: str, *, keys_on_options: tuple[str, ...] = ()) -> Any:
    await pilot.press("r")
    await wait_for_screen(pilot, "ImagePickScreen")
    await pick_target(pilot, target)
    await pilot.press("enter")
    await wait_for_screen(pilot, "RestoreOptionsScreen")
    if keys_on_options:
        await pilot.press(*keys_on_options)
    await pilot.press("enter")
    summary = await wait_for_screen(pilot, "SummaryScreen")
    await wait_for(
        pilot, lambda: summary.job is not None and summary.query("ConfirmInput"), what="plan"
    )
    return summary


def checksums(dev: str) -> dict[str, dict[str, str]]:
    return {part: lab.file_checksums(f"{dev}{part}", fstype) for part, fstype in FILESYSTEMS}


@async_test
async def test_restore_writes_the_image_and_checks_it(demo_lab: Any, make_app: Any) -> None:
    target = lab_disk(demo_lab, "newpc-1.img")
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        summary = await to_summary(pilot, target)
        text = screen_text(app)
        assert f"EVERYTHING on {Path(target).name} will be overwritten" in text
        assert "bootmedia apply" in text  # the equivalent CLI command is on screen
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=180)
        assert result.outcome.ok, result.outcome
        assert "read back and checked" in screen_text(app)
        assert summary.job.kind == "restore"
        await pilot.press("enter")
        await wait_for_screen(pilot, "HomeScreen")
    expected = checksums(demo_lab.loops["reference.img"])
    assert all(expected[p] for p in expected)  # the sample has files in every filesystem
    assert checksums(target) == expected


@async_test
async def test_wrong_confirmation_writes_nothing(demo_lab: Any, make_app: Any) -> None:
    target = lab_disk(demo_lab, "newpc-2.img")
    before = Path(demo_lab.disk_dir / "newpc-2.img").read_bytes()[: 1 << 20]
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        summary = await to_summary(pilot, target)
        await type_text(pilot, "nope")
        await pilot.press("enter")
        await pilot.pause(0.5)
        assert app.screen is summary  # still waiting for the right text
        assert "does not match. Nothing was written." in screen_text(app)
        await pilot.press("escape")  # back to the options
        await wait_for_screen(pilot, "RestoreOptionsScreen")
    assert Path(demo_lab.disk_dir / "newpc-2.img").read_bytes()[: 1 << 20] == before
    assert find_disk(target).partitions == ()


@async_test
async def test_refused_disk_cannot_be_chosen(demo_lab: Any, make_app: Any) -> None:
    stick = lab_disk(demo_lab, "stick.img")
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("r")
        await wait_for_screen(pilot, "ImagePickScreen")
        await pick_target(pilot, stick)
        row = app.screen.query_one("DiskTable").rows_by_key[stick]
        assert (row.refusal and "mounted" in row.refusal) or "repository" in row.refusal
        assert "REFUSED" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "DiskPickScreen"  # did not move on
        assert "cannot be chosen" in screen_text(app)


@async_test
async def test_cancel_marks_the_target_incomplete(
    demo_lab: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.screens.progress import ProgressScreen

    report = ProgressScreen.report

    def cancel_once_writing(self: ProgressScreen, progress: Any) -> None:
        # Runs on the job's thread as the step starts: the cancel lands mid-restore, every time.
        if progress.step.startswith("Writing"):
            self.cancel.set()
        report(self, progress)

    monkeypatch.setattr(ProgressScreen, "report", cancel_once_writing)
    target = lab_disk(demo_lab, "newpc-1.img")
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await to_summary(pilot, target)
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=120)
        outcome = result.outcome
        text = screen_text(app)
    assert not outcome.ok and outcome.cancelled
    assert "CANCELLED" in text and "marked incomplete" in text
    assert find_disk(target).incomplete_restore
