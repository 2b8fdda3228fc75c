"""Capture, verify and wipe wizards end to end on a real loop-device lab and repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import (
    async_test,
    needs_loop,
    pick_choice,
    screen_text,
    type_text,
    wait_for,
    wait_for_plan,
    wait_for_screen,
)

from bootmedia.repo.store import Repository

pytestmark = needs_loop


def image_names(repo: Path) -> list[str]:
    with Repository.open(repo) as r:
        return [m.name for m in r.images()]


async def choose_disk(pilot: Any, path: str) -> None:
    screen = await wait_for_screen(pilot, "DiskPickScreen")
    await wait_for(pilot, lambda: screen.query_one("DiskTable").row_count > 0, what="disk rows")
    table = screen.query_one("DiskTable")
    table.move_cursor(row=list(table.rows_by_key).index(path))
    await pilot.press("enter")


async def capture_to_summary(pilot: Any, the_lab: Any, name: str) -> Any:
    await pilot.press("c")
    await choose_disk(pilot, the_lab.loops["reference.img"])
    repos = await wait_for_screen(pilot, "RepoPickScreen")
    await wait_for(pilot, lambda: repos.query_one("OptionList").option_count > 0, what="repos")
    await pilot.press("enter")
    form = await wait_for_screen(pilot, "CaptureFormScreen")
    form.query_one("#name").value = ""
    await type_text(pilot, name)
    await pilot.press("tab")
    await type_text(pilot, "made by a test")
    await pilot.press("tab", "enter")
    summary = await wait_for_plan(pilot, "capture plan")
    return summary


@async_test
async def test_capture_adds_an_image(demo_lab: Any, make_app: Any) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await capture_to_summary(pilot, demo_lab, "pilot-capture")
        plan = screen_text(app)
        assert "bootmedia capture" in plan
        assert "--level" not in plan  # the form starts at the engine's default level
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=180)
        assert result.outcome.ok, result.outcome
        text = screen_text(app)
        assert "Saved by deduplication" in text and "Throughput" in text
        # Issue 13 item 10: the result's numbers are the summary's ("Total to read: 50.2 MB"
        # then "Data read: 37.0 MB" before): how much of what was read is data.
        assert re.search(r"Read: [\d.]+ MB, of which data [\d.]+ MB \(blocks of zeros", text)
    assert "pilot-capture" in image_names(demo_lab.repo_path)
    with Repository.open(demo_lab.repo_path) as r:
        m = r.image("pilot-capture")
        golden = r.image("golden")
    assert m.description == "made by a test"
    assert m.digest == golden.digest  # same disk, same content: the same image


@async_test
async def test_the_capture_form_suggests_a_name_from_the_disk_not_its_kernel_name(
    demo_lab: Any, make_app: Any
) -> None:
    """The lab's reference disk is a loop device over reference.img: the suggestion is that
    file's name and the day (it was "loopN-..."), and the next free one when that is taken."""
    from datetime import date

    from bootmedia.capture import capture_image, plan_capture

    day = f"{date.today():%Y%m%d}"
    disk = demo_lab.loops["reference.img"]
    capture_image(plan_capture(disk, demo_lab.repo_path, f"reference-{day}"))
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("c")
        await choose_disk(pilot, disk)
        repos = await wait_for_screen(pilot, "RepoPickScreen")
        await wait_for(pilot, lambda: repos.query_one("OptionList").option_count > 0, what="repos")
        await pilot.press("enter")
        form = await wait_for_screen(pilot, "CaptureFormScreen")
        field = form.query_one("#name")
        await wait_for(pilot, lambda: field.value != f"reference-{day}", what="the taken name")
        assert field.value == f"reference-{day}-2"
        assert Path(disk).name not in field.value


@async_test
async def test_cancelled_capture_lists_no_image(
    demo_lab: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.screens.progress import ProgressScreen

    report = ProgressScreen.report

    def cancel_when_reading(self: ProgressScreen, progress: Any) -> None:
        if progress.step.startswith("Reading"):
            self.cancel.set()
        report(self, progress)

    monkeypatch.setattr(ProgressScreen, "report", cancel_when_reading)
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await capture_to_summary(pilot, demo_lab, "never-listed")
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=120)
        assert result.outcome.cancelled
        assert "No image never-listed will be listed" in screen_text(app)
    assert image_names(demo_lab.repo_path) == ["golden"]


async def verify_golden(pilot: Any) -> Any:
    await pilot.press("v")
    images = await wait_for_screen(pilot, "ImagePickScreen")
    await wait_for(pilot, lambda: images.query_one("ImageTable").row_count > 0, what="images")
    await pilot.press("enter")
    await wait_for_plan(pilot, "verify plan")
    await pilot.press("enter")
    return await wait_for_screen(pilot, "ResultScreen", timeout=120)


@async_test
async def test_verify_says_intact(demo_lab: Any, make_app: Any) -> None:
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        result = await verify_golden(pilot)
        assert result.outcome.ok
        text = screen_text(app)
        assert "Intact: image golden" in text
        # A short job shows its speed; why "read and checked" is less than the image's size.
        assert re.search(r"Throughput: [\d.]+ [kMG]B/s", text), text
        assert "a chunk it repeats is checked once" in text


@async_test
async def test_verify_says_exactly_what_is_damaged(demo_lab: Any, make_app: Any) -> None:
    pack = max((demo_lab.repo_path / "packs").glob("*"), key=lambda p: p.stat().st_size)
    with open(pack, "r+b") as f:  # flip bytes in the middle of the biggest pack
        f.seek(pack.stat().st_size // 2)
        chunk = f.read(64)
        f.seek(pack.stat().st_size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        result = await verify_golden(pilot)
        assert not result.outcome.ok
        text = screen_text(app)
        assert "DAMAGED: image golden" in text
        assert "image golden: p" in text  # which area, and where in it


@async_test
async def test_wipe_erases_and_saves_a_report(demo_lab: Any, make_app: Any) -> None:
    target = demo_lab.loops["reference.img"]
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("w")
        await choose_disk(pilot, target)
        menu = await pick_choice(pilot, "zero", what="methods")
        assert menu.get_option("nvme-format").disabled  # a loop device is no NVMe drive
        await pilot.press("enter")
        await wait_for_plan(pilot, "wipe plan")
        plan = screen_text(app)
        assert "bootmedia wipe" in plan
        # What is on the disk now, as the restore plan says it (issue 13 item 10).
        assert "On the disk now: vfat/SAMPLE-ESP" in plan
        assert re.search(r"- loop\d+p2 [\d.]+ MB ext4 'sample-root'", plan), plan
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=180)
        assert result.outcome.ok, result.outcome
        text = screen_text(app)
        assert "erased and verified" in text
        report = Path(result.outcome.report_path)
        # Without scrolling: right under the headline (a long path folds onto a second line).
        flat = "".join(ln.strip(" │") for ln in text.splitlines()).replace(" ", "")
        assert f"Reportsavedto{report}" in flat, text
    assert report.is_file() and "PASSED" in report.read_text()
    with open(target, "rb") as f:
        assert f.read(4 << 20) == bytes(4 << 20)


@async_test
async def test_partition_lays_out_a_blank_disk(demo_lab: Any, make_app: Any) -> None:
    from bootmedia.disks import find_disk

    target = demo_lab.loops["newpc-2.img"]
    app = make_app(demo_lab)
    async with app.run_test(size=(80, 25)) as pilot:
        await pilot.press("p")
        await choose_disk(pilot, target)
        await pick_choice(pilot, "uefi", what="layouts")
        await pilot.press("enter")
        await wait_for_plan(pilot, "partition plan")
        assert "bootmedia partition" in screen_text(app)
        await type_text(pilot, "wrong")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert find_disk(target).partitions == ()  # a wrong confirmation wrote nothing
        await type_text(pilot, pilot.app.screen.job.confirm.confirm_code)
        await pilot.press("enter")
        result = await wait_for_screen(pilot, "ResultScreen", timeout=120)
        assert result.outcome.ok, result.outcome
    disk = find_disk(target)
    assert disk.partition_table == "gpt"
    assert [p.fstype for p in disk.partitions] == ["vfat", "ext4"]
